"""The broker killed (kill -9) or stopped cleanly mid-stream, then started again.

Workers are not restarted: they must carry on by themselves (their clients reconnect, a
commit that failed reopens its partition from Kafka) and end equal to the replay.
"""

from __future__ import annotations

import time

import pytest

from marginstream.feeds.load import LoadFeed, load_events
from marginstream.feeds.segments import segments
from marginstream.localbroker import LocalBroker
from tests.stream.harness import Deployment, Reference, final_checks


@pytest.mark.parametrize("how", ["kill -9", "clean stop"])
def test_workers_carry_on_through_a_broker_restart(
    own_broker: LocalBroker, deployment_on_own_broker: Deployment, how: str
):
    deployment = deployment_on_own_broker
    records = list(load_events(LoadFeed(accounts=200, rounds=3, trades_per_round=500, seed=8)))
    reference = Reference.of(records)
    workers = [deployment.worker("w1").start(), deployment.worker("w2").start()]
    for worker in workers:
        worker.wait_ready()

    runs = segments(records)
    big = max(range(len(runs) // 2), key=lambda n: len(runs[n]))
    for run in runs[:big]:
        deployment.produce(run)
    deployment.produce(runs[big], wait=False)
    time.sleep(0.3)  # in the middle of the run
    if how == "kill -9":
        own_broker.kill()
    else:
        own_broker.stop()
    time.sleep(3)
    own_broker.start()
    deployment.wait_applied()
    assert all(w.alive() for w in workers), [w.log_tail() for w in workers]
    for run in runs[big + 1 :]:
        deployment.produce(run)
    final_checks(deployment, reference)
