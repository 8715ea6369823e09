"""Moving a stopped deployment's state to N account partitions, under a new app id: the
Kafka side of `marginstream repartition --partitions N --to-app-id NEW` (cli/repartition.py).

Run it with the workers' environment (KAFKA_*, MARGINSTREAM_TOPIC_PREFIX,
MARGINSTREAM_APP_ID, the engine's settings), after their workers have stopped. It:

1. refuses, in one line, a deployment still running (its groups have members; a worker
   that died is waited for, one session timeout), a new app id already in use (its group
   has offsets), or a count Kafka cannot give;
2. reads the old deployment's state from its changelog (committed records only, each
   partition's stored bytes into memory) and its groups' offsets;
3. grows orders and transfers to N partitions if they have fewer, creates the new
   deployment's changelog and fan-out topics, and sets its fan-out group's offsets after
   the market records the old partitions applied;
4. in one Kafka transaction, one old partition at a time (decoded, then dropped):
   finishes the old layout (core/delivery/repartition.py: the partition brought to the
   furthest market position from its own fan-out copies, then its records of orders and
   transfers past the group's offsets that only the old layout explains, merged by their
   Kafka timestamps) and publishes what that outputs, then sends every part to its new
   partition of the new changelog; then the parts every new partition has, and the new
   group's offsets (from where the finishing stopped on the old partitions, from the
   beginning on the new ones). Nothing of the move is visible until it commits: after a
   failure, run it again.

The old deployment's topics and groups are left as they were (delete them once the new
deployment runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.errors import KafkaError

from marginstream.core import EngineConfig, RiskEngine
from marginstream.core.delivery.guard import GUARD_KEY, ReplayGuard
from marginstream.core.delivery.parts import decode_part, encode_part, format_of, part_key
from marginstream.core.delivery.repartition import (
    MoveRefused,
    Spread,
    behind,
    market_positions,
    old_layout_records,
    placed,
    start_offsets,
)
from marginstream.core.delivery.sources import Source
from marginstream.core.delivery.store import MemoryPartStore
from marginstream.core.delivery.unit import load_eager
from marginstream.core.engine import drive
from marginstream.core.inputs import intake
from marginstream.core.inputs.envelope import Output, published_by
from marginstream.stream.changelog import ChangelogReader
from marginstream.stream.commit import Transaction, delivered
from marginstream.stream.outputs import Outputs
from marginstream.stream.partition import envelope_of
from marginstream.stream.settings import StreamSettings
from marginstream.stream.topics import COMPACTED, TopicNames, existing_counts

T = TypeVar("T")
# Written to the old changelog in the move's transaction: where the deployment went. Not
# a state part (its kind is none of parts.PART_KINDS): loaders pass over it.
MOVED_KEY = b"moved/to"
VERSION = 1  # the version of every part in the new changelog (its first commit)
# The move's transaction stays open while it reads and spreads every partition: Kafka's
# default bound for a transaction's time, which its brokers accept unless lowered.
TRANSACTION_MS = 900_000


@dataclasses.dataclass
class Partition:
    """One old partition during the move: what it applied and published there."""

    number: int
    outputs: int = 0
    applied: dict[str, int] = dataclasses.field(default_factory=dict)  # input -> records
    misrouted: int = 0  # left to the new deployment, which dead-letters them


class Move:
    """The move of the deployment `settings` names to `count` partitions, as new_app_id.

    Two passes over the old state, each partition's read whole from the changelog into
    memory as stored bytes: first every partition's replay guard (the market position
    each must reach); then, inside the transaction, one partition at a time decoded,
    finished, spread and sent, then dropped: the move holds one partition's accounts as
    objects at a time."""

    def __init__(self, settings: StreamSettings, count: int, new_app_id: str) -> None:
        self.settings, self.count = settings, count
        self.old = TopicNames(settings.topic_prefix, settings.app_id)
        self.new = TopicNames(settings.topic_prefix, new_app_id)
        if self.new.deployment == self.old.deployment:
            raise MoveRefused("--to-app-id must differ from MARGINSTREAM_APP_ID")
        self.options = settings.kafka_options()
        self.counts: dict[str, int] = {}
        self.committed: dict[TopicPartition, Any] = {}  # the old group's offsets
        self.stores: list[MemoryPartStore | None] = []
        self.positions: dict[Source, int] = {}  # where every partition's market must be
        self.partitions: list[Partition] = []

    @property
    def config(self) -> EngineConfig:
        """The engines' configuration on the old layout (the settings', but the count)."""
        return dataclasses.replace(self.settings.engine, partitions=len(self.stores))

    async def run(self) -> list[str]:
        """Move; returns the lines of the report. MoveRefused: nothing was moved, say why;
        KafkaError: nothing was committed, run it again."""
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.settings.bootstrap_servers, **self.options
        )
        await admin.start()
        try:
            await self._check(admin)
            self.committed = await _retried(
                lambda: admin.list_consumer_group_offsets(self.old.group)
            )
            await self._read_stores()
            self._refuse_moved()
            self.positions = market_positions(self._guard(store) for store in self.stores)
            await self._prepare(admin)
            await self._commit(admin)
        except (KafkaError, OSError) as error:
            raise MoveRefused(f"the move did not commit: {error!r}; run it again") from None
        except MoveRefused as error:
            raise MoveRefused(str(error)) from None
        finally:
            await admin.close()
        return self._report()

    async def _check(self, admin: AIOKafkaAdminClient) -> None:
        """Refuse what cannot be moved."""
        old, new, count = self.old, self.new, self.count
        counts = self.counts = await existing_counts(
            admin, [*old.account_inputs(), *old.internal()]
        )
        if old.changelog not in counts:
            raise MoveRefused(f"no deployment to move: {old.changelog} does not exist")
        state = counts[old.changelog]
        if counts.get(old.fanout, state) != state:
            raise MoveRefused(
                f"{old.fanout} has {counts[old.fanout]} partitions, {old.changelog} {state}: "
                "the deployment's topics disagree"
            )
        if count <= state:
            raise MoveRefused(f"--partitions must be above the deployment's {state}, got {count}")
        for topic in old.account_inputs():
            if counts.get(topic, 0) > count:
                raise MoveRefused(f"{topic} has {counts[topic]} partitions, more than {count}: "
                                   "Kafka cannot take partitions away")  # fmt: skip
        for group in (old.group, old.fanout_group):
            await _wait_empty(admin, group, self.settings.session_timeout)
        if await _retried(lambda: admin.list_consumer_group_offsets(new.group)):
            raise MoveRefused(
                f"group {new.group} already has offsets: app id {new.app_id!r} is in use "
                "(or this move has committed already)"
            )

    async def _read_stores(self) -> None:
        """Every old partition's stored parts, as a worker restoring it would read them."""
        reader = ChangelogReader(
            self.settings.bootstrap_servers, self.old.changelog, options=self.options
        )
        await reader.start()
        task = asyncio.ensure_future(reader.run())
        try:
            for number in range(self.counts[self.old.changelog]):
                store = MemoryPartStore()
                await reader.restore(number, store)
                self.stores.append(store)
                self.partitions.append(Partition(number))
        finally:
            task.cancel()
            await reader.stop()

    def _refuse_moved(self) -> None:
        """A deployment moved already is not moved again: its state and the outputs of
        finishing it live in the deployment it went to (a second move, under another app
        id, would publish those outputs twice)."""
        for store in self.stores:
            found = None if store is None else store.get(MOVED_KEY)
            if found is not None:
                moved = orjson.loads(found)
                raise MoveRefused(
                    f"{self.old.deployment} was moved already, to {moved['deployment']} "
                    f"({moved['partitions']} partitions): run its workers with "
                    f"MARGINSTREAM_APP_ID={moved['app_id']} "
                    f"MARGINSTREAM_PARTITIONS={moved['partitions']}"
                )

    def _guard(self, store: MemoryPartStore | None) -> ReplayGuard:
        """A partition's replay guard, read alone (a state of format 1 has none stored:
        it is derived from every part, decoded)."""
        assert store is not None
        stored = store.get(part_key(GUARD_KEY))
        if stored is not None and (format_of(stored) or 0) >= 2:
            return ReplayGuard.from_part(decode_part(stored).data)
        return load_eager(store, self.config).engine.guard

    async def _prepare(self, admin: AIOKafkaAdminClient) -> None:
        """Grow the inputs, create the new deployment's topics, set its fan-out's offsets."""
        old, new, count = self.old, self.new, self.count
        grow = {
            topic: NewPartitions(total_count=count)
            for topic in old.account_inputs()
            if self.counts.get(topic, 0) < count
        }
        if grow:
            await admin.create_partitions(grow)
        present = set(await admin.list_topics())
        missing = [
            NewTopic(topic, count, self.settings.replication_factor,
                     topic_configs=COMPACTED if topic == new.changelog else {})
            for topic in new.internal()
            if topic not in present
        ]  # fmt: skip
        if missing:
            await admin.create_topics(missing)
        offsets = {
            TopicPartition(old.full(source.topic), source.partition): offset + 1
            for source, offset in self.positions.items()
        }
        if offsets:  # outside the transaction: a run after a failure sets the same again
            fanout = AIOKafkaConsumer(
                bootstrap_servers=self.settings.bootstrap_servers, group_id=new.fanout_group,
                enable_auto_commit=False, **self.options,
            )  # fmt: skip
            await fanout.start()
            try:
                fanout.assign(list(offsets))
                await fanout.commit(offsets)
            finally:
                await fanout.stop()

    async def _commit(self, admin: AIOKafkaAdminClient) -> None:
        """Everything the move writes, in one transaction: the outputs of finishing the old
        layout, the new changelog and the new group's offsets; aborted if the old
        deployment committed anything meanwhile (a worker of it started)."""
        producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.bootstrap_servers,
            transactional_id=f"{self.new.deployment}-repartition",
            transaction_timeout_ms=TRANSACTION_MS,
            acks="all", linger_ms=5, max_batch_size=256 * 1024, **self.options,
        )  # fmt: skip
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap_servers, enable_auto_commit=False,
            isolation_level="read_committed", **self.options,
        )  # fmt: skip
        await producer.start()
        await consumer.start()
        try:
            await producer.begin_transaction()
            await self._write(producer, consumer)
            now = await _retried(lambda: admin.list_consumer_group_offsets(self.old.group))
            if now != self.committed:
                raise MoveRefused(
                    f"group {self.old.group} committed during the move (a worker of the old "
                    "deployment ran): nothing was moved; stop its workers and run it again"
                )
            await producer.commit_transaction()
        except BaseException:
            with contextlib.suppress(Exception):
                await producer.abort_transaction()
            raise
        finally:
            await consumer.stop()
            await producer.stop()

    async def _write(self, producer: AIOKafkaProducer, consumer: AIOKafkaConsumer) -> None:
        old, new, count = self.old, self.new, self.count
        transaction = Transaction(producer, new.changelog, 0, new.group, [])
        outputs = Outputs(transaction)
        spread = Spread(len(self.stores), count)
        for partition in self.partitions:
            store, self.stores[partition.number] = self.stores[partition.number], None
            assert store is not None
            engine = load_eager(store, self.config).engine
            published = [
                *await self._catch_up_market(consumer, partition, engine),
                *await self._finish_inputs(consumer, partition, engine),
                *drive(engine.settle()).outputs,  # closing work a worker left owed
            ]
            for output in published:
                await outputs.send(old.full(output.topic), output.key, orjson.dumps(output.value))
            partition.outputs = len(published)
            for number, key, part in spread.take(partition.number, engine.parts()):
                await _send_part(transaction, number, key, part)
            await delivered(transaction.sends)  # one partition's records in flight at a time
            transaction.sends = []
        for number, key, part in spread.shared():
            await _send_part(transaction, number, key, part)
        moved = {"app_id": new.app_id, "deployment": new.deployment, "partitions": count}
        sent = await producer.send(old.changelog, orjson.dumps(moved), key=MOVED_KEY, partition=0)
        transaction.sends.append(sent)  # the old deployment says where it went
        await delivered(transaction.sends)
        offsets = {TopicPartition(new.fanout, q): 0 for q in range(count)}
        for topic in old.account_inputs():
            before = [_offset(self.committed, TopicPartition(topic, p.number))
                      for p in self.partitions]  # fmt: skip
            applied = [p.applied.get(topic, 0) for p in self.partitions]
            for q, offset in enumerate(start_offsets(before, applied, count)):
                offsets[TopicPartition(topic, q)] = offset
        await producer.send_offsets_to_transaction(offsets, new.group)

    async def _catch_up_market(
        self, consumer: AIOKafkaConsumer, partition: Partition, engine: RiskEngine
    ) -> list[Output]:
        """Bring the partition to the furthest market position, from its own fan-out copies
        (in the order the furthest applied them); returns what it publishes."""
        old, positions, published = self.old, self.positions, []
        if not behind(engine.guard, positions):
            return published
        if old.fanout not in self.counts:
            raise MoveRefused(f"partition {partition.number} is behind the others' market "
                              f"position, and {old.fanout} is gone")  # fmt: skip
        markets = frozenset(old.spec(t) for t in old.market_inputs())
        tp = TopicPartition(old.fanout, partition.number)
        async for message in read_range(consumer, tp, _offset(self.committed, tp)):
            if not behind(engine.guard, positions):
                break
            envelope, from_market = envelope_of(message, old, self.settings, markets)
            if from_market and envelope.offset > positions.get(envelope.source, -1):
                raise MoveRefused(
                    f"partition {partition.number}'s fan-out copies are not in the order the "
                    f"others applied them ({envelope.source} at {envelope.offset})"
                )
            outcome = engine.apply(envelope)
            published += [
                o for o in outcome.outputs if published_by(partition.number, o, from_market)
            ]
            partition.applied["market"] = partition.applied.get("market", 0) + 1
        if behind(engine.guard, positions):
            raise MoveRefused(
                f"partition {partition.number} cannot reach the other partitions' market "
                f"position: {old.fanout}[{partition.number}] lacks the copies"
            )
        return published

    async def _finish_inputs(
        self, consumer: AIOKafkaConsumer, partition: Partition, engine: RiskEngine
    ) -> list[Output]:
        """Apply the partition's records that only the old layout explains: orders and
        transfers merged by their Kafka timestamps, each in its own order."""
        number, state, count = partition.number, len(self.stores), self.count
        taken, published = [], []
        for topic in self.old.account_inputs():
            tp = TopicPartition(topic, number)
            messages = [m async for m in read_range(consumer, tp, _offset(self.committed, tp))]
            keys = (m.key for m in messages)
            applied = partition.applied[topic] = old_layout_records(keys, number, state, count)
            taken.append(messages[:applied])
            partition.misrouted += sum(
                1 for m in messages[applied:]
                if placed(m.key, number, state) and not placed(m.key, number, count)
            )  # fmt: skip
        for message in heapq.merge(*taken, key=lambda m: m.timestamp):
            envelope = intake.envelope(
                self.old.spec(message.topic), number, message.offset, message.key,
                message.value, self.settings.max_record_bytes,
            )  # fmt: skip
            published += engine.apply(envelope).outputs
        return published

    def _report(self) -> list[str]:
        old, new = self.old, self.new
        applied = sum(n for p in self.partitions for n in p.applied.values())
        misrouted = sum(p.misrouted for p in self.partitions)
        lines = [
            f"moved {old.deployment} ({len(self.partitions)} partitions) to {new.deployment} "
            f"({self.count} partitions); {applied} records applied on the old layout first, "
            f"{sum(p.outputs for p in self.partitions)} outputs published",
            f"start the workers with MARGINSTREAM_APP_ID={new.app_id} "
            f"MARGINSTREAM_PARTITIONS={self.count}",
            f"once they run, {old.changelog}, {old.fanout} and the groups {old.group}, "
            f"{old.fanout_group} can be deleted",
        ]
        if misrouted:
            lines.append(
                f"warning: {misrouted} records on the old partitions were produced on the old "
                "layout after others on the new one: the new deployment dead-letters them as "
                "misrouted (produce them again)"
            )
        return lines


async def _wait_empty(admin: AIOKafkaAdminClient, group: str, session: float) -> None:
    """Refuse a group with members, after waiting one session timeout for them to go: a
    worker that died (or stopped on a layout change) stays a member until then."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + session + 1.0
    while True:
        members = sum(
            len(found["members"])
            for described in await _retried(lambda: admin.describe_consumer_groups([group]))
            for found in described.to_object()["groups"]
        )
        if not members:
            return
        if loop.time() > deadline:
            raise MoveRefused(
                f"the deployment is running: group {group} has {members} members "
                f"after {session:.0f}s; stop its workers first"
            )
        await asyncio.sleep(0.5)


async def _retried(ask: Callable[[], Awaitable[T]], seconds: float = 30.0) -> T:
    """ask(), again while Kafka answers that it is not ready yet (a group coordinator
    still loading after a broker's start), for up to `seconds`."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        try:
            return await ask()
        except KafkaError as error:
            if not error.retriable or asyncio.get_running_loop().time() > deadline:
                raise
        await asyncio.sleep(0.5)


async def _send_part(transaction: Transaction, number: int, key: Any, part: Any) -> None:
    sent = await transaction.producer.send(
        transaction.changelog, encode_part(VERSION, part), key=part_key(key), partition=number
    )
    transaction.sends.append(sent)


async def read_range(
    consumer: AIOKafkaConsumer, tp: TopicPartition, start: int
) -> AsyncIterator[Any]:
    """The committed records of tp from start to its end now, in offset order (a
    read_committed consumer; also `marginstream verify`'s reader, stream/verify.py)."""
    consumer.assign([tp])
    end = (await consumer.end_offsets([tp]))[tp]
    if start >= end:
        return
    consumer.seek(tp, start)
    while await consumer.position(tp) < end:
        for batch in (await consumer.getmany(tp, timeout_ms=1000)).values():
            for message in batch:
                if message.offset < end:
                    yield message


def _offset(committed: dict[TopicPartition, Any], tp: TopicPartition) -> int:
    found = committed.get(tp)
    return found.offset if found is not None and found.offset >= 0 else 0
