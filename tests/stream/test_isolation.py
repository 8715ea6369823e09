"""Two deployments on one broker share nothing but the broker.

Everything a deployment creates or joins carries its prefix: topics, the changelog, the
fan-out topic, the consumer groups, the transactional ids. Here both deployments keep
the default app id (marginstream), as two environments of one product would, and use
the same account ids.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient

from marginstream.feeds.demo import DemoMarket, demo_events
from tests.kafka_admin import topic_names
from tests.stream.harness import Deployment, Reference, final_checks, live_states


def _deposit(account: str, amount: str, transfer_id: str) -> dict:
    value = {"type": "deposit", "transfer_id": transfer_id, "account": account,
             "amount": amount, "ts": 1_795_000_000_000}  # fmt: skip
    return {"topic": "transfers", "key": account, "value": value}


def _groups(bootstrap: str) -> set[str]:
    async def listing() -> set[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            return {group for group, _ in await admin.list_consumer_groups()}
        finally:
            await admin.close()

    return asyncio.run(listing())


def test_a_deployment_never_sees_another_ones_state(kafka_bootstrap: str, tmp_path: Path):
    """The outside tester's case: runX applies a deposit of 1000 to Z and stops; runY,
    on a new data dir, must not restore it, and must apply its own deposit of 500."""
    x = Deployment(kafka_bootstrap, tmp_path / "x", label="runx", app_name="marginstream")
    y = Deployment(kafka_bootstrap, tmp_path / "y", label="runy", app_name="marginstream")
    try:
        worker = x.worker("w1").start()
        worker.wait_ready()
        x.produce([_deposit("Z", "1000", "t1")])
        assert live_states(worker, ["Z"])["Z"]["cash"] == "1000"
        worker.stop()

        other = y.worker("w1").start()
        health = other.wait_ready()
        assert health["accounts"] == 0 and health["changelog_records_read"] == 0
        ours = [_deposit("Z", "500", "t1")]  # the same transfer id, in another deployment
        y.produce(ours)
        final_checks(y, Reference.of(ours))
    finally:
        x.stop_all()
        y.stop_all()
    before = topic_names(kafka_bootstrap)
    for deployment in (x, y):
        made = {t for t in before if t.startswith(deployment.prefix)}
        assert deployment.names.changelog in made and deployment.names.fanout in made
    groups = _groups(kafka_bootstrap)
    assert {y.names.group, y.names.fanout_group} <= groups
    assert not any(g.startswith("marginstream") for g in groups)  # nothing unprefixed


def test_two_live_deployments_with_the_same_account_ids(kafka_bootstrap: str, tmp_path: Path):
    staging = Deployment(kafka_bootstrap, tmp_path / "s", label="stg", app_name="marginstream")
    production = Deployment(kafka_bootstrap, tmp_path / "p", label="prd", app_name="marginstream")
    streams = [
        (staging, list(demo_events(DemoMarket(accounts=30, steps=2, seed=1)))),
        (production, list(demo_events(DemoMarket(accounts=30, steps=3, seed=2)))),
    ]
    try:
        for deployment, _ in streams:
            deployment.worker("w1").start().wait_ready()
        for deployment, records in streams:  # one after the other, both running
            deployment.produce(records)
        for deployment, records in streams:
            final_checks(deployment, Reference.of(records))
    finally:
        staging.stop_all()
        production.stop_all()
