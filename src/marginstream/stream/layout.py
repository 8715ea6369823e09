"""The partition layout a deployment runs on, and the watch that stops a worker the
moment it changes.

An account lives on the partition murmur2(key) % count of `orders` and `transfers`, and
its state on the same partition of the changelog. Kafka lets an operator add partitions
to a topic at any time (`kafka-topics --alter --partitions`), and producers follow at
their next metadata refresh: from then on some accounts' records land on partitions the
deployment's state does not hold, and a running worker, whose group assignment covers
the partitions it started with, never reads them. Nothing fails, nothing is
dead-lettered: the records are stranded. So a worker does not trust the layout it
started with. It asks the broker for the partition count of every topic it reads or
writes:

- before every commit: a commit goes ahead only after a check *sent after* the last
  record it takes was applied found the layout unchanged. A record produced after a
  change was fetched after it, hence after any check that still saw the old layout:
  such a record is never committed on the old layout (what it was applied to is
  aborted). One metadata request per commit round, shared by the partitions committing
  together and overlapped with the commit's own acknowledgements (stream/commit.py);
- every WATCH_SECONDS besides, so that an idle worker notices too.

On a change the worker stops processing, says `failed` in /health/ with the topic and
both counts, aborts what it had not committed and exits (stream/runner.py). The records
stay in Kafka for what the operator does next (docs/operations.md: Changing the partition count).
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka.errors import KafkaError

WATCH_SECONDS = 1.0  # an idle worker looks at least this often
CHECK_TIMEOUT = 10.0  # seconds one metadata request may take
UNKNOWN_TOPIC = 3  # Kafka's UNKNOWN_TOPIC_OR_PARTITION: the topic is gone


class LayoutChanged(RuntimeError):
    """A topic of the deployment no longer has the partition count the worker runs on."""


@dataclass(frozen=True)
class Layout:
    """The partition count of every topic a deployment reads or writes, as found when
    the worker started (full topic names)."""

    counts: Mapping[str, int]

    def changes(self, found: Mapping[str, int]) -> list[str]:
        """One phrase per topic whose count is not the layout's: "orders has 8 partitions,
        not 4" (0: the topic is gone)."""
        return [
            f"{topic} has {found.get(topic, 0)} partitions, not {count}"
            for topic, count in sorted(self.counts.items())
            if found.get(topic, 0) != count
        ]


def partition_counts(response: Any) -> dict[str, int]:
    """The partition counts a MetadataResponse gives (a topic Kafka does not know: 0).

    A topic with another error (a leader being elected) still lists its partitions."""
    counts: dict[str, int] = {}
    for topic in response.to_object()["topics"]:
        name = topic["topic"]
        if topic["error_code"] == UNKNOWN_TOPIC:
            counts[name] = 0
        elif topic["partitions"]:
            counts[name] = len(topic["partitions"])
        else:
            raise KafkaError(f"no partitions known for {name} (error {topic['error_code']})")
    return counts


class LayoutWatch:
    """Checks the layout against the broker; concurrent callers share one check."""

    def __init__(self, layout: Layout, bootstrap_servers: str, options: dict[str, Any]) -> None:
        self.layout = layout
        self.bootstrap_servers, self.options = bootstrap_servers, options
        self.changed: str | None = None  # why the layout no longer holds, once found
        self.confirmed_sent = -math.inf  # when the last check that found it unchanged was sent
        self.checks = 0
        self._check: tuple[float, asyncio.Future[None]] | None = None  # (sent, the check)
        self._client: Any = None

    async def start(self) -> None:
        from aiokafka.client import AIOKafkaClient  # noqa: PLC0415 (made in the running loop)

        # Its own connections: a request on the consumer's would queue behind a long fetch.
        self._client = AIOKafkaClient(bootstrap_servers=self.bootstrap_servers, **self.options)
        await self._client.bootstrap()

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.close()

    async def confirm(self, since: float) -> None:
        """Return once a check sent at or after `since` (time.monotonic) found the layout
        unchanged; raise LayoutChanged if the layout has changed, KafkaError or
        TimeoutError if the broker could not say."""
        if self.changed is not None:
            raise LayoutChanged(self.changed)
        if self.confirmed_sent >= since:
            return
        if self._check is None or self._check[0] < since or self._check[1].done():
            sent = time.monotonic()
            check = asyncio.ensure_future(self._ask(sent))
            check.add_done_callback(_retrieved)  # its waiters may all have been cancelled
            self._check = (sent, check)
        await asyncio.shield(self._check[1])  # a waiter cancelled leaves the check to others

    async def _ask(self, sent: float) -> None:
        from aiokafka.protocol.metadata import MetadataRequest  # noqa: PLC0415

        # Never auto-create: a topic deleted under the worker is a change, not a new topic.
        request = MetadataRequest(list(self.layout.counts), allow_auto_topic_creation=False)
        response = await asyncio.wait_for(self._any_broker(request), CHECK_TIMEOUT)
        self.checks += 1
        changes = self.layout.changes(partition_counts(response))
        if changes:
            self.changed = self.changed or (
                "the partition layout changed under the worker: " + "; ".join(changes)
            )
            raise LayoutChanged(self.changed)
        self.confirmed_sent = max(self.confirmed_sent, sent)

    async def _any_broker(self, request: Any) -> Any:
        """The first answer of the brokers, tried in random order: one broker away must not
        fail commits (a failed check fails its commit, which reopens the partition)."""
        nodes = [broker.nodeId for broker in self._client.cluster.brokers()]
        random.shuffle(nodes)
        failures = []
        for node in nodes:
            try:
                return await self._client.send(node, request)
            except (KafkaError, OSError) as error:
                failures.append(error)
        raise KafkaError(f"no broker answered a metadata request: {failures!r}")


def _retrieved(check: asyncio.Future[None]) -> None:
    if not check.cancelled():
        check.exception()
