"""The partition layout: the start-up refusal's advice (pure), and the watch's checks
(stream/layout.py) against a fake broker: shared between concurrent commits, never older
than the records they confirm, and final once a change is found."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from marginstream.stream.layout import Layout, LayoutChanged, LayoutWatch
from marginstream.stream.topics import TopicNames, layout_refusal

NAMES = TopicNames("p-", "app")
ORDERS, TRANSFERS = "p-orders", "p-transfers"
FANOUT, CHANGELOG = "p-app-market", "p-app-state-changelog"
PRICES, INSTRUMENTS = "p-prices", "p-instruments"


def counts(inputs: int, state: int | None, market: int = 1, **other: int) -> dict[str, int]:
    found = {ORDERS: inputs, TRANSFERS: inputs, PRICES: market, INSTRUMENTS: market}
    if state is not None:
        found.update({FANOUT: state, CHANGELOG: state})
    found.update({f"p-{k.replace('_', '-')}": v for k, v in other.items()})
    return found


def test_a_matching_layout_starts_whatever_the_outputs_count():
    assert layout_refusal(counts(4, 4, decisions=12), NAMES, 4, 1) is None
    assert layout_refusal({}, NAMES, 4, 1) is None  # nothing yet: the worker creates it


def test_inputs_grown_under_a_deployment_are_told_to_move_with_or_without_the_setting():
    """The outside tester's circle: 4 -> 8 under a deployment, then PARTITIONS=8."""
    for setting in (4, 8):
        line = layout_refusal(counts(8, 4), NAMES, setting, 1)
        assert line is not None and "\n" not in line
        assert "marginstream repartition --partitions 8 --to-app-id" in line, line
        assert "MARGINSTREAM_PARTITIONS=8" in line
        differing = [ORDERS, TRANSFERS] if setting == 4 else [FANOUT, CHANGELOG]
        for topic in differing:
            assert f"{topic} has" in line, line


def test_a_setting_that_disagrees_with_every_topic_is_told_the_count():
    line = layout_refusal(counts(4, 4), NAMES, 8, 1)
    assert line is not None and line.endswith("to start: set MARGINSTREAM_PARTITIONS=4"), line
    for topic in (ORDERS, TRANSFERS, FANOUT, CHANGELOG):
        assert f"{topic} has 4" in line
    new = layout_refusal(counts(6, None), NAMES, 8, 1)  # a new deployment on existing inputs
    assert new is not None and new.endswith("set MARGINSTREAM_PARTITIONS=6"), new


def test_inputs_not_co_partitioned_are_grown_first():
    found = {**counts(4, 4), ORDERS: 8}
    line = layout_refusal(found, NAMES, 4, 1)
    assert line is not None
    assert f"grow {TRANSFERS} to 8 partitions; then " in line, line
    assert "marginstream repartition --partitions 8" in line


def test_market_inputs_are_named_with_their_own_setting():
    line = layout_refusal(counts(4, 4, market=2), NAMES, 4, 1)
    assert line is not None and line.endswith("set MARGINSTREAM_MARKET_PARTITIONS=2"), line
    hand_made = {**counts(4, 4), FANOUT: 6}
    line = layout_refusal(hand_made, NAMES, 4, 1)
    assert line is not None and "changed outside marginstream" in line, line


class FakeClient:
    """Answers metadata requests with the counts it is given, counting them; each answer
    waits until `gate` is set."""

    def __init__(self, found: dict[str, int]) -> None:
        self.found, self.requests = found, 0
        self.gate = asyncio.Event()
        self.gate.set()

    class cluster:  # aiokafka client attribute
        @staticmethod
        def brokers() -> list[Any]:
            return [type("Broker", (), {"nodeId": 1})()]

    async def send(self, node: int, request: Any) -> Any:
        self.requests += 1
        await self.gate.wait()
        found = dict(self.found)

        class Response:
            @staticmethod
            def to_object() -> dict[str, Any]:
                return {"topics": [
                    {"topic": t, "error_code": 0 if c else 3, "partitions": [{}] * c}
                    for t, c in found.items()
                ]}  # fmt: skip

        return Response()


def watch(found: dict[str, int]) -> tuple[LayoutWatch, FakeClient]:
    layout = Layout({ORDERS: 4, TRANSFERS: 4, CHANGELOG: 4})
    w = LayoutWatch(layout, "unused:9092", {})
    w._client = FakeClient(found)
    return w, w._client


def test_concurrent_commits_share_one_check_and_a_later_record_asks_again():
    async def scenario() -> None:
        w, client = watch({ORDERS: 4, TRANSFERS: 4, CHANGELOG: 4})
        client.gate.clear()
        applied = time.monotonic()
        waiting = [asyncio.ensure_future(w.confirm(applied)) for _ in range(5)]
        await asyncio.sleep(0.01)
        client.gate.set()
        await asyncio.gather(*waiting)
        assert client.requests == 1
        await w.confirm(applied)  # already confirmed by a check sent after it
        assert client.requests == 1
        await w.confirm(time.monotonic())  # a record applied since: a new check
        assert client.requests == 2

    asyncio.run(scenario())


def test_a_change_or_a_topic_gone_is_final():
    async def scenario() -> None:
        w, client = watch({ORDERS: 8, TRANSFERS: 8, CHANGELOG: 4})
        with pytest.raises(LayoutChanged, match="orders has 8 partitions, not 4"):
            await w.confirm(time.monotonic())
        client.found = {ORDERS: 4, TRANSFERS: 4, CHANGELOG: 4}
        with pytest.raises(LayoutChanged):  # no check can make it hold again
            await w.confirm(time.monotonic())
        assert client.requests == 1
        gone, _ = watch({ORDERS: 4, TRANSFERS: 4})
        with pytest.raises(LayoutChanged, match="state-changelog has 0 partitions, not 4"):
            await gone.confirm(time.monotonic())

    asyncio.run(scenario())
