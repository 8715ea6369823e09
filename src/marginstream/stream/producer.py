"""faust's Kafka producer with idempotence on and a flush that fails after a failed send."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka

log = logging.getLogger(__name__)


class DeliveryFailed(RuntimeError):
    """A record the worker sent was not stored by Kafka: no input offset may be committed."""


class OrderedProducer(faust_aiokafka.Producer):
    """faust's producer with Kafka's idempotence on, in at-least-once mode too, and a
    flush that fails once any send has failed.

    The state changelog must be a prefix of the writes, in order: an idempotent
    producer cannot leave a gap in a partition (a lost batch followed by a delivered
    one), which retries without idempotence could.

    Sends are not awaited one by one; faust flushes the producer, then commits input
    offsets. A send that fails after it was queued (a rejected or expired batch) only
    sets its future's exception, which faust's flush does not look at: the offset of the
    record that produced it would be committed, and the record never read again. So the
    first failure is kept, and every later flush raises it, which stops the commit and
    crashes the worker; its successor re-reads from the last good commit.
    """

    delivery_error: BaseException | None = None
    CHECK_EVERY = 65536  # sends: how many may wait for a flush before they are looked at

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Futures of sends not yet seen done. They are looked at in one pass per flush: a
        # done-callback per send cost a scheduled call per record (8% of a worker's time).
        self.unchecked: list[asyncio.Future[Any]] = []
        # (topic, partition) -> the highest offset Kafka acknowledged among those seen done.
        self.acknowledged: dict[tuple[str, int], int] = {}

    def _settings_extra(self) -> dict[str, Any]:
        return {"acks": "all", "enable_idempotence": True}

    async def send(self, *args: Any, **kwargs: Any) -> Any:
        future = await super().send(*args, **kwargs)
        self.unchecked.append(future)
        if len(self.unchecked) >= self.CHECK_EVERY:
            self.check_delivered()
        return future

    def check_delivered(self) -> None:
        """Look at every send done since the last look: keep the first failure, and the
        highest acknowledged offset per partition."""
        pending = []
        acknowledged = self.acknowledged
        for future in self.unchecked:
            if not future.done():
                pending.append(future)
                continue
            failure = (
                asyncio.CancelledError("a send was cancelled")
                if future.cancelled()
                else future.exception()
            )
            if failure is None:
                metadata = future.result()
                tp = (metadata.topic, metadata.partition)
                if metadata.offset > acknowledged.get(tp, -1):
                    acknowledged[tp] = metadata.offset
            elif self.delivery_error is None:
                self.delivery_error = failure
                log.error("a record was not delivered: %r; no offset will be committed", failure)
        self.unchecked = pending

    def take_acknowledged(self, topic: str) -> dict[int, int]:
        """partition -> highest acknowledged offset of topic, seen since the last take."""
        taken = {
            tp[1]: self.acknowledged.pop(tp) for tp in list(self.acknowledged) if tp[0] == topic
        }
        return taken

    async def flush(self) -> None:
        await super().flush()
        self.check_delivered()
        if self.delivery_error is not None:
            raise DeliveryFailed(f"a record was not delivered: {self.delivery_error!r}")
