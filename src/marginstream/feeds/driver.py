"""Feeding a live worker: produce records run by run, waiting until each run is applied.

"Applied" is read off Kafka itself: each of the deployment's consumer groups has
committed, on every topic it reads, the end offset of that topic. The risk group
commits its offsets in the same transaction as the state and outputs they produced,
so an applied run has left its alerts and decisions in Kafka.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from marginstream.feeds.segments import segments
from marginstream.stream.topics import TopicNames

Consumed = dict[str, list[str]]  # consumer group -> the topics it commits offsets on


async def end_offsets(
    admin: AIOKafkaAdminClient, bootstrap: str, topics: list[str], **options: Any
) -> dict[TopicPartition, int]:
    """The end offset of every partition of topics (options: the clients' security)."""
    described = await admin.describe_topics(topics)
    partitions = [
        TopicPartition(entry["topic"], p["partition"])
        for entry in described
        for p in entry["partitions"]
    ]
    from aiokafka import AIOKafkaConsumer  # noqa: PLC0415

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **options)
    await consumer.start()
    try:
        return await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()


async def lag(
    admin: AIOKafkaAdminClient, bootstrap: str, consumed: Consumed, **options: Any
) -> int:
    """Records the groups have not committed yet, over every partition of their topics."""
    # Every group's offsets are read before any end offset: the fan-out commits prices
    # only after its copies are acknowledged, so a stale end can never look applied.
    committed = {}
    for group in consumed:
        committed.update(await admin.list_consumer_group_offsets(group))
    inputs = [t for topics in consumed.values() for t in topics]
    ends = await end_offsets(admin, bootstrap, inputs, **options)
    return sum(
        max(0, end - (committed[tp].offset if tp in committed else 0)) for tp, end in ends.items()
    )


class GaveUp(RuntimeError):
    """The caller's give_up() said the group will not catch up (its worker is gone)."""


async def wait_applied(
    bootstrap: str,
    consumed: Consumed,
    timeout: float = 120.0,
    give_up: Callable[[], bool] | None = None,
    **options: Any,
) -> float:
    """Wait until the groups have applied everything produced to them; returns seconds."""
    began = time.monotonic()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **options)
    await admin.start()
    try:
        while True:
            if await lag(admin, bootstrap, consumed, **options) == 0:
                return time.monotonic() - began
            if time.monotonic() - began > timeout:
                raise TimeoutError(f"groups {sorted(consumed)} still behind after {timeout:.0f}s")
            if give_up is not None and give_up():
                raise GaveUp(f"groups {sorted(consumed)} are behind and will not catch up")
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def produce_runs(
    records: Sequence[dict[str, Any]],
    bootstrap: str,
    prefix: str = "",
    names: TopicNames | None = None,
    on_run: Callable[[int, list[dict[str, Any]]], None] | None = None,
    timeout: float = 120.0,
    **options: Any,
) -> None:
    """Produce records; with the deployment's names, wait after each run (see segments)
    until it is applied."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5, **options
    )
    await producer.start()
    try:
        for number, run in enumerate(segments(records) if names else [list(records)]):
            if on_run is not None:
                on_run(number, run)
            sends = [
                await producer.send(
                    prefix + r["topic"],
                    key=None if r.get("key") is None else str(r["key"]).encode(),
                    value=orjson.dumps(r["value"]),
                    partition=r.get("partition"),  # else the key's
                )
                for r in run
            ]
            await asyncio.gather(*sends)
            if names is not None:
                await wait_applied(bootstrap, names.consumed(), timeout, **options)
    finally:
        await producer.stop()
