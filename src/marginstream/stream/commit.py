"""The commit protocol: one function, the only place a partition's work becomes durable.

Between two commits a partition's records are applied in memory (core/delivery/unit.py)
and their outputs sent inside the partition's open Kafka transaction. commit() then:

1. seals the work: every part changed since the last commit, once, at the next version,
   and the offset after the last record read from each input; and asks the broker
   whether the partition layout still holds (stream/layout.py), while 2 and 3 go on;
2. sends the parts to the partition's changelog partition, and its commitment record
   (core/commitments/record.py) to the partition's partition of `commitments`, in the
   same transaction;
3. waits until every record of the transaction (outputs and parts) is acknowledged, and
   stops if one was refused: aiokafka would commit a transaction without it;
4. once the layout is confirmed (else LayoutChanged: nothing is committed), adds the
   input offsets to the transaction (the group's offsets move with it);
5. commits the transaction: state, outputs and offsets become visible together, or
   not at all. A producer fenced by the partition's next owner fails here, so a worker
   that lost the partition can never make anything visible;
6. writes the same parts to the local store with the changelog offset after them, in
   one batch (a kill -9 before this leaves the store behind, never ahead: a restore
   reads the rest from the changelog);
7. begins the next transaction.

A failure in 2-5 leaves the transaction open or aborted and the engine ahead of what
Kafka holds: the caller drops the engine and opens the partition again (stream/partition).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiokafka import TopicPartition
from aiokafka.errors import (
    CorruptRecordException,
    IllegalOperation,
    InvalidProducerEpoch,
    InvalidTopicError,
    MessageSizeTooLargeError,
    ProducerFenced,
    RecordListTooLargeError,
    RecordTooLargeError,
    TopicAuthorizationFailedError,
)

from marginstream.stream.faults import FAULTS

if TYPE_CHECKING:
    from aiokafka import AIOKafkaProducer

    from marginstream.core.delivery.store import PartStore
    from marginstream.core.delivery.unit import PartitionState


class PartitionLost(RuntimeError):
    """The partition's transactional id has a newer producer: another worker owns it."""


class DeliveryRefused(RuntimeError):
    """Kafka refused a record for good (too large, not authorised...): a worker error."""


# The producer's transaction ended under it: fenced by a newer producer of the same id
# (or timed out); aiokafka says "not in transaction" when it noticed before the send.
FENCED = (ProducerFenced, InvalidProducerEpoch, IllegalOperation)
# Refused whatever the broker's health: retrying cannot help.
REFUSED = (
    MessageSizeTooLargeError,
    RecordTooLargeError,
    RecordListTooLargeError,
    InvalidTopicError,
    TopicAuthorizationFailedError,
    CorruptRecordException,
)


def classified(error: BaseException) -> BaseException:
    """What a failed send or commit means for the partition: PartitionLost, DeliveryRefused,
    or (anything else: a broker away, a timeout, aiokafka's "unexpected error during batch
    delivery" when a connection drops) the error itself, for the caller to reopen the
    partition from Kafka."""
    if isinstance(error, FENCED):
        return PartitionLost(repr(error))
    if isinstance(error, REFUSED):
        return DeliveryRefused(f"a record was not delivered: {error!r}")
    return error


@dataclass
class Transaction:
    """The open transaction of one owned partition."""

    producer: AIOKafkaProducer
    changelog: str
    partition: int
    group: str
    sends: list[asyncio.Future[Any]]
    commitments: str | None = None  # the commitments topic (None: none sent)
    step: str = "open"  # the last step begun, for a stall's report


async def commit(
    work: PartitionState,
    transaction: Transaction,
    store: PartStore,
    confirm_layout: Callable[[], Awaitable[None]] | None = None,
) -> int:
    """Commit what work applied since the last commit; returns the records committed."""
    producer = transaction.producer
    transaction.step = "1 seal"
    sealed = work.seal()  # 1
    layout = None if confirm_layout is None else asyncio.ensure_future(confirm_layout())
    try:
        transaction.step = "2 send the parts"
        parts = [
            await producer.send(
                transaction.changelog, value, key=key, partition=transaction.partition
            )
            for key, value in sealed.parts
        ]  # 2
        if sealed.commitment is not None and transaction.commitments is not None:
            key = str(transaction.partition).encode()  # placed by its key, as every output
            parts.append(await producer.send(transaction.commitments, sealed.commitment, key=key))
        transaction.step = "3 wait for every acknowledgement"
        await delivered([*transaction.sends, *parts])  # 3
        transaction.sends = []
        changelog = parts[: len(sealed.parts)]
        resume_at = changelog[-1].result().offset + 1 if changelog else store.changelog_offset()
        FAULTS.hit("before-commit")
        offsets = {TopicPartition(s.topic, s.partition): o for s, o in sealed.offsets.items()}
        transaction.step = "4 confirm the layout, add the offsets"
        if layout is not None:
            await layout
    finally:
        if layout is not None and not layout.done():
            layout.cancel()  # the check itself is shared (LayoutWatch.confirm): it goes on
        elif layout is not None and not layout.cancelled():
            layout.exception()  # raised above if it failed; else retrieved, not left unread
    if offsets:  # none after closing work alone (RiskEngine.settle): no record was read
        await producer.send_offsets_to_transaction(offsets, transaction.group)  # 4
    transaction.step = "5 commit"
    await producer.commit_transaction()  # 5
    FAULTS.hit("after-commit")
    transaction.step = "6 write the local store"
    store.write(sealed.parts, resume_at)  # 6
    transaction.step = "7 begin the next transaction"
    await producer.begin_transaction()  # 7
    transaction.step = "committed"
    return sealed.records


async def delivered(sends: list[asyncio.Future[Any]]) -> None:
    """Wait for every send; raise (classified) for the first that failed."""
    for result in await asyncio.gather(*sends, return_exceptions=True):
        if isinstance(result, BaseException):
            error = classified(result)
            if error is result:
                raise result
            raise error from result
