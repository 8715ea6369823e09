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
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from marginstream.core.commitments.audit import (
    SPEC_INPUTS,
    Audit,
    Divergence,
    Reader,
    equivocations,
    parsed,
)
from marginstream.core.commitments.chain import InputChain
from marginstream.core.delivery.parts import version_of
from marginstream.core.delivery.store import MemoryPartStore
from marginstream.core.delivery.unit import load
from marginstream.stream.repartition import read_range
from marginstream.stream.settings import StreamSettings
from marginstream.stream.topics import COMMITMENTS, TopicNames, existing_counts

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


@dataclass
class Report:
    partitions: list[PartitionReport] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # the deployment's, not a partition's
    others: Counter[str] = field(default_factory=Counter)  # records of other deployments

    @property
    def ok(self) -> bool:
        return not self.problems and all(p.ok for p in self.partitions)

    def lines(self) -> list[str]:
        others = [
            f"not checked: {count} commitments of deployment {name} (another app id)"
            for name, count in sorted(self.others.items())
        ]
        problems = [f"PROBLEM: {p}" for p in self.problems]
        return [*(p.line() for p in self.partitions), *others, *problems]


class Kafka:
    """Every committed record of the topic partitions asked for, read once, in memory."""

    def __init__(self, settings: StreamSettings) -> None:
        self.settings = settings
        self.names = TopicNames(settings.topic_prefix, settings.app_id)
        self.read: dict[tuple[str, int], Records] = {}
        self.counts: dict[str, int] = {}  # each topic verify reads: its partition count
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False,
            isolation_level="read_committed", max_partition_fetch_bytes=8 * 1024 * 1024,
            **settings.kafka_options(),
        )  # fmt: skip

    async def count_partitions(self) -> None:
        """The partition count of every topic verify reads (0: no such topic), asked once."""
        names = self.names
        topics = [names.full(COMMITMENTS), names.changelog, *map(names.full, SPEC_INPUTS)]
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.settings.bootstrap_servers, **self.settings.kafka_options()
        )
        await admin.start()
        try:
            found = await existing_counts(admin, topics)
        finally:
            await admin.close()
        self.counts = {topic: found.get(topic, 0) for topic in topics}

    async def records(self, topic: str, partition: int) -> Records:
        key = (topic, partition)
        if key not in self.read:
            tp = TopicPartition(topic, partition)
            self.read[key] = [
                (m.offset, m.key, m.value) async for m in read_range(self.consumer, tp, 0)
            ]
        return self.read[key]

    async def topic(self, topic: str) -> list[Records]:
        return [await self.records(topic, p) for p in range(self.counts.get(topic, 0))]


@dataclass
class Published:
    """A partition's commitment records as published, in order, each with its parse."""

    values: list[bytes] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    where: set[int] = field(default_factory=set)  # the commitments partitions they are in


async def verify(settings: StreamSettings, from_epoch: int | None = None) -> Report:
    kafka = Kafka(settings)
    try:
        await kafka.consumer.start()
        return await _verify(kafka, from_epoch)
    finally:
        await kafka.consumer.stop()


async def _verify(kafka: Kafka, from_epoch: int | None) -> Report:
    settings, names = kafka.settings, kafka.names
    report = Report()
    topic = names.full(COMMITMENTS)
    published: dict[int, Published] = defaultdict(Published)
    await kafka.count_partitions()
    if kafka.counts[topic] == 0:
        report.problems.append(f"{topic} does not exist: are the prefix and app id right?")
        return report
    for where, records in enumerate(await kafka.topic(topic)):
        for offset, _, value in records:
            at = f"{topic}[{where}]@{offset}"
            record = parsed(value, 1 << 31)  # its partition checked once it is ours
            if isinstance(record, str):
                report.problems.append(f"{at}: not a commitment: {record}")
                continue
            if record["deployment"] != names.deployment:  # another app id on this prefix
                report.others[record["deployment"]] += 1
                continue
            if record["partition"] >= settings.partitions:
                report.problems.append(
                    f"{at}: partition {record['partition']} of {settings.partitions}"
                )
                continue
            found = published[record["partition"]]
            found.values.append(value or b"")
            found.records.append(record)
            found.where.add(where)
    if not published and not report.problems:
        report.problems.append(
            f"{topic} holds no commitment of {names.deployment}: are the prefix and app id "
            f"right? (others: {dict(report.others) or 'none'})"
        )
    for number, found in sorted(published.items()):
        if len(found.where) > 1:  # a worker sends all of a partition's to one, by its key
            report.problems.append(
                f"partition {number}'s commitments are in {topic} partitions "
                f"{sorted(found.where)}: a worker puts them all in one"
            )
    pairs = (
        pair
        for found in published.values()
        for pair in zip(found.values, found.records, strict=True)
    )
    for problem in equivocations(pairs):
        report.problems.append(str(problem))
    changelog = await kafka.topic(names.changelog)
    for number in range(settings.partitions):
        found = published.get(number, Published())
        report.partitions.append(await _partition(kafka, number, found, changelog, from_epoch))
    return report


async def _partition(
    kafka: Kafka, number: int, found: Published, changelog: list[Records],
    from_epoch: int | None,
) -> PartitionReport:  # fmt: skip
    settings = kafka.settings
    report = PartitionReport(number)
    deployment = kafka.names.deployment
    audit = report.audit = Audit(number, settings.engine, settings.max_record_bytes, deployment)
    values, records = found.values, found.records
    at = _start(records, from_epoch)
    if at is not None:
        own = changelog[number] if number < len(changelog) else []
        if not _from_checkpoint(audit, values[at], records[at], own, report):
            return report
        values, records = values[at + 1 :], records[at + 1 :]
    for value, record in zip(values, records, strict=True):
        if not audit.check(value, record, await _reader(kafka, record)):
            assert audit.divergence is not None
            report.problems.append(audit.divergence)
            return report
        report.last_root = record["state_root"]
    if found.records and number < len(changelog):
        _check_changelog(report, changelog[number], found.records[-1], settings)
    return report


def _start(records: list[dict[str, Any]], from_epoch: int | None) -> int | None:
    """Where a partition's check starts from a checkpoint (the index of its record), or
    None (from an empty state). With from_epoch: its last record at or before that epoch,
    else its first. Without: its first record, if that is not epoch 1 (its state before
    was committed by no record: a deployment upgraded from a version without
    commitments, or moved by `repartition`)."""
    if not records:
        return None
    if from_epoch is None:
        return None if records[0]["epoch"] == 1 else 0
    before = [i for i, record in enumerate(records) if record["epoch"] <= from_epoch]
    return before[-1] if before else 0


async def _reader(kafka: Kafka, record: dict[str, Any]) -> Reader:
    """The reader a record's runs need, their topic partitions read first (a partition the
    topic does not have reads as empty: the audit names the run)."""
    for topic, partition, _, _ in record["runs"]:
        full = kafka.names.full(topic)
        if partition < kafka.counts.get(full, 0):
            await kafka.records(full, partition)

    def read(topic: str, partition: int, first: int, last: int) -> Iterator[Record]:
        records = kafka.read.get((kafka.names.full(topic), partition), [])
        start = bisect.bisect_left(records, first, key=lambda r: r[0])
        for found in records[start:]:
            if found[0] > last:
                break
            yield found

    return read


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
    report: PartitionReport, records: Records, last: dict[str, Any], settings: StreamSettings
) -> None:
    work = load(_store(records), settings.engine, report.partition)
    if work.version != last["epoch"]:
        report.changelog = (
            f"at epoch {work.version}, the last commitment read is {last['epoch']}: "
            "a worker committed meanwhile; run verify again on a quiet deployment"
        )
        return
    assert work.commitments is not None
    if work.commitments.summary()["state_root"] != last["state_root"]:
        report.problems.append(Divergence(
            report.partition, last["epoch"],
            "the changelog, restored, does not give this epoch's state root",
        ))  # fmt: skip
        return
    report.changelog = f"restored, gives epoch {last['epoch']}'s root"


def _from_checkpoint(
    audit: Audit, value: bytes, record: dict[str, Any], changelog: Records,
    report: PartitionReport,
) -> bool:  # fmt: skip
    """Start audit from the changelog's state at record's epoch, which must give its
    root (False, and the divergence named, if it does not)."""
    epoch = record["epoch"]
    work = load(_store(changelog, epoch), audit.config, report.partition)
    assert work.commitments is not None
    if work.commitments.summary()["state_root"] != record["state_root"]:
        report.problems.append(Divergence(report.partition, epoch, (
            "the changelog no longer holds this epoch's state (compacted, or altered): "
            "choose a later epoch"
        )))  # fmt: skip
        return False
    work.commitments.chain = InputChain(bytes.fromhex(record["input_head"]))
    work.commitments.prev = sha256(value).digest()
    audit.start_from(work)
    audit.first_epoch = audit.last_epoch = epoch
    audit.epochs = 1  # its root checked against the changelog, not its inputs
    report.checkpoint = epoch
    report.last_root = record["state_root"]
    return True


def run(settings: StreamSettings, from_epoch: int | None = None) -> tuple[list[str], bool]:
    """The report's lines, and whether everything checked out."""
    report = asyncio.run(verify(settings, from_epoch))
    return report.lines(), report.ok
