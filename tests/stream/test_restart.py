"""A restart reuses an intact local RocksDB (reads only what it lacks) and rebuilds a lost one."""

from __future__ import annotations

import asyncio
import shutil

from aiokafka import AIOKafkaConsumer, TopicPartition

from marginstream.feeds.demo import DemoMarket, demo_events
from tests.stream.harness import Deployment, Reference, live_states


async def _changelog_records(bootstrap: str, topic: str, partitions: int) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
        return sum(ends.values())
    finally:
        await consumer.stop()


def test_restart_reads_only_what_the_local_store_lacks(deployment: Deployment):
    records = list(demo_events(DemoMarket(accounts=60, steps=3)))
    reference = Reference.of(records)
    worker = deployment.worker("w1").start()
    worker.wait_ready()
    deployment.produce(records)
    changelog = f"{deployment.app_id}-state-changelog"
    written = asyncio.run(
        _changelog_records(deployment.bootstrap, changelog, deployment.partitions)
    )
    assert written > 500

    worker.stop()  # clean stop: the local store is complete
    worker.start()
    clean = worker.wait_ready()
    assert clean["changelog_records_read"] == 0
    assert live_states(worker, reference.states) == reference.states

    worker.kill9()  # unclean: at most the tail after the last acknowledged offset is read
    worker.start()
    killed = worker.wait_ready()
    assert killed["changelog_records_read"] < written / 10
    assert live_states(worker, reference.states) == reference.states

    worker.stop()
    shutil.rmtree(worker.data_dir)  # lost: everything comes back from the changelog
    worker.start()
    rebuilt = worker.wait_ready()
    assert rebuilt["changelog_records_read"] == written
    assert live_states(worker, reference.states) == reference.states
