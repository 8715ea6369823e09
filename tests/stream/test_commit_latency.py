"""A partition that has read everything its inputs hold, after a quiet spell, commits at once.

Outputs become visible (read_committed) only when the transaction that holds them
commits. Waiting for the commit interval put up to one interval (0.1 s by default) into
every decision's latency at low load. A partition that is caught up now commits right
after the fetch it applied, unless it began a commit less than one interval ago (a
transaction per fetch would cost the broker more than it saves). The test sets the
interval to 3 s and sends an order every 3.5 s: a worker that waited for the interval
would take 3 s to publish each decision.
"""

from __future__ import annotations

import asyncio
import time

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from marginstream.feeds.demo import DemoMarket, demo_events
from tests.stream.harness import Deployment, Reference, final_checks


async def _decision_after(deployment: Deployment, order: dict) -> float:
    """Seconds from producing order to reading its decision, read_committed."""
    topic = deployment.prefix + "decisions"
    reader = AIOKafkaConsumer(
        bootstrap_servers=deployment.bootstrap, isolation_level="read_committed"
    )
    await reader.start()
    try:
        reader.assign([TopicPartition(topic, p) for p in range(deployment.partitions)])
        await reader.seek_to_end()
        began = time.monotonic()
        await asyncio.to_thread(deployment.produce, [order], False)
        async with asyncio.timeout(60):
            while True:
                for messages in (await reader.getmany(timeout_ms=100)).values():
                    for message in messages:
                        value = orjson.loads(message.value)
                        if value["request_id"] == order["value"]["order_id"]:
                            return time.monotonic() - began
    finally:
        await reader.stop()


def test_a_caught_up_partition_publishes_without_waiting_for_the_interval(
    deployment: Deployment,
):
    deployment.extra_env["MARGINSTREAM_COMMIT_INTERVAL"] = "3"
    records = list(demo_events(DemoMarket(accounts=8, steps=1)))
    template = next(r for r in records if r["value"].get("type") == "order")
    orders = [
        {**template, "value": {**template["value"], "order_id": f"quick-{n}", "qty": "0.001"}}
        for n in range(5)
    ]
    reference = Reference.of([*records, *orders])
    worker = deployment.worker("w1").start()
    worker.wait_ready()
    began = time.monotonic()
    deployment.produce(records)  # run by run, each committed before the next is produced
    setup_seconds = time.monotonic() - began

    latencies = []
    for order in orders:
        time.sleep(3.5)  # one interval since the partition's last commit began
        latencies.append(asyncio.run(_decision_after(deployment, order)))
    assert max(latencies) < 1.5, latencies
    assert setup_seconds < 60.0, setup_seconds
    final_checks(deployment, reference)
