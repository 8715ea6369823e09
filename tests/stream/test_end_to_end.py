"""A live worker publishes what `marginstream replay` computes, and serves the same state."""

from __future__ import annotations

from marginstream.feeds.demo import DemoMarket, demo_events
from tests.stream.harness import Deployment, Reference, final_checks


def test_demo_market_live_equals_replay(deployment: Deployment):
    records = list(demo_events(DemoMarket(accounts=60, steps=6)))
    reference = Reference.of(records)
    worker = deployment.worker("w1").start()
    worker.wait_ready()

    deployment.produce(records)  # run by run, each applied before the next

    live = deployment.outputs()
    kinds = {value["type"] for topic, value in live if topic == "liquidations"}
    assert kinds == {"margin_call", "liquidation", "recovered"}
    status, body = worker.get("/accounts/nobody/")
    assert (status, body) == (404, {"error": "unknown account nobody"})
    final_checks(deployment, reference)
