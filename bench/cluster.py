"""A broker and isolated engines for benchmarks (the same pieces the tests use)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from marginstream.feeds import driver
from marginstream.localbroker import LocalBroker, free_port
from marginstream.localworker import LocalDeployment


@contextlib.contextmanager
def broker() -> Iterator[str]:
    """$KAFKA_BOOTSTRAP_SERVERS, else a local broker in a temporary directory."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    with tempfile.TemporaryDirectory(prefix="bench-kafka-") as directory:
        local = LocalBroker(port=free_port(), data_dir=Path(directory), heap="1g")
        local.start()
        try:
            yield local.bootstrap
        finally:
            local.stop()


def bench_deployment(bootstrap: str, root: Path, **settings: Any) -> LocalDeployment:
    """An isolated marginstream deployment whose workers log warnings only."""
    return LocalDeployment(bootstrap, root, label="b", log_level="warn", **settings)


async def produce(
    bootstrap: str, records: Sequence[dict[str, Any]], prefix: str = "", rate: float | None = None
) -> float:
    """Send records as fast as the producer goes (or at rate per second); returns seconds."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_batch_size=256 * 1024,
    )
    await producer.start()
    began = time.perf_counter()
    sends = InFlight(5000)
    try:
        for n, record in enumerate(records, start=1):
            key = record.get("key")
            await sends.add(
                await producer.send(
                    prefix + record["topic"],
                    key=None if key is None else str(key).encode(),
                    value=orjson.dumps(record["value"]),
                )
            )
            if rate is not None and n % 50 == 0:
                ahead = n / rate - (time.perf_counter() - began)
                if ahead > 0:
                    await asyncio.sleep(ahead)
        await sends.wait()
    finally:
        await producer.stop()
    return time.perf_counter() - began


class InFlight:
    """Futures of sends, awaited together whenever `limit` are pending, and at the end."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.pending: list[asyncio.Future[Any]] = []

    async def add(self, future: asyncio.Future[Any]) -> None:
        self.pending.append(future)
        if len(self.pending) >= self.limit:
            await self.wait()

    async def wait(self) -> None:
        await asyncio.gather(*self.pending)
        self.pending.clear()


async def create_topics(
    bootstrap: str, names: Sequence[str], partitions: int, config: dict[str, str] | None = None
) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        await admin.create_topics(
            [
                NewTopic(n, partitions, 1, topic_configs=config or {})
                for n in names
                if n not in existing
            ]
        )
    finally:
        await admin.close()


def new_consumer(bootstrap: str, *topics: str, **settings: Any) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        *topics, bootstrap_servers=bootstrap, auto_offset_reset="earliest", **settings
    )


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        ends = await driver.end_offsets(admin, bootstrap, [topic])
    finally:
        await admin.close()
    return {tp.partition: offset for tp, offset in ends.items()}


async def write_span(
    bootstrap: str, topic: str, after: dict[int, int], committed: bool = False
) -> tuple[float, int]:
    """Seconds between the first and the last record written to topic past the offsets in
    after (producer timestamps), and how many records that is: how long a process took to
    write what it wrote, measured as the Quix peer measures itself, from first to last.

    With committed, only records of committed transactions count (what a read_committed
    consumer sees), as for the outputs of a transactional worker.
    """
    ends = await end_offsets(bootstrap, topic)
    consumer = new_consumer(
        bootstrap,
        enable_auto_commit=False,
        isolation_level="read_committed" if committed else "read_uncommitted",
    )
    await consumer.start()
    try:
        first, last, count = float("inf"), float("-inf"), 0
        async with asyncio.timeout(600):  # an open transaction would hold committed reads
            for partition, end in ends.items():
                tp = TopicPartition(topic, partition)
                consumer.assign([tp])
                consumer.seek(tp, after.get(partition, 0))
                while await consumer.position(tp) < end:
                    for message in (await consumer.getmany(tp, timeout_ms=1000)).get(tp, []):
                        if message.offset < end:
                            if message.timestamp_type != 0:
                                raise RuntimeError(f"{topic} does not keep producer timestamps")
                            first = min(first, message.timestamp)
                            last = max(last, message.timestamp)
                            count += 1
        return (last - first) / 1000, count
    finally:
        await consumer.stop()


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]
