"""A partition's outputs, sent as Kafka record batches in its open transaction.

An index move can raise thousands of alerts in one record, and every order has its
decision: aiokafka's send() costs a coroutine, a metadata check and a Python murmur2 per
record. Here each output is appended to a batch per (topic, partition) of the outputs
(the partition Kafka's default partitioner would pick, computed once per key), and each
batch is handed to the producer once, at the end of a fetch or when it is full. The
records of one (topic, partition) keep their order: a batch is queued after everything
queued before it for that partition.

The futures go to the transaction's sends, which the commit waits for before committing
(stream/commit.py): a refused batch fails the commit like a refused record.
"""

from __future__ import annotations

from typing import Any

from marginstream.core.keys import account_partition
from marginstream.stream.commit import Transaction, classified


class OutputBatches:
    def __init__(self, transaction: Transaction) -> None:
        self.transaction = transaction
        self.producer = transaction.producer
        self.partitions: dict[str, int] = {}  # topic -> its partition count, once known
        self.batches: dict[tuple[str, int], Any] = {}  # (topic, partition) -> open batch

    async def add(self, topic: str, key: str | None, value: bytes) -> None:
        raw_key = None if key is None else key.encode()
        partition = self._partition(topic, key)
        if partition is None:  # the topic's partitions not known yet: the producer asks
            try:
                sent = await self.producer.send(topic, value, key=raw_key)
            except Exception as error:  # fenced, refused, or a broker away
                raise classified(error) from error
            self.transaction.sends.append(sent)
            return
        batch = self.batches.get((topic, partition))
        if batch is None:
            batch = self.batches[(topic, partition)] = self.producer.create_batch()
        if batch.append(timestamp=None, key=raw_key, value=value) is None:  # full
            await self._submit(topic, partition, batch)
            batch = self.batches[(topic, partition)] = self.producer.create_batch()
            if batch.append(timestamp=None, key=raw_key, value=value) is None:
                raise ValueError(f"an output of {len(value)} bytes does not fit a batch")

    async def flush(self) -> None:
        """Hand every open batch to the producer."""
        batches, self.batches = self.batches, {}
        for (topic, partition), batch in batches.items():
            await self._submit(topic, partition, batch)

    async def _submit(self, topic: str, partition: int, batch: Any) -> None:
        try:
            sent = await self.producer.send_batch(batch, topic, partition=partition)
        except Exception as error:
            raise classified(error) from error
        self.transaction.sends.append(sent)

    def _partition(self, topic: str, key: str | None) -> int | None:
        count = self.partitions.get(topic)
        if count is None:
            found = self.producer.client.cluster.partitions_for_topic(topic)
            if not found:
                return None
            count = self.partitions[topic] = len(found)
        return 0 if key is None else account_partition(key, count)  # keyless: the first
