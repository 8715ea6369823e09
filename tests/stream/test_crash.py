"""kill -9 a worker mid-stream, again and again; it must end exactly where the replay ends.

Every account's state equal to the replay's, every alert and decision id of the replay
published (with the same content), no output the replay does not have, and no record
applied twice (which would show as a state or output difference).
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import time

import pytest

from marginstream.feeds.driver import GaveUp, produce_runs
from marginstream.feeds.load import LoadFeed, load_events
from marginstream.feeds.segments import segments
from tests.stream.harness import Deployment, Reference, compare_outputs, live_states

NOTHING_WRONG = {"missing": [], "extra": [], "differing": []}


def _produce(deployment: Deployment, run: list[dict]) -> None:
    asyncio.run(produce_runs(run, deployment.bootstrap, deployment.prefix))


def _check(deployment: Deployment, worker, reference: Reference) -> None:
    comparison = compare_outputs(deployment.outputs(), reference.outputs)
    if comparison != NOTHING_WRONG:
        (deployment.root / "comparison.json").write_text(json.dumps(comparison, indent=1))
        print(json.dumps(comparison.get("first_difference"), indent=1))
    assert comparison == NOTHING_WRONG
    assert live_states(worker, reference.states) == reference.states


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
            time.sleep(rng.uniform(0.05, 1.5))  # somewhere in the middle of the run
            mid_run += deployment.lag() > 0  # records left to apply as it dies
            worker.kill9()
            kills += 1
            worker.start()
            worker.wait_ready()
        deployment.wait_applied()
    assert kills >= 5 and mid_run >= 5, (kills, mid_run)
    _check(deployment, worker, reference)


FEED = LoadFeed(accounts=400, rounds=4, trades_per_round=700, seed=5)


@pytest.mark.parametrize(
    "fault",
    [
        "after-local-write:1800",  # state in RocksDB, changelog and outputs not yet sent
        "after-flush:1800",  # changelog and outputs in Kafka, input offset not committed
    ],
)
def test_kill9_at_an_instrumented_point(deployment: Deployment, fault: str):
    records = list(load_events(FEED))
    reference = Reference.of(records)
    worker = deployment.worker("w1").start(fault=fault)
    worker.wait_ready()
    for run in segments(records):
        _produce(deployment, run)
        try:
            deployment.wait_applied()
            continue
        except GaveUp:
            pass
        assert worker.wait_exit(60) == -9  # it killed itself at the fault point
        worker.start()
        worker.wait_ready()
        deployment.wait_applied()
    assert "fault=" + fault in worker.log_path.read_text()
    _check(deployment, worker, reference)


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
    _check(deployment, worker, reference)
