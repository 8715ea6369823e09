"""The Faust application: topics, the state table, the fan-out agent, the risk handler,
signals, web views.

    faust -A marginstream.app worker -l info

fan-out: every market record (prices, instruments) is copied, with its origin in
headers, to every partition of the internal market topic, so that the engine of
each account partition sees every market move in the same order.
risk: a handler the consumer's fetch loop awaits for each record of orders, transfers
and the market topic (stream.consumer), which are co-partitioned: partition p of all
three feeds the engine of p.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import faust
from faust.tables import TableManager
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from marginstream.stream import web
from marginstream.stream.consumer import DirectConsumer, DirectHandler
from marginstream.stream.faults import FAULTS
from marginstream.stream.partitions import (
    ORIGIN_OFFSET,
    ORIGIN_PARTITION,
    ORIGIN_TOPIC,
    Shell,
)
from marginstream.stream.producer import OrderedProducer
from marginstream.stream.settings import StreamSettings
from marginstream.stream.store import StateAccess, StateTable
from marginstream.stream.topics import (
    ACCOUNT_INPUTS,
    MARKET_FANOUT,
    MARKET_INPUTS,
    OUTPUTS,
    TopicError,
    TopicNames,
    ensure_topics,
)

log = logging.getLogger(__name__)
RAW: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw"}


class CommitAwareTables(TableManager):
    """faust's table manager, also telling the shell which input offsets were committed."""

    on_committed: Any = None

    def on_commit(self, offsets: Any) -> None:
        super().on_commit(offsets)
        if self.on_committed is not None:
            self.on_committed({(tp.topic, tp.partition): offset for tp, offset in offsets.items()})


class RiskApp(faust.App):
    """faust.App that creates and checks its topics before anything consumes them, and
    whose consumer hands some topics' records straight to a handler."""

    settings: StreamSettings
    direct_handlers: dict[str, DirectHandler]

    async def on_first_start(self) -> None:
        await super().on_first_start()
        quiet_debug_logging()
        try:
            counts = await ensure_topics(self.settings)
        except TopicError as error:
            log.error("marginstream cannot start: %s", error)
            print(f"marginstream: error: {error}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        log.info("topics ready: %s", ", ".join(f"{t}[{n}]" for t, n in sorted(counts.items())))


def quiet_debug_logging() -> None:
    """Make the root logger as strict as its handlers.

    mode sets the root logger to DEBUG and filters in the handlers (its terminal spinner
    handler wants every record), so every logger.debug() call in faust and aiokafka
    builds a record that is then dropped: 8% of a worker's time in a profile.
    """
    root = logging.getLogger()
    levels = [
        handler.level
        for handler in root.handlers
        if handler.level and type(handler).__name__ != "SpinnerHandler"
    ]
    if levels and root.level < min(levels):
        root.setLevel(min(levels))


def create_app(settings: StreamSettings | None = None) -> RiskApp:
    settings = settings or StreamSettings.from_env()
    faust_aiokafka.Transport.Producer = OrderedProducer
    faust_aiokafka.Transport.Consumer = DirectConsumer
    names = TopicNames(settings.topic_prefix)
    partitions = settings.partitions
    app = RiskApp(
        settings.app_id,
        broker=settings.broker_url,
        store="rocksdb://",
        topic_partitions=partitions,
        topic_replication_factor=settings.replication_factor,
        table_standby_replicas=settings.standby_replicas,
        broker_commit_interval=settings.commit_interval,
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=min(3.0, settings.session_timeout / 3),
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        # Wait up to 5 ms to batch produce requests: without it every output and changelog
        # record is its own request, and socket writes dominate a worker's time.
        producer_linger=0.005,
        processing_guarantee="at_least_once",
        stream_wait_empty=True,
        TableManager=CommitAwareTables,
        web_port=settings.web_port,
        **({"web_host": settings.web_host} if settings.web_host else {}),
        **RAW,
    )
    app.settings = settings

    account_inputs = app.topic(*names.risk_inputs(), partitions=partitions, **RAW)
    market_inputs = app.topic(*(names.full(n) for n in MARKET_INPUTS), **RAW)
    fanout = app.topic(names.full(MARKET_FANOUT), partitions=partitions, **RAW)
    for name in OUTPUTS:  # declared, so faust knows them; sent to straight by the producer
        app.topic(names.full(name), **RAW)
    table = StateTable(app, name="state", partitions=partitions, beacon=app.tables.beacon)
    app.tables.add(table)

    state = StateAccess(table)
    shell = Shell(settings.engine, names, state)
    app.shell = shell  # type: ignore[attr-defined]

    changelog = table.changelog_topic.get_topic_name()

    def committed(offsets: dict[tuple[str, int], int]) -> None:
        # Everything sent before the commit was flushed and its futures looked at.
        producer: OrderedProducer = app.producer  # type: ignore[assignment]
        state.save_acknowledged(changelog, producer.take_acknowledged(changelog))
        shell.committed(offsets)

    app.tables.on_committed = committed  # type: ignore[attr-defined]

    @app.agent(market_inputs, name="fanout", concurrency=1)
    async def fan_out(stream: faust.StreamT) -> None:
        async for event in stream.events():
            message = event.message
            headers = [
                (ORIGIN_TOPIC, names.spec(message.topic).encode()),
                (ORIGIN_PARTITION, str(message.partition).encode()),
                (ORIGIN_OFFSET, str(message.offset).encode()),
            ]
            for partition in range(partitions):
                fanout.send_soon(
                    key=message.key, value=message.value, partition=partition, headers=headers
                )

    async def risk(message: Any) -> None:
        producer = app.producer
        FAULTS.fail("engine-error")
        applied = shell.process(message)
        # Straight to the producer, changelog first: it is flushed before every offset
        # commit, so a committed offset has its state and outputs in Kafka.
        for key, value in applied.parts:
            await producer.send(changelog, key, value, applied.partition, None, None)
        for topic, key, value in applied.publications:
            await producer.send(topic, key, value, None, None, None)
        if FAULTS.armed("after-flush"):
            await producer.flush()
            FAULTS.hit("after-flush")

    # The account inputs are subscribed to (and acked) through faust's conductor, but their
    # records go from the fetch loop to `risk`, not through a stream (see stream.consumer).
    app.topics.add(account_inputs)
    app.direct_handlers = dict.fromkeys(names.risk_inputs(), risk)

    follow_rebalances(app, shell, state, names)
    web.register(app, shell, names)
    return app


def follow_rebalances(app: RiskApp, shell: Shell, state: StateAccess, names: TopicNames) -> None:
    """Keep the loaded engines and the local writes in step with the partitions owned."""
    account_topics = set(names.risk_inputs())

    @app.on_partitions_revoked.connect
    async def write_revoked(sender: Any, revoked: set[TP], **kwargs: Any) -> None:
        del sender, revoked, kwargs
        state.write_local()  # before a later owner's changelog could be restored here

    @app.on_partitions_assigned.connect
    async def keep_only_assigned(sender: Any, assigned: set[TP], **kwargs: Any) -> None:
        del sender, kwargs
        mine = {tp.partition for tp in assigned if tp.topic in account_topics}
        shell.drop([p for p in list(shell.engines) if p not in mine])

    @app.on_rebalance_complete.connect
    async def load_assigned(sender: Any, **kwargs: Any) -> None:
        """Build each owned partition's engine as soon as its state is restored."""
        del sender, kwargs
        orders = names.full(ACCOUNT_INPUTS[0])
        for tp in sorted(app.assignor.assigned_actives()):
            if tp.topic == orders:
                shell.engine_for(tp.partition)
