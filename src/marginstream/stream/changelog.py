"""Reading the changelog into local stores: restores to the end, and standbys that follow.

One consumer, outside any group, reading committed transactions only (read_committed):
an aborted write, a fenced zombie's among them, never reaches a store. Records are read
in large batches and written as one store batch per partition and fetch, with the
offset to resume from (core/delivery/restore.py says which records a store keeps). The
cost per record is aiokafka's parsing, a few dict operations and a put: the versions
the rule compares with are asked of the store once per batch (a multi-get), or not at
all while the store holds only what this reading wrote (it was empty when the reading
began: the reading remembers the versions it wrote). The batches skip RocksDB's
write-ahead log and the store is flushed when a restore ends (stream/store.py says why
a crash in between still leaves whole batches with their offset).

A restore reads from the offset the store saved to the end the broker reports for
committed reads (the last stable offset), asked after the caller's producer has fenced
the previous owner: nothing that owner writes later can ever be committed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from marginstream.core.delivery.parts import version_of
from marginstream.core.delivery.restore import Restored, restore_batch
from marginstream.core.delivery.store import PartStore
from marginstream.stream.faults import FAULTS

log = logging.getLogger(__name__)

# Records per getmany at most. bench/restore.py (1M records): 1,000 was the fastest of
# 500 to 50,000; larger batches cost more CPU per record and stall the fetches longer.
BATCH = 1000
# How long a store ahead of its changelog's end waits for Kafka to catch up before it is
# taken for the history of a changelog since deleted and recreated (and wiped).
AHEAD_SECONDS = 30.0


@dataclass
class Reading:
    store: PartStore
    until: int | None  # None: a standby, following for good
    done: asyncio.Future[None] | None = None
    # The versions of the keys this reading wrote, while nothing else is in the store
    # (None: ask the store). Checked against the store's offset before each batch.
    written: dict[bytes, int] | None = None
    wrote_up_to: int = 0  # the offset this reading last saved

    @classmethod
    def of(
        cls, store: PartStore, until: int | None, done: asyncio.Future[None] | None = None
    ) -> Reading:
        """A reading of store from the offset it saved (a map of versions if it is empty)."""
        empty = next(iter(store.items()), None) is None
        return cls(store, until, done, {} if empty else None, store.changelog_offset())

    def stored_versions(self, keys: list[bytes]) -> list[int]:
        if self.written is not None:
            get = self.written.get
            return [get(key, -1) for key in keys]
        return [version_of(value) for value in self.store.get_many(keys)]

    def wrote(self, restored: Restored, offset: int) -> None:
        if self.written is not None:
            self.written.update(restored.versions)
        self.wrote_up_to = offset


@dataclass
class Counts:
    read: int = 0
    applied: int = 0
    stale: int = 0  # older than the store's version: a fencing breach if ever seen


@dataclass
class ChangelogReader:
    consumer: AIOKafkaConsumer = field(init=False)
    bootstrap: str
    topic: str
    counts: Counts = field(default_factory=Counts)
    options: dict[str, Any] = field(default_factory=dict)  # security: settings.kafka_options()
    # Called with (partition, records read, records kept) after each batch: the worker's
    # metrics count restores through it (a callback, so this module needs no metrics).
    restored: Callable[[int, int, int], None] = field(default=lambda *_: None)

    def __post_init__(self) -> None:
        self.readings: dict[int, Reading] = {}
        self.changed = asyncio.Event()

    async def start(self) -> None:
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_partition_fetch_bytes=8 * 1024 * 1024,
            fetch_max_bytes=64 * 1024 * 1024,
            **self.options,
        )
        await self.consumer.start()

    async def stop(self) -> None:
        for reading in self.readings.values():
            if reading.done is not None and not reading.done.done():
                reading.done.cancel()
        self.readings.clear()
        await self.consumer.stop()

    async def restore(self, partition: int, store: PartStore) -> None:
        """Bring store up to the end of its changelog partition (committed records)."""
        tp = TopicPartition(self.topic, partition)
        self.unfollow(partition)
        start = store.changelog_offset()
        end = await self._end_reaching(tp, start)
        if start > end:  # not this changelog's history (the topic was recreated): start over
            log.warning("partition %d: store at %d past changelog end %d for %.0fs; wiped",
                        partition, start, end, AHEAD_SECONDS)  # fmt: skip
            store.wipe()
            start = 0
        if start < end:
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._register(partition, Reading.of(store, end, done))
            await done
        store.flush()  # what a standby or this restore wrote survives a crash from now on

    async def _end_reaching(self, tp: TopicPartition, start: int) -> int:
        """The end of tp for committed reads, once it reaches start, the offset the store
        saved after a commit it saw complete; or, if it does not within AHEAD_SECONDS, the
        end then. Kafka's end can be behind a completed commit for a while: after a broker
        restart (seen: a single broker killed -9 fenced itself in KRaft, and the commit's
        markers waited for the unclean election that followed). Wiping the store then
        restored the state of an earlier commit beside the group offsets of the later one:
        records were skipped."""
        deadline = time.monotonic() + AHEAD_SECONDS
        while True:
            end = (await self.consumer.end_offsets([tp]))[tp]
            if end >= start or time.monotonic() > deadline:
                return end
            await asyncio.sleep(0.2)

    def follow(self, partition: int, store: PartStore) -> None:
        """As a standby: keep store up to date with the changelog until unfollow."""
        if partition not in self.readings:
            self._register(partition, Reading.of(store, None))

    def unfollow(self, partition: int) -> None:
        reading = self.readings.pop(partition, None)
        if reading is not None:
            if reading.done is not None and not reading.done.done():
                reading.done.cancel()
            self._assign()

    def following(self) -> list[int]:
        return sorted(p for p, r in self.readings.items() if r.until is None)

    def _register(self, partition: int, reading: Reading) -> None:
        self.readings[partition] = reading
        self._assign()
        self.changed.set()

    def _assign(self) -> None:
        """Read exactly the partitions being read, each from the offset its store saved
        (a new assignment forgets every position)."""
        self.consumer.assign([TopicPartition(self.topic, p) for p in sorted(self.readings)])
        for partition, reading in self.readings.items():
            tp = TopicPartition(self.topic, partition)
            self.consumer.seek(tp, reading.store.changelog_offset())

    async def run(self) -> None:
        """The reading loop (a task of the worker's service)."""
        while True:
            if not self.readings:
                self.changed.clear()
                await self.changed.wait()
                continue
            batches = await self.consumer.getmany(timeout_ms=200, max_records=BATCH)
            for tp, messages in batches.items():
                reading = self.readings.get(tp.partition)
                if reading is None or not messages:
                    continue
                self._apply(tp.partition, reading, messages)
                if reading.until is None and reading.written is not None:
                    caught_up = self.consumer.last_stable_offset(tp)
                    if caught_up is not None and reading.wrote_up_to >= caught_up:
                        reading.written = None  # a standby keeps no map while it follows
            await self._finish_restores()

    def _apply(self, partition: int, reading: Reading, messages: list) -> None:
        store = reading.store
        saved = store.changelog_offset()
        if saved != reading.wrote_up_to:  # another writer (never expected): ask the store
            reading.written = None
        if messages[0].offset < saved:  # fetched before a seek
            messages = [m for m in messages if m.offset >= saved]
            if not messages:
                return
        restored = restore_batch([(m.key, m.value) for m in messages], reading.stored_versions)
        FAULTS.hit("during-recovery", self.counts.read + restored.read)  # before the write
        resume_at = messages[-1].offset + 1
        store.write(restored.writes.items(), resume_at, durable=False)
        reading.wrote(restored, resume_at)
        self.counts.read += restored.read
        self.counts.applied += restored.kept
        self.counts.stale += restored.stale
        self.restored(partition, restored.read, restored.kept)
        if restored.stale:
            log.error("partition %d: %d changelog records older than the store's", partition,
                      restored.stale)  # fmt: skip

    async def _finish_restores(self) -> None:
        for partition, reading in list(self.readings.items()):
            if reading.until is None or reading.done is None:
                continue
            tp = TopicPartition(self.topic, partition)
            if await self.consumer.position(tp) >= reading.until:
                self.readings.pop(partition, None)
                self._assign()
                if not reading.done.done():
                    reading.done.set_result(None)
