"""A partition's outputs, sent in its open transaction to the partition Kafka's default
partitioner would pick.

An index move can raise thousands of alerts in one record, and every order has its
decision. aiokafka's own partitioner hashes every key with a murmur2 written in Python,
which cost more than the rest of a send: here the output partition is computed once per
key (core/inputs/keys.py, cached) and passed with the record. A keyless output (the dead letter
of a keyless record) goes to the first partition.

Records are appended to the producer's open batch of their partition, in order. Handing
aiokafka whole batches instead (send_batch) was tried and measured slower: aiokafka
waits, before queueing a batch, until the previous batch of its partition has been sent,
which stalled the processing loop once per output partition and fetch.

The futures go to the transaction's sends, which the commit waits for before committing
(stream/commit.py).
"""

from __future__ import annotations

from marginstream.core.inputs.keys import account_partition
from marginstream.stream.commit import Transaction, classified


class Outputs:
    def __init__(self, transaction: Transaction) -> None:
        self.transaction = transaction
        self.partitions: dict[str, int] = {}  # topic -> its partition count, once known

    async def send(self, topic: str, key: str | None, value: bytes) -> None:
        producer = self.transaction.producer
        try:
            sent = await producer.send(
                topic,
                value,
                key=None if key is None else key.encode(),
                partition=self._partition(topic, key),
            )
        except Exception as error:  # fenced, refused, or a broker away
            raise classified(error) from error
        self.transaction.sends.append(sent)

    def _partition(self, topic: str, key: str | None) -> int | None:
        """None: the topic's partitions are not known yet, and the producer picks."""
        count = self.partitions.get(topic)
        if count is None:
            found = self.transaction.producer.client.cluster.partitions_for_topic(topic)
            if not found:
                return None
            count = self.partitions[topic] = len(found)
        return 0 if key is None else account_partition(key, count)
