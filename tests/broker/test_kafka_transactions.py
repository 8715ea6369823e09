"""Kafka transactions work on the one-node broker: a read_committed consumer sees only commits."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic


async def _read_all(bootstrap: str, topic: str, isolation_level: str) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level=isolation_level,
    )
    await consumer.start()
    try:
        # Read up to the end as this isolation level sees it (the LSO for read_committed).
        partitions = consumer.assignment()
        while not partitions:
            await asyncio.sleep(0.05)
            partitions = consumer.assignment()
        ends = await consumer.end_offsets(list(partitions))
        values: list[bytes] = []
        async with asyncio.timeout(30):
            while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
                batches = await consumer.getmany(timeout_ms=500)
                values.extend(m.value for messages in batches.values() for m in messages)
        return values
    finally:
        await consumer.stop()


async def _commit_one_abort_one(bootstrap: str, topic: str) -> tuple[list[bytes], list[bytes]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"{topic}-tx")
    await producer.start()
    try:
        async with producer.transaction():
            await producer.send(topic, b"committed-1")
            await producer.send(topic, b"committed-2")
        await producer.begin_transaction()
        await producer.send_and_wait(topic, b"aborted-1")
        await producer.send_and_wait(topic, b"aborted-2")
        await producer.abort_transaction()
    finally:
        await producer.stop()

    committed = await _read_all(bootstrap, topic, "read_committed")
    uncommitted = await _read_all(bootstrap, topic, "read_uncommitted")
    return committed, uncommitted


def test_read_committed_sees_only_the_committed_transaction(kafka_bootstrap: str, topic_name: str):
    committed, uncommitted = asyncio.run(_commit_one_abort_one(kafka_bootstrap, topic_name))

    assert committed == [b"committed-1", b"committed-2"]
    # The aborted records did reach the log: only the isolation level hides them.
    assert uncommitted == [b"committed-1", b"committed-2", b"aborted-1", b"aborted-2"]
