"""A live worker publishes what `marginstream replay` computes, and serves the same state."""

from __future__ import annotations

from marginstream.feeds.demo import DemoMarket, demo_events
from tests.stream.harness import Deployment, Reference, compare_outputs, live_states


def test_demo_market_live_equals_replay(deployment: Deployment):
    records = list(demo_events(DemoMarket(accounts=60, steps=6)))
    reference = Reference.of(records)
    worker = deployment.worker("w1").start()
    worker.wait_ready()

    deployment.produce(records)  # run by run, each applied before the next

    live = deployment.outputs()
    assert compare_outputs(live, reference.outputs) == {
        "missing": [], "extra": [], "differing": []
    }  # fmt: skip
    assert len(live) == len(reference.outputs)  # and nothing published twice
    kinds = {value["type"] for topic, value in live if topic == "liquidations"}
    assert kinds == {"margin_call", "liquidation", "recovered"}
    # The web view of every account, routed and served by the worker, equals the replay.
    assert live_states(worker, reference.states) == reference.states
    status, body = worker.get("/accounts/nobody/")
    assert (status, body) == (404, {"error": "unknown account nobody"})
