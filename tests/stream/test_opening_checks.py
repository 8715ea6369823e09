"""The two checks of a partition's opening that wait for Kafka instead of trusting it
(stream/changelog.py ChangelogReader._end_reaching, stream/partition.py state_behind).

Found by test_broker_restart once: after a single KRaft broker's kill -9 the markers of a
commit the worker had seen complete reached the changelog after the group's offsets; the
worker wiped its store (ahead of the end), restored the commit before, and read from the
later commit's offsets: 45 accounts skipped records. No broker here: the reader's end
offsets and the group's offsets are made up.
"""

from __future__ import annotations

import asyncio

from aiokafka import TopicPartition

from marginstream.core import EngineConfig, RiskEngine
from marginstream.core.delivery.guard import GUARD_KEY, ReplayGuard
from marginstream.core.delivery.parts import encode_part
from marginstream.core.delivery.sources import Source
from marginstream.core.delivery.store import MemoryPartStore
from marginstream.core.delivery.unit import PartitionState
from marginstream.stream import changelog
from marginstream.stream.changelog import ChangelogReader
from marginstream.stream.partition import state_behind
from marginstream.stream.topics import TopicNames

NAMES = TopicNames("p-", "app")


def work_with(seen: dict[Source, int], upgraded: bool = False) -> PartitionState:
    engine = RiskEngine(EngineConfig(), guard=ReplayGuard(seen))
    return PartitionState(engine, 3, changed={GUARD_KEY} if upgraded else set())


def test_offsets_past_the_state_are_refused_and_the_rest_is_not():
    work = work_with({Source("orders", 2): 99, Source("transfers", 2): 9})
    orders, transfers = TopicPartition("p-orders", 2), TopicPartition("p-transfers", 2)
    fanout = TopicPartition("p-app-market", 2)
    assert state_behind(work, {orders: 100, transfers: 10, fanout: 7_000}, NAMES) is None
    assert state_behind(work, {orders: 50, transfers: None}, NAMES) is None  # re-read: guarded
    behind = state_behind(work, {orders: 130, transfers: 10}, NAMES)
    assert behind is not None and "p-orders[2] up to 100" in behind and "is 130" in behind
    fresh = work_with({})
    assert state_behind(fresh, {orders: 1}, NAMES) is not None
    assert state_behind(fresh, {orders: 0, transfers: None}, NAMES) is None
    assert state_behind(work_with({}, upgraded=True), {orders: 130}, NAMES) is None


class Ends:
    """end_offsets answers: each call the next of ends (the last one for good)."""

    def __init__(self, *ends: int) -> None:
        self.ends, self.calls = list(ends), 0

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        self.calls += 1
        end = self.ends[min(self.calls, len(self.ends)) - 1]
        return dict.fromkeys(tps, end)


def reader_with(ends: Ends) -> ChangelogReader:
    reader = ChangelogReader("unused:9092", "p-app-state-changelog")
    reader.consumer = ends  # type: ignore[assignment]
    return reader


def store_at(offset: int) -> MemoryPartStore:
    store = MemoryPartStore()
    store.write([(b"account/a", encode_part(1, {"x": 1}))], offset)
    return store


def test_a_store_ahead_of_the_end_waits_for_kafka_and_is_kept():
    ends = Ends(114, 114, 160)  # the end catches up on the third look
    store = store_at(160)
    asyncio.run(reader_with(ends).restore(0, store))
    assert ends.calls == 3
    assert store.changelog_offset() == 160 and store.get(b"account/a") is not None


def test_a_store_that_stays_ahead_is_wiped_as_before(monkeypatch):
    monkeypatch.setattr(changelog, "AHEAD_SECONDS", 0.5)
    ends = Ends(0)  # the topic was deleted and made again: it stays behind
    store = store_at(160)
    asyncio.run(reader_with(ends).restore(0, store))
    assert ends.calls >= 2
    assert store.changelog_offset() == 0 and store.get(b"account/a") is None
