"""`marginstream verify`: the Kafka side. Reads a deployment's commitments, the SPEC
input topics and the state changelog (read_committed, with the workers' own security
settings and prefix), and hands them to the pure audit (core/commitments/audit.py).

What it checks, per account partition:

1. every commitment record re-derives byte for byte: the runs re-applied in order by the
   core from an empty state give the record's input head, state root, sums and owed
   flag; its prev is the sha256 of the record before it, and epochs follow one another;
2. no two records of one partition and epoch differ (equivocation);
3. the changelog, read as a worker restores it (the last record of each key), gives the
   state root of the last commitment, at the same epoch.

With from_epoch N, each partition starts from its state at epoch N as the changelog
still holds it (the last record of each key at a version up to N), which must give
record N's root: compaction may have removed what that state needs, which is then a
divergence at epoch N, and a later epoch is to be chosen.

Everything read is held in memory: a deployment's whole input history. That bounds
what one verify can check (a verifier of a long-lived venue checks --from-epoch).
"""

from __future__ import annotations

import asyncio
import bisect
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from hashlib import sha256

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from marginstream.core.commitments.audit import Audit, Divergence, Reader, equivocations
from marginstream.core.commitments.chain import InputChain
from marginstream.core.delivery.parts import version_of
from marginstream.core.delivery.store import MemoryPartStore
from marginstream.core.delivery.unit import load
from marginstream.stream.repartition import read_range
from marginstream.stream.settings import StreamSettings
from marginstream.stream.topics import COMMITMENTS, MARKET_FANOUT, TopicNames, existing_counts

Record = tuple[int, bytes | None, bytes | None]  # (offset, key, value)
Records = list[Record]


@dataclass
class PartitionReport:
    partition: int
    audit: Audit | None = None
    changelog: str = "not checked"
    problems: list[Divergence] = field(default_factory=list)
    last_root: str | None = None  # the state root of the last commitment checked
    checkpoint: int | None = None  # the epoch checked from, its state from the changelog

    @property
    def ok(self) -> bool:
        return not self.problems

    def line(self) -> str:
        audit = self.audit
        if audit is None or audit.first_epoch is None:
            checked = "no commitments"
        else:
            checked = (
                f"epochs {audit.first_epoch}..{audit.last_epoch} ({audit.epochs} commitments, "
                f"{audit.records} records re-applied)"
            )
        if self.checkpoint is not None:
            checked += f", from the changelog's state at epoch {self.checkpoint}"
        if self.ok:
            return f"partition {self.partition}: ok, {checked}; changelog: {self.changelog}"
        return f"partition {self.partition}: DIVERGED, {'; '.join(map(str, self.problems))}"


class Kafka:
    """Every committed record of the topic partitions asked for, read once, in memory."""

    def __init__(self, settings: StreamSettings) -> None:
        self.settings = settings
        self.names = TopicNames(settings.topic_prefix, settings.app_id)
        self.read: dict[tuple[str, int], Records] = {}
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False,
            isolation_level="read_committed", max_partition_fetch_bytes=8 * 1024 * 1024,
            **settings.kafka_options(),
        )  # fmt: skip

    async def partition_count(self, topic: str) -> int:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.settings.bootstrap_servers, **self.settings.kafka_options()
        )
        await admin.start()
        try:
            return (await existing_counts(admin, [topic])).get(topic, 0)
        finally:
            await admin.close()

    async def records(self, topic: str, partition: int) -> Records:
        key = (topic, partition)
        if key not in self.read:
            tp = TopicPartition(topic, partition)
            self.read[key] = [
                (m.offset, m.key, m.value) async for m in read_range(self.consumer, tp, 0)
            ]
        return self.read[key]

    async def topic(self, topic: str) -> list[Records]:
        return [await self.records(topic, p) for p in range(await self.partition_count(topic))]

    def full(self, spec_topic: str) -> str:
        return self.names.fanout if spec_topic == MARKET_FANOUT else self.names.full(spec_topic)


async def verify(settings: StreamSettings, from_epoch: int | None = None) -> list[PartitionReport]:
    kafka = Kafka(settings)
    await kafka.consumer.start()
    try:
        return await _verify(kafka, from_epoch)
    finally:
        await kafka.consumer.stop()


async def _verify(kafka: Kafka, from_epoch: int | None) -> list[PartitionReport]:
    settings, names = kafka.settings, kafka.names
    published: dict[int, list[bytes]] = defaultdict(list)
    every = []
    for records in await kafka.topic(names.full(COMMITMENTS)):
        for _, _, value in records:
            every.append(value or b"")
            try:
                published[int(orjson.loads(value or b"")["partition"])].append(value or b"")
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                continue  # not a commitment: nothing to check it against
    changelog = await kafka.topic(names.changelog)
    partitions = sorted(set(range(settings.partitions)) | set(published))
    reports = {p: PartitionReport(p) for p in partitions}
    for found in equivocations(every):
        reports[found.partition].problems.append(found)
    for number in partitions:
        report = reports[number]
        audit = report.audit = Audit(number, settings.engine, settings.max_record_bytes)
        records = published[number]  # a second record of an epoch breaks the run of epochs
        start = from_epoch if from_epoch is not None else _first_epoch(records)
        if start is not None:
            records = _from_checkpoint(audit, records, changelog, number, start, report)
            report.checkpoint = start
        for value in records:
            needed = await _prefetch(kafka, value)
            if not audit.check(value, needed):
                assert audit.divergence is not None
                report.problems.append(audit.divergence)
                break
            report.last_root = orjson.loads(value)["state_root"]
        if report.ok and number < len(changelog):
            _check_changelog(report, changelog[number], published[number], settings)
    return [reports[p] for p in partitions]


async def _prefetch(kafka: Kafka, value: bytes) -> Reader:
    """The reader a record's runs need (their topic partitions read first)."""
    try:
        runs = orjson.loads(value).get("runs", [])
    except orjson.JSONDecodeError:
        runs = []
    for topic, partition, _, _ in runs:
        await kafka.records(kafka.full(str(topic)), int(partition))

    def read(topic: str, partition: int, first: int, last: int) -> Iterator[Record]:
        records = kafka.read.get((kafka.full(topic), partition), [])
        start = bisect.bisect_left(records, first, key=lambda r: r[0])
        for record in records[start:]:
            if record[0] > last:
                break
            yield record

    return read


def _first_epoch(published: list[bytes]) -> int | None:
    """The epoch of a partition's first commitment if it is not 1, else None: the
    partition's state before it was committed by no record (a deployment upgraded from a
    version without commitments, or moved by `repartition`), so that epoch is where the
    check starts, from the state the changelog holds at it."""
    try:
        epoch = int(orjson.loads(published[0])["epoch"]) if published else 1
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    return None if epoch == 1 else epoch


def _store(records: Records, up_to: int | None = None) -> MemoryPartStore:
    """A partition's store restored from its changelog records: the last of each key (at
    a version up to up_to, if given)."""
    latest: dict[bytes, bytes | None] = {}
    for _, key, value in records:
        if key is None:
            continue
        if up_to is not None and value is not None and version_of(value) > up_to:
            continue
        latest[key] = value
    store = MemoryPartStore()
    store.write(((k, v) for k, v in latest.items() if v is not None), len(records))
    return store


def _check_changelog(
    report: PartitionReport, records: Records, published: list[bytes], settings: StreamSettings
) -> None:
    if not published:
        report.changelog = "no commitments to check it against"
        return
    work = load(_store(records), settings.engine, report.partition)
    last = orjson.loads(published[-1])
    if work.version != last["epoch"]:
        report.changelog = (
            f"at epoch {work.version}, the last commitment read is {last['epoch']}: "
            "a worker committed meanwhile; run verify again on a quiet deployment"
        )
        return
    assert work.commitments is not None
    root = work.commitments.summary()["state_root"]
    if root != last["state_root"]:
        report.problems.append(Divergence(
            report.partition, last["epoch"],
            "the changelog, restored, does not give this epoch's state root",
        ))  # fmt: skip
        return
    report.changelog = f"restored, gives epoch {last['epoch']}'s root"


def _from_checkpoint(
    audit: Audit, published: list[bytes], changelog: list[Records], number: int, epoch: int,
    report: PartitionReport,
) -> list[bytes]:  # fmt: skip
    """The records after epoch, with audit started from the changelog's state at epoch."""
    at = [i for i, value in enumerate(published) if orjson.loads(value)["epoch"] == epoch]
    if not at:
        report.problems.append(Divergence(number, epoch, "no commitment of this epoch"))
        return []
    record = orjson.loads(published[at[0]])
    records = changelog[number] if number < len(changelog) else []
    work = load(_store(records, epoch), audit.config, number)
    assert work.commitments is not None
    if work.commitments.summary()["state_root"] != record["state_root"]:
        report.problems.append(Divergence(number, epoch, (
            "the changelog no longer holds this epoch's state (compacted, or altered): "
            "choose a later epoch"
        )))  # fmt: skip
        return []
    work.commitments.chain = InputChain(bytes.fromhex(record["input_head"]))
    work.commitments.prev = sha256(published[at[0]]).digest()
    audit.start_from(work)
    audit.first_epoch = audit.last_epoch = epoch
    audit.epochs = 1  # its root checked against the changelog, not its inputs
    return published[at[0] + 1 :]


def run(settings: StreamSettings, from_epoch: int | None = None) -> tuple[list[str], bool]:
    """The report's lines, and whether everything checked out."""
    reports = asyncio.run(verify(settings, from_epoch))
    return [r.line() for r in reports], all(r.ok for r in reports)
