"""Malformed and impossible records go to dead-letters with reasons; the rest is applied."""

from __future__ import annotations

from marginstream.feeds.demo import DemoMarket, demo_events
from tests.stream.harness import Deployment, Reference, final_checks


def test_poison_records_are_dead_lettered_and_the_rest_applied(deployment: Deployment):
    records = list(demo_events(DemoMarket(accounts=40, steps=3, poison_every=20)))
    reference = Reference.of(records)
    poisoned = len(records) - len(list(demo_events(DemoMarket(accounts=40, steps=3))))
    assert poisoned >= 10
    worker = deployment.worker("w1").start()
    worker.wait_ready()
    deployment.produce(records)

    live = deployment.outputs()
    letters = [value for topic, value in live if topic == "dead-letters"]
    reference_letters = [value for topic, value in reference.outputs if topic == "dead-letters"]
    assert len(letters) == len(reference_letters) >= poisoned  # a market record: one letter
    assert all(letter["reason"] and letter["value"] for letter in letters)
    assert {letter["topic"] for letter in letters} >= {"orders", "transfers", "prices"}
    assert worker.alive()
    final_checks(deployment, reference)
