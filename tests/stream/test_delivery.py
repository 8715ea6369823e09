"""A record the broker refuses to store must hold back the input offset that produced it.

The worker sends outputs and changelog records inside the partition's transaction without
waiting for each acknowledgement. aiokafka commits a transaction even when one of its
sends failed (tried on Kafka 4.4): so the commit protocol looks at every send first. A
send that fails after it was queued (here: the broker rejects a decision as too large for
its topic) must stop that commit, or the decision is lost for good: the order's offset
would be committed and it would never be read again.
"""

from __future__ import annotations

import asyncio
import time

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from marginstream.feeds.demo import DemoMarket, demo_events
from tests.stream.harness import Deployment, Reference, final_checks


async def _set_topic_config(bootstrap: str, topic: str, configs: dict[str, str]) -> None:
    """Replace the topic's overrides with configs ({} restores the broker's defaults)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs)])
    finally:
        await admin.close()


def test_an_undelivered_decision_holds_back_its_order(deployment: Deployment):
    records = list(demo_events(DemoMarket(accounts=10, steps=2)))
    template = next(r for r in records if r["value"].get("type") == "order")
    late = {
        **template,
        "value": {
            **template["value"],
            "order_id": "late-1",
            "qty": "0.001",
            "ts": 1_900_000_000_000,
        },
    }
    reference = Reference.of([*records, late])
    worker = deployment.worker("w1").start()
    worker.wait_ready()
    deployment.produce(records)
    assert deployment.lag() == 0

    decisions = deployment.prefix + "decisions"
    asyncio.run(_set_topic_config(deployment.bootstrap, decisions, {"max.message.bytes": "64"}))
    deployment.produce([late], wait=False)
    time.sleep(15)  # 75 commit intervals: long enough for the offset to be committed
    assert deployment.lag() == 1, "the order's offset was committed without its decision"
    assert "not delivered" in worker.log_tail(200)

    assert worker.wait_exit(60) != 0  # it stops itself, for its supervisor to restart
    asyncio.run(_set_topic_config(deployment.bootstrap, decisions, {}))
    worker.start()
    worker.wait_ready()
    final_checks(deployment, reference)
