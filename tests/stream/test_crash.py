"""kill -9 a worker mid-stream, again and again; it must end exactly where the replay ends.

Every account's state equal to the replay's, every alert and decision id of the replay
published (with the same content), no output the replay does not have, and no record
applied twice (which would show as a state or output difference).
"""

from __future__ import annotations

import asyncio
import random
import shutil
import time

import pytest

from marginstream.feeds.driver import GaveUp, produce_runs
from marginstream.feeds.load import LoadFeed, load_events
from marginstream.feeds.segments import segments
from tests.stream.harness import Deployment, Reference, final_checks


def _produce(deployment: Deployment, run: list[dict]) -> None:
    asyncio.run(produce_runs(run, deployment.bootstrap, deployment.prefix))


def test_kill9_at_random_points_during_a_50k_record_stream(deployment: Deployment):
    records = list(load_events(LoadFeed(accounts=1500, rounds=11, trades_per_round=1500)))
    assert len(records) >= 50_000
    reference = Reference.of(records)
    worker = deployment.worker("w1").start()
    worker.wait_ready()

    rng = random.Random(20261124)
    runs = segments(records)
    big = [n for n, run in enumerate(runs) if len(run) > 1000]
    doomed = set(rng.sample(big, 7))
    kills = mid_run = 0
    for number, run in enumerate(runs):
        _produce(deployment, run)
        if number in doomed:
            time.sleep(rng.uniform(0.02, 0.4))  # somewhere in the middle of the run
            mid_run += deployment.lag() > 0  # records left to apply as it dies
            worker.kill9()
            kills += 1
            worker.start()
            worker.wait_ready()
        deployment.wait_applied()
    assert kills >= 5 and mid_run >= 5, (kills, mid_run)
    final_checks(deployment, reference)


FEED = LoadFeed(accounts=400, rounds=4, trades_per_round=700, seed=5)


@pytest.mark.parametrize(
    "fault",
    [
        "before-commit:60",  # outputs and changelog records in Kafka, not committed
        "after-commit:60",  # transaction committed, the local store not yet written
    ],
)
def test_kill9_at_an_instrumented_point(deployment: Deployment, fault: str):
    records = list(load_events(FEED))
    reference = Reference.of(records)
    worker = deployment.worker("w1").start(fault=fault)
    worker.wait_ready()
    deaths = 0
    for run in segments(records):
        _produce(deployment, run)
        try:
            deployment.wait_applied()
            continue
        except GaveUp:
            pass
        assert worker.wait_exit(60) == -9  # it killed itself at the fault point
        deaths += 1
        worker.start()
        worker.wait_ready()
        deployment.wait_applied()
    assert deaths == 1  # the fault point was reached (and the restarted worker runs clean)
    final_checks(deployment, reference)


def test_local_rocksdb_deleted_before_restart_and_kills_during_recovery(
    deployment: Deployment,
):
    records = list(load_events(FEED))
    reference = Reference.of(records)
    worker = deployment.worker("w1").start()
    worker.wait_ready()
    runs = segments(records)
    half = len(runs) // 2
    for run in runs[:half]:
        _produce(deployment, run)
        deployment.wait_applied()
    _produce(deployment, runs[half])
    time.sleep(0.3)  # in the middle of that run
    worker.kill9()
    shutil.rmtree(worker.data_dir)  # everything must come back from the changelog
    # Die while restoring, twice in a row: once in the first batch of changelog records
    # (nothing restored yet), once in the second (the first batch kept).
    for point in (300, 1100):
        worker.start(fault=f"during-recovery:{point}")
        assert worker.wait_exit(120) == -9, worker.log_tail()
    worker.start()
    worker.wait_ready()
    restored = worker.health()
    assert restored["changelog_records_read"] > 0
    deployment.wait_applied()
    for run in runs[half + 1 :]:
        _produce(deployment, run)
        deployment.wait_applied()
    final_checks(deployment, reference)


def test_committed_offsets_follow_the_work_after_kills_right_after_bursts(
    deployment: Deployment,
):
    """The outside tester's case: bursts of orders, each followed 0.02-0.15 s later by a
    kill -9 and a restart on the same data dir. Every time, the group's committed offsets
    must reach the end of every input again, promptly (they once stalled for good)."""
    records = list(load_events(LoadFeed(accounts=300, rounds=5, trades_per_round=270, seed=9)))
    reference = Reference.of(records)
    worker = deployment.worker("w1").start()
    worker.wait_ready()
    rng = random.Random(5)
    bursts = 0
    for run in segments(records):
        _produce(deployment, run)
        if len(run) >= 800:
            time.sleep(rng.uniform(0.02, 0.15))
            worker.kill9()
            worker.start()
            worker.wait_ready()
            bursts += 1
        deployment.wait_applied(timeout=60)  # lag back to 0 within a minute, every time
    assert bursts >= 4, bursts
    final_checks(deployment, reference)
