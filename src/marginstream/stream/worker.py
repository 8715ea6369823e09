"""The Faust application: the worker command, its lifecycle, signals and web views.

    faust -A marginstream.app worker -l info

Faust runs the process and serves the web views; the Kafka side is ours
(stream/runner.py): a consumer group with a co-partitioning assignor, one
transactional producer per owned partition, and a restore path that reads committed
changelog records only. faust's own consumer, tables and exactly-once mode are not
started: its tables cannot fence a worker that lost its partitions (see
docs/failure-model.md).

At start the worker rate-limits repeated log lines (stream/quietlog.py) and bounds its
shutdown: a SIGTERM (or SIGINT) marks it stopping (/health/ says "failed") and arms a
watchdog that ends the process, with one line and status 1, if the clean stop has not
ended it 8 seconds later. A clean stop aborts nothing that a kill -9 would not: the
watchdog is as safe as the kill it stands for.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import NoReturn

import faust
from aiokafka.errors import KafkaError
from faust.app.base import BootStrategy
from mode import ServiceT

from marginstream.stream import gather, quietlog, riskpage, web
from marginstream.stream.brokerlimits import beyond_broker_limits
from marginstream.stream.runner import RiskService
from marginstream.stream.security import refusal
from marginstream.stream.settings import StreamSettings
from marginstream.stream.topics import TopicError, TopicNames, ensure_topics

log = logging.getLogger(__name__)

SHUTDOWN_SECONDS = 8.0  # from a SIGTERM to the watchdog's exit (SIGTERM to gone: < 10 s)


# The settings of faust's own views (SafeWeb serves none of them whatever they say).
FAUST_VIEWS = ("web_tables_enabled", "web_router_enabled", "web_stats_enabled",
               "web_graph_enabled", "web_metrics_enabled")  # fmt: skip


class WebOnly(BootStrategy):
    """faust's services minus its Kafka consumer, producer and tables."""

    enable_kafka = False


class RiskApp(faust.App):
    BootStrategy = WebOnly
    settings: StreamSettings
    risk: RiskService

    def on_init_dependencies(self) -> Iterable[ServiceT]:
        return [*super().on_init_dependencies(), self.risk]

    async def on_first_start(self) -> None:
        await super().on_first_start()
        quiet_debug_logging()
        quietlog.install()
        bound_shutdown(self.risk)
        _check_web_port(self.conf.web_bind, self.conf.web_port)  # faust's web starts later
        try:
            if (beyond := await beyond_broker_limits(self.settings)) is not None:
                _cannot_start(beyond)  # before any topic is made with settings Kafka refuses
            layout = await ensure_topics(self.settings)
        except TopicError as error:
            _cannot_start(str(error))
        except KafkaError as error:
            settings = self.settings
            reason = await refusal(settings.bootstrap_servers, settings.security)
            _cannot_start(
                reason or f"cannot reach Kafka at {settings.bootstrap_servers}: {error!r}"
            )
        log.info("topics ready: %s",
                 ", ".join(f"{t}[{n}]" for t, n in sorted(layout.counts.items())))  # fmt: skip
        # Known only now that faust has read the command line (--datadir, --web-port).
        conf = self.conf
        self.risk.configure(
            url=web.routing_url(conf.web_host, conf.web_bind, conf.web_port),
            stores_root=Path(conf.tabledir) / "marginstream-state",
            layout=layout,
        )
        log.info("web views on %s:%d, routed to as %s", conf.web_bind, conf.web_port,
                 self.risk.url)  # fmt: skip

    def _new_web(self) -> web.SafeWeb:
        return web.SafeWeb(self)  # none of faust's own views (web.py)

    async def _wait_for_table_recovery_completed(self) -> bool:
        return False  # no faust tables: our partitions open themselves (stream/partition.py)


def _check_web_port(host: str, port: int) -> None:
    """One line and status 2 if the web port is taken (aiohttp would print a traceback)."""
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as error:
        _cannot_start(f"cannot listen on {host}:{port} for the web views: {error.strerror}")


def _cannot_start(reason: str) -> NoReturn:
    log.error("marginstream cannot start: %s", reason)
    print(f"marginstream: error: {reason}", file=sys.__stderr__ or sys.stderr, flush=True)
    raise SystemExit(2)


def bound_shutdown(service: RiskService, seconds: float = SHUTDOWN_SECONDS) -> None:
    """On SIGTERM or SIGINT: mark service stopping and arm the watchdog, then let the
    signal go on to faust's handler (the event loop's, which asyncio calls through its
    wakeup descriptor whatever the Python-level handler is)."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(signum)

        def on_signal(number: int, frame: object, previous: object = previous) -> None:
            service.stopping = True
            _arm_watchdog(seconds, signal.Signals(number).name)
            if callable(previous):
                previous(number, frame)

        signal.signal(signum, on_signal)


_watchdog: list[threading.Timer] = []


def _arm_watchdog(seconds: float, why: str) -> None:
    if _watchdog:
        return
    timer = threading.Timer(seconds, _expire, args=(seconds, why))
    timer.daemon = True
    _watchdog.append(timer)
    timer.start()


def _expire(seconds: float, why: str) -> None:
    print(f"marginstream: worker stops: still running {seconds:.0f}s after {why}; exiting now",
          file=sys.__stderr__ or sys.stderr, flush=True)  # fmt: skip
    os._exit(1)


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
    names = TopicNames(settings.topic_prefix, settings.app_id)
    app = RiskApp(
        names.deployment,
        broker=settings.broker_url,
        broker_credentials=settings.security.faust_credentials(),
        web_port=settings.web_port,
        web_bind=settings.web_bind,  # faust's --web-bind and WEB_BIND still win
        **({"web_host": settings.web_host} if settings.web_host else {}),
        **dict.fromkeys(FAUST_VIEWS, False),
    )
    app.settings = settings
    app.risk = RiskService(settings, loop=app.loop, beacon=app.beacon)
    web.register(app, app.risk)
    gather.register(app, app.risk)
    riskpage.register(app, app.risk)
    return app
