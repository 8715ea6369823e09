"""/health/'s status rules (stream/runner.py's docstring), on a RiskService that is not
started, with its clock moved by hand. The real broker cases are in test_failfast."""

from __future__ import annotations

import asyncio

import pytest

from marginstream.stream import runner
from marginstream.stream.runner import RiskService
from marginstream.stream.settings import StreamSettings


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(runner.time, "monotonic", lambda: now[0])
    return now


@pytest.fixture
def service(clock: list[float]) -> RiskService:
    service = RiskService(StreamSettings(session_timeout=6.0))
    service.started_at = clock[0]
    service.rebalancing = False
    service.confirmed_at = clock[0]
    return service


def test_ok_while_confirmed_then_recovering_then_failed(service: RiskService, clock):
    assert service.status() == "ok"
    clock[0] += 6.5  # no heartbeat answered for one session
    assert service.status() == "recovering"
    clock[0] += 6.0  # one more session: the group has moved its partitions by now
    assert service.status() == "failed"
    assert service.failing().startswith("group membership unconfirmed")
    service.confirmed_at = clock[0]  # Kafka is back
    assert service.status() == "ok"


def test_a_start_that_never_joins_fails_after_two_sessions(service: RiskService, clock):
    service.confirmed_at, service.rebalancing = 0.0, True
    clock[0] += 11.0
    assert service.status() == "recovering"
    clock[0] += 2.0
    assert service.status() == "failed"


def test_stopping_is_failed(service: RiskService):
    service.stopping = True
    assert (service.status(), service.failing()) == ("failed", "stopping")


def test_a_partition_failing_to_open_past_a_session_is_failed(service: RiskService, clock):
    service.open_failing_since[3] = clock[0]
    for _ in range(6):  # heartbeats keep being answered
        clock[0] += 1.0
        service.confirmed_at = clock[0]
    assert service.failing() is None
    clock[0] += 0.5
    service.confirmed_at = clock[0]
    assert service.status() == "failed"
    assert service.failing() == "partitions [3] failing to open for more than 6s"


def test_an_ended_task_is_failed(service: RiskService):
    async def ended() -> None:
        return None

    async def run() -> None:
        service.tasks = [asyncio.ensure_future(ended())]
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    asyncio.run(run())
    assert (service.status(), service.failing()) == ("failed", "a task has ended")
