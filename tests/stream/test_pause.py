"""A worker paused (SIGSTOP) past the session timeout, then resumed (SIGCONT).

While it is frozen the group gives its partitions to the other worker, which applies
more records. When it wakes up it still holds fetched records, uncommitted work and
engines of the partitions it no longer owns. Whatever the group gives it back, its own
partitions or others, nothing it held may become visible: every engine it ends up with
is rebuilt from Kafka (engine_loads grows), and the end state and outputs equal the
replay's (final_checks).

Which partitions it gets back is decided by the assignor (stream/group.py: a member keeps
its lowest-numbered partitions, the newest claim wins): the worker started first keeps
partitions 0-1, so pausing the one started second makes it regain its own (2-3), and
pausing the one started first makes it get the others'.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from marginstream.feeds.load import LoadFeed, load_events
from marginstream.feeds.segments import segments
from marginstream.localworker import LocalWorker
from tests.stream.harness import Deployment, Reference, final_checks

SESSION_TIMEOUT = 6.0  # LocalDeployment's


def _owned(worker: LocalWorker) -> list[int]:
    return (worker.health() or {}).get("assigned", [])


def _wait_owned(
    worker: LocalWorker, partitions: list[int], loads: int = 0, timeout: float = 90.0
) -> None:
    """Until the worker owns exactly partitions, open, with at least loads engine loads."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        health = worker.health() or {}
        if (
            health.get("assigned") == partitions
            and health.get("status") == "ok"
            and health.get("engine_loads", 0) >= loads
        ):
            return
        time.sleep(0.2)
    raise AssertionError(f"expected {partitions} ({loads} loads), worker has {worker.health()}")


@pytest.mark.parametrize("outcome", ["regains its own", "gets others"])
def test_a_worker_paused_past_its_session_changes_nothing_when_it_resumes(
    deployment: Deployment, outcome: str
):
    records = list(load_events(LoadFeed(accounts=300, rounds=4, trades_per_round=500, seed=3)))
    reference = Reference.of(records)
    first = deployment.worker("first").start()
    first.wait_ready(partitions=4)
    second = deployment.worker("second").start()
    _wait_owned(first, [0, 1])
    _wait_owned(second, [2, 3])
    paused, other = (second, first) if outcome == "regains its own" else (first, second)
    mine_before = _owned(paused)

    runs = segments(records)
    big = max(range(len(runs) // 2), key=lambda n: len(runs[n]))  # mid-stream, many records
    moves = next(n for n in range(big + 1, len(runs)) if runs[n][0]["topic"] == "prices")
    for run in runs[:big]:
        deployment.produce(run)
    loads_before = paused.health()["engine_loads"]
    deployment.produce(runs[big], wait=False)
    time.sleep(0.3)  # some of the run applied, some fetched, some not yet read
    paused.pause()
    with ThreadPoolExecutor(8) as readers:
        try:
            _wait_owned(other, [0, 1, 2, 3], timeout=SESSION_TIMEOUT * 10)
            deployment.wait_applied()  # the other worker applies the rest of the run...
            watched = _accounts_on(other, reference.states, mine_before)
            for run in runs[big + 1 : moves + 1]:  # ... and more, market moves included
                deployment.produce(run)
            # Reads sent to the frozen worker: it answers them as soon as it wakes up.
            asked = [readers.submit(paused.get, f"/accounts/{a}/", 30.0) for a in watched]
            time.sleep(0.5)
        finally:
            paused.resume()
        answers = dict(zip(watched, (f.result() for f in asked), strict=True))
    for account, (status, body) in answers.items():  # never the state it froze with
        assert status == 503 or body == other.get(f"/accounts/{account}/")[1], account
    expected = mine_before if outcome == "regains its own" else [2, 3]
    # Each partition it ends up with is opened again: rebuilt from Kafka, never reused.
    _wait_owned(paused, expected, loads=loads_before + len(expected))
    health = paused.health()
    print(f"{outcome}: {mine_before} -> {health['assigned']}, fenced {health['fenced']}, "
          f"reopened {health['reopened']}")  # fmt: skip
    for run in runs[moves + 1 :]:
        deployment.produce(run)
    assert paused.alive()
    final_checks(deployment, reference)


def _accounts_on(worker: LocalWorker, accounts: dict, partitions: list[int]) -> list[str]:
    """Up to 8 accounts of partitions that hold positions (a market move changes them),
    as worker serves them."""
    found = []
    for account in accounts:
        status, body = worker.get(f"/accounts/{account}/")
        if status == 200 and body["partition"] in partitions and body["positions"]:
            found.append(account)
        if len(found) == 8:
            break
    assert found
    return found
