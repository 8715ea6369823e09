"""The risk service: the consumer group, the owned partitions, the processing loop.

Ownership follows the group exactly. Every revocation (the group's protocol revokes
everything at each rebalance) commits what is pending and drops every engine; every
assignment opens each assigned partition afresh (stream/partition.py), even one this
worker held a moment before. A partition whose commit fails is dropped and opened again
the same way: after a pause when its producer was fenced (the group is about to say who
owns it now), at once otherwise (a broker restart).

The processing loop, the commit loop and the rebalance callbacks take turns under one
lock, so a partition is never applied to, committed and dropped at the same time.

Anything the worker cannot carry on from (a record Kafka refuses for good, a local
store that cannot be written, a task that dies: the processing loop and its
fetches, the commit loop, the changelog reader, the fan-out) ends the process at once
with a non-zero status and one line on stderr ("marginstream: worker stops: <reason>"):
whatever it had not committed is aborted, and the next owner starts from what Kafka
holds. A broker away is not such a failure: the clients reconnect, a failed commit
reopens its partition from Kafka. An engine failure on a record stops that partition
only (_stop_partition says why).

/health/'s status, computed by status():

- "failed": the worker is not processing and is not about to. The partition layout
  changed under it (stream/layout.py: it exits LAYOUT_EXIT_SECONDS later); it is stopping
  (SIGTERM received, or a failure is ending it); a task has ended; an engine failure stopped a
  partition (_stop_partition); its group membership has been
  unconfirmed (no heartbeat answered: a broker away, a network cut) for more than one
  session timeout, i.e. two after the last heartbeat answered, when the group has given
  its partitions to others or cannot give them to anyone; or a partition has kept failing
  to open (its producer, its restore or its offsets failing) for more than one session
  timeout. `failing` in /health/ says which. The last two clear when Kafka comes back.
- "recovering": a rebalance is going on, a partition is opening (restoring), or
  membership is unconfirmed for less than that.
- "ok": otherwise; every assigned partition is open and processing.

A SIGTERM stops the worker within 10 seconds, whatever it is waiting for (stream/worker.py
arms a watchdog that ends the process 8 seconds after the signal; on_stop bounds each
of its waits well within that).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import InvalidSessionTimeoutError, KafkaError
from mode import Service

from marginstream.core import EngineConfig
from marginstream.stream.bounds import STALL_SECONDS
from marginstream.stream.changelog import ChangelogReader
from marginstream.stream.commit import DeliveryRefused, PartitionLost, classified
from marginstream.stream.fanout import FanOut
from marginstream.stream.faults import FAULTS
from marginstream.stream.group import CoPartitionedAssignor
from marginstream.stream.health import report, watch_heartbeats
from marginstream.stream.layout import WATCH_SECONDS, Layout, LayoutChanged, LayoutWatch
from marginstream.stream.metrics import StreamMetrics
from marginstream.stream.overviews import Overviews
from marginstream.stream.partition import Context, EngineFailed, OwnedPartition, Phase
from marginstream.stream.settings import FETCH_MAX_WAIT_MS, StreamSettings
from marginstream.stream.store import StoreDirectory, StoreFailed
from marginstream.stream.topics import TopicNames

log = logging.getLogger(__name__)
APPLY_CHUNK = 100  # records of one input applied between two looks at what is due to commit

MAX_RECORDS = 5000  # per fetch
# From finding the partition layout changed to the exit: /health/ says why meanwhile.
LAYOUT_EXIT_SECONDS = 2.0
# Not processing for this many session timeouts (membership unconfirmed past its session,
# a partition that keeps failing to open) makes /health/ say "failed".
FAILED_AFTER_SESSIONS = 1.0


def fail(reason: str) -> None:
    """End the worker now, with one clear line: its supervisor restarts it."""
    log.critical("marginstream worker stops: %s", reason)
    # The process's own stderr: faust sends sys.stderr to the log (as a WARNING line).
    print(f"marginstream: worker stops: {reason}", file=sys.__stderr__ or sys.stderr, flush=True)
    logging.shutdown()
    os._exit(1)


class RiskService(Service):
    consumer: AIOKafkaConsumer
    context: Context

    def __init__(self, settings: StreamSettings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.names = TopicNames(settings.topic_prefix, settings.app_id)
        self.config: EngineConfig = settings.engine
        self.stores = StoreDirectory(Path("marginstream-state"))
        self.url = ""
        self.assignor = CoPartitionedAssignor("", settings.standby_replicas)
        self.overviews = Overviews()
        self.metrics = StreamMetrics(self)
        self.changelog = ChangelogReader(
            settings.bootstrap_servers,
            self.names.changelog,
            options=settings.kafka_options(),
            restored=self.metrics.restored,
        )
        self.fanout = FanOut(settings, self.names)
        self.tasks: list[asyncio.Future[None]] = []
        self.partitions: dict[int, OwnedPartition] = {}
        self.openers: dict[int, asyncio.Task[None]] = {}
        self.lock = asyncio.Lock()
        self.rebalancing = True  # until the first assignment
        self.loads = self.fenced = self.reopened = 0
        # When the group last confirmed this member (the sending of a heartbeat it
        # answered, or an assignment): its partitions are its own until one session
        # timeout after. A worker frozen past that may have lost them without knowing.
        self.confirmed_at = 0.0
        self.started_at = time.monotonic()
        self.stopping = False  # SIGTERM received (stream/worker.py) or on_stop begun
        self.open_failing_since: dict[int, float] = {}  # partition -> first failed opening
        self.stopped: dict[int, str] = {}  # partition -> the engine failure that stopped it
        self.layout: LayoutWatch | None = None
        self.layout_failure: str | None = None  # the layout changed: the worker is ending

    def configure(self, url: str, stores_root: Path, layout: Layout) -> None:
        """Where this worker's web view answers (told to the group, for routing), where
        its partitions' stores live, and the partition layout it runs on (watched)."""
        self.url = self.assignor.url = url
        self.stores.root = stores_root
        options = self.settings.kafka_options()
        self.layout = LayoutWatch(layout, self.settings.bootstrap_servers, options)

    # -- lifecycle ---------------------------------------------------------------

    async def on_start(self) -> None:
        settings = self.settings
        self.started_at = time.monotonic()
        self.consumer = AIOKafkaConsumer(  # aiokafka's clients are made in the running loop
            bootstrap_servers=settings.bootstrap_servers,
            group_id=self.names.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            partition_assignment_strategy=(self.assignor,),
            session_timeout_ms=int(settings.session_timeout * 1000),
            heartbeat_interval_ms=settings.heartbeat_ms,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
            **settings.kafka_options(),
        )
        self.context = Context(
            settings, self.names, self.config, self.consumer, self.changelog, self.stores,
            self.metrics, self.layout,
        )  # fmt: skip
        if self.layout is not None:
            await self.layout.start()
            self.fanout.layout = self.layout
        await self.changelog.start()
        await self.fanout.start()
        await self.consumer.start()
        self.consumer.subscribe(self.names.risk_inputs(), listener=_Listener(self))
        watch_heartbeats(self.consumer, self._confirmed)
        self.tasks = [
            asyncio.ensure_future(_guarded(name, run))
            for name, run in (
                ("processing", self._process),
                ("commit", self._commit_loop),
                ("stall watch", self._watch_stalls),
                ("changelog reader", self.changelog.run),
                ("fan-out", self.fanout.run),
                ("layout watch", self._watch_layout),
            )
        ]

    async def on_stop(self) -> None:
        """Every wait is bounded (the watchdog of stream/worker.py ends the process 8 s
        after a SIGTERM anyway): what is not committed by then is aborted, as by a kill."""
        self.stopping = True
        if not self.tasks:
            return  # never started (the app stopped before: topics refused, broker away)
        locked = False
        try:  # after the batch being applied, if any; a commit that hangs is not waited for
            locked = await asyncio.wait_for(self.lock.acquire(), 2.0)
        except TimeoutError:
            log.warning("while stopping: the commit under way did not end in 2s; not waited for")
        for task in self.tasks:
            task.cancel()
        await asyncio.wait(self.tasks, timeout=0.5)
        try:
            await asyncio.wait_for(self._close_all(commit_first=locked), 2.0)
        except (Exception, asyncio.CancelledError) as error:
            log.warning("while stopping: closing the partitions: %r", error)
        if locked:
            self.lock.release()
        stops = [self.consumer.stop(), self.fanout.stop(), self.changelog.stop()]
        if self.layout is not None:
            stops.append(self.layout.stop())
        for result in await asyncio.gather(  # together, in 1.5 s at most: 6 s in all
            *(asyncio.wait_for(stop, 1.5) for stop in stops), return_exceptions=True
        ):
            if isinstance(result, BaseException):  # nothing left to protect
                log.warning("while stopping: %r", result)
        self.stores.close()

    # -- the group ---------------------------------------------------------------

    async def revoked(self) -> None:
        self.rebalancing = True
        async with self.lock:
            await self._close_all(commit_first=True)
            for partition in self.changelog.following():
                self.changelog.unfollow(partition)

    async def assigned(self, assigned: set[TopicPartition]) -> None:
        self._confirmed(time.monotonic())
        mine = sorted({tp.partition for tp in assigned})
        for partition in mine:
            self._open(partition)
        for partition in self.assignor.held.standby:
            self.changelog.follow(partition, self.stores.of(partition))
        self.rebalancing = False
        log.info("assigned %s, standby %s", mine, list(self.assignor.held.standby))

    def _open(self, partition: int, delay: float = 0.0) -> None:
        owned = self.partitions[partition] = OwnedPartition(partition, self.context)
        self.consumer.pause(*owned.inputs)  # before the fetcher can hand out a record
        self.openers[partition] = asyncio.ensure_future(self._opening(owned, delay))

    async def _opening(self, owned: OwnedPartition, delay: float) -> None:
        backoff = 0.5
        await asyncio.sleep(delay)
        while self.partitions.get(owned.number) is owned:
            try:
                await owned.open()
                self.loads += 1
                self.open_failing_since.pop(owned.number, None)
                return
            except asyncio.CancelledError:
                raise
            except StoreFailed as error:
                fail(f"partition {owned.number}: {error}")
            except Exception as error:  # a broker away: try again
                self.open_failing_since.setdefault(owned.number, time.monotonic())
                log.warning("partition %d: open failed: %r; again in %.1fs", owned.number,
                            error, backoff)  # fmt: skip
                await owned.close(commit_first=False)
                if self.partitions.get(owned.number) is not owned:
                    return
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                owned.phase = Phase.RESTORING

    async def _close_all(self, commit_first: bool) -> None:
        for task in self.openers.values():
            task.cancel()
        self.openers.clear()
        self.open_failing_since.clear()
        self.stopped.clear()
        closing = list(self.partitions.values())
        self.partitions.clear()
        fenced = await asyncio.gather(*(owned.close(commit_first) for owned in closing))
        self.fenced += sum(fenced)

    async def _reopen(self, owned: OwnedPartition, delay: float) -> None:
        """Drop a partition whose commit failed, and open it again after delay."""
        if self.partitions.get(owned.number) is not owned:
            return
        self.reopened += 1
        await owned.close(commit_first=False)
        self._open(owned.number, delay)

    # -- records -----------------------------------------------------------------

    async def _process(self) -> None:
        consumer = self.consumer
        while True:
            if self.layout_failure is not None:  # nothing more is applied: the worker ends
                await asyncio.sleep(1.0)
                continue
            # Work owed waits while records are fetched (_settle_owed): look without waiting.
            owing = any(owned.owes for owned in self.partitions.values())
            batches = await consumer.getmany(
                timeout_ms=0 if owing else 500, max_records=MAX_RECORDS
            )
            if batches:
                FAULTS.fail("fetch-error")
            async with self.lock:
                applied: dict[int, OwnedPartition] = {}
                for tp, messages in batches.items():
                    for start in range(0, len(messages), APPLY_CHUNK):
                        owned = self.partitions.get(tp.partition)
                        if owned is None or not owned.active:
                            break
                        try:
                            await owned.apply(tp, messages[start : start + APPLY_CHUNK])
                            applied[owned.number] = owned
                        except (PartitionLost, KafkaError) as error:
                            await self._failed(owned, "send", error)
                        except EngineFailed as error:
                            await self._stop_partition(owned, str(error))
                        # What is due commits between chunks, not only after the whole
                        # fetch: a cascade on one partition, or a slow account's records,
                        # must not hold the others' commits past the stall check (60 s)
                        # or a transaction past Kafka's timeout. Partitions owing closing
                        # work commit together after the fetch (_settle_owed): a move's
                        # alerts on every partition in one round of transactions.
                        await self._commit_due(owing=False)
                for owned in applied.values():
                    if self.partitions.get(owned.number) is owned and owned.active:
                        owned.idle = await owned.caught_up()
                await self._commit_due(owing=False)  # a quiet partition's records, at once
                await self._settle_owed(fetched=bool(batches))

    async def _settle_owed(self, fetched: bool) -> None:
        """Partitions whose market record left closing work owed: what they applied (the
        alerts) is committed at once, all together; the work itself is done once a fetch
        comes back empty, or once it has been owed for a commit interval, and committed in
        its turn. An index move's alerts are thus never kept waiting for the closing sets
        they call for (or for those it re-issues), on their own partition or on another
        whose copy of the move came in a later fetch; and records keep coming without
        starving the work. (Doing the work while the alerts' commits are under way was
        tried: on one event loop it slowed the commits, and the alerts, by as much as it
        saved the sets.)"""
        owing = [owned for owned in self.partitions.values() if owned.owes]
        if not owing:
            return
        await self._commit(owing)
        oldest = time.monotonic() - self.settings.commit_interval
        settled = []
        for owned in owing:
            if self.partitions.get(owned.number) is not owned or not owned.owes:
                continue  # its commit failed: reopened from Kafka, the work owed again
            if fetched and owned.owed_since > oldest:
                continue  # after what was fetched next, if that is soon enough
            try:
                await owned.publish_settled(await owned.work_out())
                settled.append(owned)
            except (PartitionLost, KafkaError) as error:
                await self._failed(owned, "send", error)
            except EngineFailed as error:
                await self._stop_partition(owned, str(error))
        # At once, not a commit interval after the alerts' commit: the second half of
        # their records (whose offsets it carries).
        await self._commit(settled)

    async def _commit_loop(self) -> None:
        """Commits run on their own clock: aiokafka's getmany can wait, past its timeout,
        for a rebalance to finish, and what is applied must not wait with it."""
        while True:
            await asyncio.sleep(self._wait_seconds())
            async with self.lock:
                await self._commit_due()

    def _wait_seconds(self) -> float:
        due = [at for o in self.partitions.values() if (at := o.due_at()) is not None]
        if not due:
            return 0.05
        return min(max(0.0, min(due) - time.monotonic()), 0.05)

    async def _commit_due(self, owing: bool = True) -> None:
        """Commit the partitions whose commit is due (owing=False: not those owing work)."""
        now = time.monotonic()
        await self._commit(
            [
                o for o in self.partitions.values()
                if (at := o.due_at()) is not None and at <= now and (owing or not o.owes)
            ]
        )  # fmt: skip

    async def _commit(self, due: list[OwnedPartition]) -> None:
        """Commit each of due, concurrently (each has its own producer)."""
        due = [owned for owned in due if owned.active and owned.pending_since is not None]
        if not due:
            return
        timeout = max(30.0, self.settings.session_timeout)
        results = await asyncio.gather(
            *(asyncio.wait_for(owned.commit(), timeout) for owned in due), return_exceptions=True
        )
        for owned, result in zip(due, results, strict=True):
            if isinstance(result, LayoutChanged):
                self._layout_changed(str(result))
            elif isinstance(result, Exception):
                await self._failed(owned, "commit", classified(result))
            elif isinstance(result, BaseException):
                raise result

    async def _failed(self, owned: OwnedPartition, what: str, error: BaseException) -> None:
        """A send or commit of owned failed: nothing of it was committed."""
        self.metrics.failed(what, error)
        if isinstance(error, (DeliveryRefused, StoreFailed)):
            fail(f"partition {owned.number}: {error}")
        if isinstance(error, PartitionLost):
            # Another worker has it (the group will say so), or the transaction timed out:
            # open it again only after the group has had one session to move it.
            self.fenced += 1
            log.warning("partition %d: fenced at %s (%s); dropped", owned.number, what, error)
            await self._reopen(owned, delay=self.settings.session_timeout)
            return
        log.warning("partition %d: %s failed: %r; reopened", owned.number, what, error)
        await self._reopen(owned, delay=0.5)

    async def _stop_partition(self, owned: OwnedPartition, reason: str) -> None:
        """The engine failed on a record: stop the partition, neither skipping the record
        (a fill the ledger never saw would make every later figure of its account wrong)
        nor stopping the worker (the group would hand the partition to the next worker,
        which would fail on it too, until none was left). The worker goes on with its
        other partitions and /health/ says failed, naming the record; what was applied
        since the last commit is aborted. A rebalance opens the partition again."""
        log.error("partition %d stopped: %s", owned.number, reason)
        self.stopped[owned.number] = reason
        self.partitions.pop(owned.number, None)
        self.consumer.pause(*owned.inputs)
        await owned.close(commit_first=False)

    async def _watch_layout(self) -> None:
        """Ask the broker for the partition counts at least every WATCH_SECONDS (each
        commit asks too: stream/layout.py), so that an idle worker notices a change."""
        assert self.layout is not None
        while True:
            await asyncio.sleep(WATCH_SECONDS)
            if FAULTS.armed("layout-watch-off"):
                continue
            try:
                await self.layout.confirm(time.monotonic() - WATCH_SECONDS)
            except LayoutChanged as change:
                self._layout_changed(str(change))
            except (KafkaError, TimeoutError, OSError) as error:  # a broker away: again
                log.warning("the partition layout could not be checked: %r", error)

    def _layout_changed(self, reason: str) -> None:
        """Stop for good: nothing more is applied or committed (the commits' check fails
        from now on), what is pending is aborted, /health/ says failed with the reason,
        and the worker exits LAYOUT_EXIT_SECONDS later. The records stay in Kafka."""
        if self.layout_failure is not None:
            return
        self.layout_failure = reason  # logged once, by fail(), at the exit
        self.tasks.append(asyncio.ensure_future(self._end_on_layout(reason)))

    async def _end_on_layout(self, reason: str) -> None:
        try:
            async with asyncio.timeout(LAYOUT_EXIT_SECONDS):
                async with self.lock:
                    await self._close_all(commit_first=False)
        except Exception as error:  # the exit aborts what is left anyway
            log.warning("closing the partitions: %r", error)
        await asyncio.sleep(LAYOUT_EXIT_SECONDS)
        fail(reason)

    async def _watch_stalls(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for owned in list(self.partitions.values()):
                age = now - (owned.pending_since or now)
                if age > STALL_SECONDS:
                    step = owned.transaction.step if owned.transaction else "none"
                    fail(
                        f"partition {owned.number}: records applied {age:.0f}s ago are not "
                        f"committed (commit step: {step})"
                    )

    def _confirmed(self, at: float) -> None:
        self.confirmed_at = max(self.confirmed_at, at)

    def confirmed(self) -> bool:
        """Does the group still count this worker as the owner of what it holds?"""
        return time.monotonic() < self.confirmed_at + self.settings.session_timeout

    # -- reading -----------------------------------------------------------------

    def failing(self) -> str | None:
        """Why the worker is not processing and not about to (None: it is or will be)."""
        if self.layout_failure is not None:
            return self.layout_failure
        if self.stopping:
            return "stopping"
        if any(task.done() for task in self.tasks):
            return "a task has ended"
        if self.stopped:
            return "; ".join(f"partition {p} stopped: {why}" for p, why in self.stopped.items())
        now = time.monotonic()
        limit = FAILED_AFTER_SESSIONS * self.settings.session_timeout
        # The start counts as a confirmation: a worker gets two sessions to join.
        unconfirmed_since = max(self.confirmed_at, self.started_at) + self.settings.session_timeout
        if now - unconfirmed_since > limit:
            return f"group membership unconfirmed for {now - unconfirmed_since:.0f}s"
        stuck = [p for p, since in self.open_failing_since.items() if now - since > limit]
        if stuck:
            return f"partitions {sorted(stuck)} failing to open for more than {limit:.0f}s"
        return None

    def status(self) -> str:
        if self.failing():
            return "failed"
        if (
            self.rebalancing
            or not self.confirmed()
            or any(not o.active for o in self.partitions.values())
        ):
            return "recovering"
        return "ok"

    def health(self) -> dict[str, Any]:
        return report(self)


class _Listener(ConsumerRebalanceListener):
    """aiokafka swallows a callback's exception: here one ends the worker."""

    def __init__(self, service: RiskService) -> None:
        self.service = service

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await _or_fail("revocation", self.service.revoked())

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await _or_fail("assignment", self.service.assigned(assigned))


async def _or_fail(what: str, step: Awaitable[None]) -> None:
    try:
        await step
    except Exception as error:
        log.exception("%s failed", what)
        fail(f"{what} failed: {error!r}")


async def _guarded(name: str, run: Callable[[], Awaitable[None]]) -> None:
    try:
        await run()
    except asyncio.CancelledError:
        raise
    except InvalidSessionTimeoutError:  # the group join, when the limits were not readable
        fail(
            f"the {name} task failed: Kafka refused MARGINSTREAM_SESSION_TIMEOUT as the "
            "group's session timeout: it must be within the brokers' "
            "group.min.session.timeout.ms and group.max.session.timeout.ms"
        )
    except Exception as error:
        log.exception("the %s task failed", name)
        fail(f"the {name} task failed: {error!r}")
