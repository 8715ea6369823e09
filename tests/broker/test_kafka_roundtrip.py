"""The broker really delivers: every record produced to an 8-partition topic is consumed."""

from __future__ import annotations

import asyncio
from collections import defaultdict

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

RECORDS = 10_000
PARTITIONS = 8


async def _roundtrip(bootstrap: str, topic: str) -> tuple[int, dict[int, list[int]]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    partition_count = len(described[0]["partitions"])

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        sends = [
            await producer.send(topic, key=f"account-{i % 97}".encode(), value=str(i).encode())
            for i in range(RECORDS)
        ]
        await asyncio.gather(*sends)
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    by_partition: dict[int, list[int]] = defaultdict(list)
    try:
        received = 0
        async with asyncio.timeout(60):
            while received < RECORDS:
                batches = await consumer.getmany(timeout_ms=1000)
                for tp, messages in batches.items():
                    by_partition[tp.partition].extend(int(m.value) for m in messages)
                    received += len(messages)
        # Nothing beyond the records we sent may follow.
        extra = await consumer.getmany(timeout_ms=500)
        assert not any(extra.values())
    finally:
        await consumer.stop()
    return partition_count, by_partition


def test_every_record_arrives_once_on_eight_partitions(kafka_bootstrap: str, topic_name: str):
    partition_count, by_partition = asyncio.run(_roundtrip(kafka_bootstrap, topic_name))

    assert partition_count == PARTITIONS
    values = [v for vs in by_partition.values() for v in vs]
    assert sorted(values) == list(range(RECORDS))  # each one, exactly once
    # Keys spread over every partition, and each partition keeps the order of its sends.
    assert set(by_partition) == set(range(PARTITIONS))
    for partition_values in by_partition.values():
        assert partition_values == sorted(partition_values)
