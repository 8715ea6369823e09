"""One account partition this worker owns: opened on every assignment, dropped on every
revocation, reopened after a commit that did not go through.

open() runs in this order, which is what fences a worker that lost the partition:

1. pause the partition's inputs;
2. start the partition's transactional producer and wait for its producer id: the
   broker aborts the previous owner's open transaction and refuses its later commits;
3. restore the local store to the end of the changelog (committed records only);
4. read the group's committed offsets, which moved with the last committed transaction;
5. load the engine from the store (nothing from before the assignment is reused), and
   check that its state goes with the offsets (state_behind: else open again);
6. seek the inputs to the committed offsets and resume them.

Records are then applied (outputs sent in the open transaction) and committed by
stream/commit.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from marginstream.core import EngineConfig, Envelope
from marginstream.core.commitments.chain import digest_of
from marginstream.core.delivery.guard import GUARD_KEY
from marginstream.core.delivery.sources import Source
from marginstream.core.delivery.unit import PartitionState, load, save_view
from marginstream.core.engine import Steps
from marginstream.core.inputs import intake
from marginstream.core.inputs.envelope import NotJson, Output, published_by
from marginstream.stream.changelog import ChangelogReader
from marginstream.stream.commit import PartitionLost, Transaction, classified, commit
from marginstream.stream.faults import FAULTS
from marginstream.stream.layout import LayoutWatch
from marginstream.stream.metrics import StreamMetrics
from marginstream.stream.outputs import Outputs
from marginstream.stream.settings import StreamSettings
from marginstream.stream.store import RocksPartStore, StoreDirectory
from marginstream.stream.topics import COMMITMENTS, TopicNames

log = logging.getLogger(__name__)
T = TypeVar("T")
PAUSE_EVERY = 0.02  # seconds

# Headers a market record carries through the fan-out topic: where it was first read,
# and, for a record cut to its beginning, the whole's length and sha256.
ORIGIN_TOPIC, ORIGIN_PARTITION, ORIGIN_OFFSET = "ms-topic", "ms-partition", "ms-offset"
WHOLE_BYTES, WHOLE_SHA256 = "ms-bytes", "ms-sha256"


class EngineFailed(RuntimeError):
    """The engine raised on a record: a bug, which stops the partition (not the worker)."""


class StateBehind(RuntimeError):
    """The changelog's state is older than the commit the group's offsets come from."""


class Phase(enum.Enum):
    RESTORING = "restoring"
    ACTIVE = "active"
    CLOSED = "closed"


@dataclass
class Context:
    """What every owned partition of a worker shares."""

    settings: StreamSettings
    names: TopicNames
    config: EngineConfig
    consumer: AIOKafkaConsumer
    changelog: ChangelogReader
    stores: StoreDirectory
    metrics: StreamMetrics
    layout: LayoutWatch | None = None  # None: the layout is not watched (unit tests)


class OwnedPartition:
    def __init__(self, number: int, context: Context) -> None:
        self.number = number
        self.context = context
        self.phase = Phase.RESTORING
        self.store: RocksPartStore = context.stores.of(number)
        self.inputs = [TopicPartition(t, number) for t in context.names.risk_inputs()]
        self.markets = frozenset(context.names.spec(t) for t in context.names.market_inputs())
        self.producer: AIOKafkaProducer | None = None
        self.transaction: Transaction | None = None
        self.outputs: Outputs | None = None
        self.work: PartitionState | None = None
        self.next_offsets: dict[TopicPartition, int] = {}
        self.pending_since: float | None = None  # when the oldest uncommitted record was applied
        self.applied_at = 0.0  # when the last record was applied
        self.commit_delay = 0.0  # from the last record applied to the commit that took it
        self.applied = 0  # records applied and committed by this opening
        self.commits = 0
        self.idle = False  # it had read everything its inputs held, at its last fetch
        self.commit_began = 0.0  # when its last commit began
        self.owed_since = 0.0  # when a market record left closing work owed (0: none)
        # Closing work owed was done since the last commit: the second half of a record
        # whose offset waits for it, committed at once (due_at).
        self.settled = False

    @property
    def active(self) -> bool:
        return self.phase is Phase.ACTIVE

    # -- opening -----------------------------------------------------------------

    async def open(self) -> None:
        context, names = self.context, self.context.names
        consumer = context.consumer
        consumer.pause(*self.inputs)  # 1
        producer = AIOKafkaProducer(
            bootstrap_servers=context.settings.bootstrap_servers,
            transactional_id=names.transactional_id(self.number),
            acks="all",
            linger_ms=5,
            max_batch_size=256 * 1024,
            **context.settings.kafka_options(),
        )
        self.producer = producer
        await producer.start()
        await producer.begin_transaction()  # 2: waits for the producer id (the fence)
        await context.changelog.restore(self.number, self.store)  # 3
        committed = {tp: await consumer.committed(tp) for tp in self.inputs}  # 4
        self.work = await asyncio.to_thread(load, self.store, context.config, self.number)  # 5
        if self.work.commitments is not None:  # its records name the deployment
            self.work.commitments.deployment = names.deployment
        behind = state_behind(self.work, committed, names)
        if behind is not None:  # _opening tries again: the restore goes on from here
            raise StateBehind(f"partition {self.number}: {behind}")
        for tp, offset in committed.items():  # 6
            if offset is None:
                await consumer.seek_to_beginning(tp)
                self.next_offsets[tp] = 0
            else:
                consumer.seek(tp, offset)
                self.next_offsets[tp] = offset
        self.transaction = Transaction(
            producer, names.changelog, self.number, names.group, [], names.full(COMMITMENTS)
        )
        self.outputs = Outputs(self.transaction)
        self.phase = Phase.ACTIVE
        consumer.resume(*self.inputs)
        log.info(
            "partition %d open: %d accounts (view from %s), version %d, inputs from %s",
            self.number, len(self.work.engine.accounts), self.work.loaded_from, self.work.version,
            {tp.topic: offset for tp, offset in self.next_offsets.items()},
        )  # fmt: skip

    # -- records -----------------------------------------------------------------

    async def apply(self, tp: TopicPartition, messages: list[Any]) -> None:
        """Apply records read from one input, in order; their outputs join the transaction."""
        work = self.work
        assert work is not None
        metrics = self.context.metrics
        read_from = Source(tp.topic, tp.partition)
        next_offset = self.next_offsets.get(tp, 0)
        started, before = time.perf_counter(), work.records
        pace = Pace()
        for message in messages:
            if message.offset < next_offset:
                continue  # fetched before the seek of this opening
            envelope, from_market = self.envelope(message)
            digest = digest_of(message.key, message.value, envelope.whole)  # as read
            try:
                FAULTS.fail_on("engine-error", (read_from, message.offset))
                if from_market or work.engine.owed is not None:
                    # A cascade can take seconds: let heartbeats run meanwhile. A market
                    # record's alerts only: the closing work is owed, done once they are
                    # committed (settle), so that they are not kept waiting for it; any
                    # record does what is owed first (an account record after a restart,
                    # outside tester), paced as well.
                    steps = work.steps(
                        envelope, read_from, message.offset, owe=from_market, digest=digest
                    )
                    outcome = await pace.through(steps)
                else:
                    outcome = work.apply(envelope, read_from, message.offset, digest)
                    await pace.pause()  # a busy account's records can take seconds too
            except Exception as error:  # bad input is a dead letter: this is a bug
                at = f"{envelope.topic}[{envelope.partition}]@{envelope.offset}"
                raise EngineFailed(f"the engine failed on {at}: {error!r}") from error
            next_offset = message.offset + 1
            if work.engine.owed is None:  # none, or done before this record
                self.settled |= self.owed_since != 0.0
                self.owed_since = 0.0
            elif self.owed_since == 0.0:
                self.owed_since = time.monotonic()
            await self._publish(outcome.outputs, from_market)
        self.next_offsets[tp] = next_offset
        metrics.applied(tp.topic, work.records - before, started)
        if work.records:
            self._applied()

    @property
    def owes(self) -> bool:
        """Did a market record leave closing work owed (RiskEngine.steps, owe=True)?"""
        return self.active and self.work is not None and self.work.engine.owed is not None

    async def work_out(self) -> list[Output]:
        """Do the closing work owed, in memory: its outputs, to publish (publish_settled)
        once the commit of what came before (the alerts) is done."""
        work = self.work
        assert work is not None
        try:
            return (await Pace().through(work.settle())).outputs
        except Exception as error:  # as in apply: a bug, which stops the partition
            raise EngineFailed(f"the engine failed on the closing work owed: {error!r}") from error

    async def publish_settled(self, outputs: list[Output]) -> None:
        """The closing work's outputs, in the transaction begun after the alerts' commit."""
        self.owed_since, self.settled = 0.0, True
        FAULTS.hit("before-settle")
        await self._publish(outputs, from_market=True)
        if self.work is not None and self.work.pending:
            self._applied()

    async def _publish(self, found: list[Output], from_market: bool) -> None:
        names, metrics, outputs = self.context.names, self.context.metrics, self.outputs
        assert outputs is not None
        for output in found:
            if not published_by(self.number, output, from_market):
                continue
            metrics.output(output)
            await outputs.send(names.full(output.topic), output.key, orjson.dumps(output.value))

    def _applied(self) -> None:
        self.applied_at = time.monotonic()
        if self.pending_since is None:
            self.pending_since = self.applied_at

    async def caught_up(self) -> bool:
        """Has the partition applied everything its inputs hold (committed records)?"""
        consumer = self.context.consumer
        for tp in self.inputs:
            end = consumer.last_stable_offset(tp)
            if end is None or end < 0:
                end = consumer.highwater(tp)
            if end is None:
                return False
            try:  # position waits when it must be reset: not caught up, then
                if await asyncio.wait_for(consumer.position(tp), 0.1) < end:
                    return False
            except (Exception, TimeoutError):
                return False
        return True

    def due_at(self) -> float | None:
        """When the pending records are to be committed (None: nothing pending).

        One commit interval after the oldest of them; or, for a partition that has read
        everything there is, one interval after its last commit began, which is at once
        after a quiet spell. Each commit is a Kafka transaction, whose markers cost the
        broker more than the records in it: a partition commits at most once an
        interval, so a steady trickle of records cannot turn into a transaction each.
        """
        if not self.active or self.pending_since is None:
            return None
        if self.settled:
            return self.pending_since
        interval = self.context.settings.commit_interval
        due = self.pending_since + interval
        return min(due, self.commit_began + interval) if self.idle else due

    async def commit(self) -> None:
        if self.active:
            await self._commit_pending()

    async def _commit_pending(self) -> None:
        if self.work is None or not self.work.pending:
            return
        if not self.settled:  # the alerts' commit counts, not the one of their closing work
            self.commit_began = time.monotonic()
        assert self.transaction is not None
        layout, since = self.context.layout, self.applied_at
        confirm = None if layout is None else (lambda: layout.confirm(since))
        self.settled = False
        work = self.work
        self.applied += await commit(work, self.transaction, self.store, confirm)
        if work.commitments is not None:  # proofs are of this record from now on
            work.commitments.committed = work.commitments.last
        self.commits += 1
        self.pending_since = None
        self.commit_delay = time.monotonic() - self.applied_at

    def envelope(self, message: Any) -> tuple[Envelope, bool]:
        return envelope_of(message, self.context.names, self.context.settings, self.markets)

    # -- closing -----------------------------------------------------------------

    async def close(self, commit_first: bool) -> bool:
        """Stop owning the partition; with commit_first, commit what is pending first.
        True if that commit was refused because another worker owns the partition now.

        Nothing of it stays in memory: a restore under way stops, and an open transaction
        that could not commit is aborted here, or by the partition's next owner when its
        producer starts.
        """
        was_active = self.active
        self.phase = Phase.CLOSED
        if not was_active:
            self.context.changelog.unfollow(self.number)
        producer = self.producer
        fenced = False
        if producer is None:
            return fenced
        if was_active and commit_first:
            try:
                await asyncio.wait_for(self._commit_pending(), 10.0)
            except Exception as error:  # the next owner starts from Kafka
                self.context.metrics.failed("close", error)
                fenced = isinstance(classified(error), PartitionLost)
                log.warning("partition %d: commit at close failed: %r", self.number, error)
            else:  # all committed and in the store: a snapshot of the view for the next open
                try:  # in the loop, not a thread: the store closes right after a stop
                    assert self.work is not None
                    save_view(self.work, self.store)
                except Exception as error:  # only the next open is slower
                    log.warning("partition %d: view snapshot not saved: %r", self.number, error)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(producer.abort_transaction(), 5.0)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(producer.stop(), 5.0)
        self.work = self.transaction = self.producer = self.outputs = None
        return fenced


def state_behind(
    work: PartitionState, committed: dict[TopicPartition, int | None], names: TopicNames
) -> str | None:
    """Why a restored state cannot go with the group's committed offsets (None: it can).

    Both move in the same transaction, and a state's replay guard holds the last offset
    applied of each account input, so a committed offset is never past it plus one. If it
    is, Kafka shows the offsets of a commit whose state it does not show yet (its markers
    still on their way after a broker restart): applied from there, the state would skip
    that commit's records. A state upgraded from format 1 (its guard derived, rewritten on
    load) is not checked."""
    if GUARD_KEY in work.changed:
        return None
    seen = work.engine.guard.seen
    for tp, offset in committed.items():
        if offset is None or tp.topic == names.fanout:
            continue
        applied = seen.get(Source(names.spec(tp.topic), tp.partition), -1) + 1
        if offset > applied:
            return (
                f"the changelog's state has applied {tp.topic}[{tp.partition}] up to "
                f"{applied}, the group's committed offset is {offset}: Kafka does not show "
                "the last commit's state yet"
            )
    return None


def envelope_of(
    message: Any, names: TopicNames, settings: StreamSettings, markets: frozenset[str]
) -> tuple[Envelope, bool]:
    """A record read from Kafka as the engine sees it, and whether it is a market copy. A
    market copy carries its origin, which the engine keys it on; a record in the fan-out
    topic without one (not written by the fan-out) is dead-lettered where it lies."""
    limit = settings.max_record_bytes
    if message.topic == names.fanout:
        found = _origin(message.headers, markets, settings.market_partitions)
        if found is not None:
            origin, whole = found
            return intake.envelope(*origin, message.key, message.value, limit, whole), True
        letter = intake.envelope(
            names.fanout, message.partition, message.offset, message.key, message.value, limit
        )
        value = NotJson("a record in the market fan-out topic without valid origin headers")
        return letter._replace(value=value), False
    spec = names.spec(message.topic)
    return intake.envelope(
        spec, message.partition, message.offset, message.key, message.value, limit
    ), False


def origin_headers(
    topic: bytes, partition: int, offset: int, whole: tuple[int, str] | None
) -> list[tuple[str, bytes]]:
    headers = [
        (ORIGIN_TOPIC, topic),
        (ORIGIN_PARTITION, str(partition).encode()),
        (ORIGIN_OFFSET, str(offset).encode()),
    ]
    if whole is not None:
        headers += [(WHOLE_BYTES, str(whole[0]).encode()), (WHOLE_SHA256, whole[1].encode())]
    return headers


def _origin(
    headers: Any, markets: frozenset[str], market_partitions: int
) -> tuple[tuple[str, int, int], tuple[int, str] | None] | None:
    """Where a market copy was first read, (topic, partition, offset), and its whole's
    (length, sha256) if it was cut; None unless that is a market input's partition (the
    replay guard keeps a position per origin: a made-up one must not reach it)."""
    found = {name: value for name, value in headers or () if isinstance(value, bytes)}
    try:
        origin = (
            found[ORIGIN_TOPIC].decode(),
            int(found[ORIGIN_PARTITION]),
            int(found[ORIGIN_OFFSET]),
        )
        whole = None
        if WHOLE_BYTES in found:
            whole = (int(found[WHOLE_BYTES]), found[WHOLE_SHA256].decode())
    except (KeyError, ValueError, UnicodeDecodeError):
        return None
    if origin[0] not in markets or not 0 <= origin[1] < market_partitions or origin[2] < 0:
        return None
    return origin, whole


class Pace:
    """Pauses of the processing loop, at most PAUSE_EVERY seconds of work apart: the event
    loop then runs the consumer's heartbeats and the web views, not the commits and the
    rebalances, which wait for the processing lock (runner.py), so no part of a record is
    ever committed. Without them, a cascade or a run of records on an account with
    thousands of positions held the loop past the session: the group moved the partition,
    the worker's commit was fenced, and the next owner did the same work again, as long."""

    def __init__(self) -> None:
        self.since = time.perf_counter()

    async def pause(self) -> None:
        if time.perf_counter() - self.since >= PAUSE_EVERY:
            await asyncio.sleep(0)
            self.since = time.perf_counter()

    async def through(self, steps: Steps[T]) -> T:
        """Run steps to the end, pausing at their pauses (RiskEngine.steps) when due."""
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value
            await self.pause()
