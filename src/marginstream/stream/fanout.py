"""The market fan-out: every record of prices and instruments, copied to every partition.

Each account partition's engine must see every market move, interleaved with its own
account records in one order it can commit. The fan-out copies each market record, with
its origin (topic, partition, offset) in headers, to every partition of the internal
market topic, and commits its own group's offsets once the copies are acknowledged.

A record over the size limit is copied cut to its first KiB, with its length and sha256
in headers: the copies stay within what Kafka accepts, and each partition dead-letters
it as it would the original.

It copies nothing once the worker has found the partition layout changed
(stream/layout.py), nor a record of a partition the layout lacks (prices grown past
MARGINSTREAM_MARKET_PARTITIONS, seen before the watch says so): its offsets are not
committed, and whoever runs on the new layout copies it.

It is at least once on purpose: a copy made twice (a crash between the copies and the
commit, or a paused fan-out that resumes) reaches an engine that has already seen its
origin offset, and the replay guard skips it (core/delivery/guard.py).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from marginstream.core.inputs import intake
from marginstream.stream.commit import delivered
from marginstream.stream.layout import LayoutWatch
from marginstream.stream.partition import origin_headers
from marginstream.stream.settings import FETCH_MAX_WAIT_MS, StreamSettings
from marginstream.stream.topics import TopicNames

log = logging.getLogger(__name__)


class FanOut:
    consumer: AIOKafkaConsumer
    producer: AIOKafkaProducer

    def __init__(self, settings: StreamSettings, names: TopicNames) -> None:
        self.settings, self.names = settings, names
        self.copied = 0
        self.layout: LayoutWatch | None = None  # the worker's watch, once it runs

    async def start(self) -> None:
        settings, names = self.settings, self.names
        self.consumer = AIOKafkaConsumer(
            *names.market_inputs(),
            bootstrap_servers=settings.bootstrap_servers,
            group_id=names.fanout_group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            session_timeout_ms=int(settings.session_timeout * 1000),
            heartbeat_interval_ms=settings.heartbeat_ms,
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
            **settings.kafka_options(),
        )
        self.producer = AIOKafkaProducer(
            bootstrap_servers=settings.bootstrap_servers,
            acks="all",
            enable_idempotence=True,
            linger_ms=2,
            **settings.kafka_options(),
        )
        await self.producer.start()
        await self.consumer.start()

    async def stop(self) -> None:
        await self.consumer.stop()
        await self.producer.stop()

    def _outside_layout(self, batches: dict[TopicPartition, Any]) -> bool:
        """Drop from batches the partitions the layout lacks (paused, never committed: read
        again by whoever runs on that layout); True if nothing may be copied at all."""
        for tp in [tp for tp in batches if tp.partition >= self.settings.market_partitions]:
            self.consumer.pause(tp)
            del batches[tp]
        return self.layout is not None and self.layout.changed is not None

    async def run(self) -> None:
        names, partitions = self.names, self.settings.partitions
        limit = self.settings.max_record_bytes
        while True:
            batches = await self.consumer.getmany(timeout_ms=200, max_records=2000)
            if self._outside_layout(batches):
                await asyncio.sleep(0.2)
                continue
            if not batches:
                continue
            sends = []
            for tp, messages in batches.items():
                origin = names.spec(tp.topic).encode()
                for message in messages:
                    value, whole = intake.cut(message.key, message.value, limit)
                    headers = origin_headers(origin, message.partition, message.offset, whole)
                    for partition in range(partitions):
                        sends.append(
                            await self.producer.send(
                                names.fanout, value, key=message.key,
                                partition=partition, headers=headers,
                            )
                        )  # fmt: skip
            try:
                await delivered(sends)
            except (KafkaError, TimeoutError) as error:  # a broker away: copy the batch again
                log.warning("fan-out copies failed: %r; copying again", error)
                for tp, messages in batches.items():
                    if messages:
                        self.consumer.seek(tp, messages[0].offset)
                await asyncio.sleep(1.0)
                continue
            self.copied += len(sends)
            offsets = {
                TopicPartition(tp.topic, tp.partition): messages[-1].offset + 1
                for tp, messages in batches.items()
                if messages
            }
            try:
                await self.consumer.commit(offsets)
            except KafkaError as error:
                # A rebalance or a broker away: whoever reads these records next copies
                # them again, which the engines' replay guard makes harmless.
                log.info("fan-out commit skipped: %r", error)
            await asyncio.sleep(0)
