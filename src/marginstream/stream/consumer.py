"""faust's Kafka consumer, handing the account partitions' records straight to the risk engine.

faust delivers every record through a pair of tasks (`Service.wait_first` on the record's
callback and on the flow-suspension event), the conductor's channel queue and the agent's
stream: an agent that does nothing costs about 230 µs of CPU per record here, where a bare
aiokafka loop spends under 20 µs (BENCHMARKS.md). Records of a topic with a direct handler
skip all of that: the fetch loop awaits the handler, then acks the record. The acked
offsets are all faust's commit reads, so commits, the producer flush before them,
rebalances and recovery work as before. Records of other topics (the market fan-out
agent's) take faust's usual path.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import Message

log = logging.getLogger(__name__)

DirectHandler = Callable[[Message], Awaitable[None]]

YIELD_EVERY = 100  # records between two returns to the event loop (as faust does)


class DirectConsumer(faust_aiokafka.Consumer):
    """Consumer whose fetch loop calls `app.direct_handlers[topic]` for those topics."""

    async def _drain_messages(self, fetcher: Any) -> None:
        try:
            await self._drain(fetcher)
        except self.consumer_stopped_errors:
            if not self.transport.app.should_stop:
                raise
        except asyncio.CancelledError:
            if not self.transport.app.should_stop:
                raise
        except Exception:
            log.exception("the fetch loop stopped on an error; the worker stops")
            raise

    async def _drain(self, fetcher: Any) -> None:
        direct: dict[str, DirectHandler] = getattr(self.app, "direct_handlers", {})
        callback, getmany, ack = self.callback, self.getmany, self.ack
        read_offsets = self._read_offset
        since_yield = 0
        while not (self._stopped.is_set() or fetcher._stopped.is_set()):
            batch = getmany(timeout=1.0)
            await asyncio.sleep(0)
            if self.should_stop:
                continue
            async for tp, message in batch:
                since_yield += 1
                if since_yield > YIELD_EVERY:
                    await asyncio.sleep(0)
                    since_yield = 0
                read = read_offsets[tp]
                if read is not None and message.offset < read:
                    continue  # already handed over before a seek back
                await self._before(tp, message, read)
                handler = direct.get(message.topic)
                if handler is not None:
                    await handler(message)
                    ack(message)
                else:
                    await self.wait_first(callback(message), self.suspend_flow.wait())
                read_offsets[tp] = message.offset

    async def _before(self, tp: Any, message: Message, read: int | None) -> None:
        """faust's bookkeeping before a record is handed over: offset gaps, commit_every."""
        if read and message.offset - read > 1 and self.app.topics.acks_enabled_for(tp.topic):
            # A gap (compaction, transaction markers): commits may pass over it.
            await self._add_gap(tp, read + 1, message.offset)
        if self._commit_every is not None and self._n_acked >= self._commit_every:
            self._n_acked = 0
            await self.commit()
