"""Two workers share the partitions; one is killed; the survivor serves every account."""

from __future__ import annotations

import time

from marginstream.feeds.demo import DemoMarket, demo_events
from tests.stream.harness import Deployment, Reference, final_checks, live_states


def test_survivor_takes_over_with_identical_state(deployment: Deployment):
    records = list(demo_events(DemoMarket(accounts=80, steps=4)))
    reference = Reference.of(records)
    first, second = deployment.worker("w1").start(), deployment.worker("w2").start()
    first.wait_ready()
    second.wait_ready()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # both in the group, the partitions split
        owned = [len((w.health() or {}).get("assigned", [])) for w in (first, second)]
        if sum(owned) == deployment.partitions and min(owned) > 0:
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"partitions never split: {owned}")
    deployment.produce(records)
    # Either worker answers for every account, routing to the owner.
    assert live_states(first, reference.states) == reference.states
    assert live_states(second, reference.states) == reference.states

    lost = set(first.health()["assigned"])
    first.kill9()
    killed_at = time.monotonic()
    # Until the survivor owns the dead worker's partitions it may answer 503, never a
    # stale or half-restored account.
    answers: dict[int, int] = {}
    while time.monotonic() - killed_at < 120:
        health = second.health() or {}
        for account, expected in reference.states.items():
            status, body = second.get(f"/accounts/{account}/")
            answers[status] = answers.get(status, 0) + 1
            if status == 200:
                body.pop("partition")
                assert body == expected, account
        if health.get("status") == "ok" and set(health["assigned"]) >= lost:
            break
        time.sleep(0.2)
    serving_after = time.monotonic() - killed_at
    print(f"survivor served the killed worker's accounts {serving_after:.1f}s after kill -9")
    assert second.health()["assigned"] == list(range(deployment.partitions))
    assert set(answers) <= {200, 503}, answers
    final_checks(deployment, reference)
