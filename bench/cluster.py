"""A broker and isolated engines for benchmarks (the same pieces the tests use)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from marginstream.feeds.driver import group_topics, lag, wait_applied
from marginstream.localbroker import LocalBroker, free_port
from marginstream.localworker import LocalWorker


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


@dataclass
class Engine:
    """One isolated marginstream deployment (own topic prefix and app id)."""

    bootstrap: str
    root: Path
    partitions: int = 8
    extra_env: dict[str, str] = field(default_factory=dict)
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    workers: list[LocalWorker] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        return f"b{self.tag}-"

    @property
    def app_id(self) -> str:
        return f"bench-{self.tag}"

    def env(self) -> dict[str, str]:
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "MARGINSTREAM_TOPIC_PREFIX": self.prefix,
            "MARGINSTREAM_APP_ID": self.app_id,
            "MARGINSTREAM_PARTITIONS": str(self.partitions),
            "MARGINSTREAM_SESSION_TIMEOUT": "6",
            **self.extra_env,
        }

    def worker(self, name: str) -> LocalWorker:
        worker = LocalWorker(
            self.root / name / "data",
            self.root / name / "worker.log",
            self.env(),
            log_level="warn",
        )
        self.workers.append(worker)
        return worker

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()

    def wait_applied(self, timeout: float = 3600.0) -> float:
        return asyncio.run(
            wait_applied(self.bootstrap, self.app_id, group_topics(self.prefix), timeout)
        )

    def lag(self) -> int:
        async def measure() -> int:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
            await admin.start()
            try:
                return await lag(admin, self.bootstrap, self.app_id, group_topics(self.prefix))
            finally:
                await admin.close()

        return asyncio.run(measure())


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
    try:
        pending = []
        for n, record in enumerate(records, start=1):
            key = record.get("key")
            pending.append(
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
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.perf_counter() - began


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


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]
