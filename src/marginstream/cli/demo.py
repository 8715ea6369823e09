"""`marginstream demo`: a local broker, a worker and the scripted market, alerts shown live.

Everything it starts (broker, worker) it stops again, on success, failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from marginstream.cli.errors import CommandError
from marginstream.feeds.demo import DemoMarket, demo_events
from marginstream.localbroker import LocalBroker, free_port
from marginstream.localworker import LocalWorker, WorkerError

PREFIX = "demo-"
APP_ID = "marginstream-demo"
COLOURS = {"margin_call": "\033[33m", "liquidation": "\033[31m", "recovered": "\033[32m"}
RESET = "\033[0m"


def _money(text: str) -> str:
    value = float(text)
    return "inf" if value == float("inf") else f"{value:,.2f}"


def alert_line(alert: dict[str, Any]) -> str:
    kind = alert["type"]
    positions = ", ".join(
        f"{p['symbol']} {p['qty']} @ {_money(p['entry_price'])} mark {_money(p['mark'])}"
        for p in alert["positions"]
    )
    ratio = alert["margin_ratio"]
    ratio = ratio if ratio == "inf" else f"{float(ratio):.2f}"
    return (
        f"{COLOURS.get(kind, '')}{kind.upper():<12}{RESET} {alert['account']:<11} "
        f"ratio {ratio:>5}  equity {_money(alert['equity']):>12}  "
        f"MM {_money(alert['maintenance_margin']):>11}  {positions}"
    )


def order_line(order: dict[str, Any]) -> str:
    before, after = order["before"]["margin_ratio"], order["after"]["margin_ratio"]
    return (
        f"  \033[35mCLOSE\033[0m {order['account']:<11} {order['side']} {order['qty']} "
        f"{order['symbol']} @ {_money(order['price'])} (bankrupt at "
        f"{_money(order['bankruptcy_price']) if order['bankruptcy_price'] else 'none'}): "
        f"ratio {_ratio(before)} -> {_ratio(after)}"
    )


def _ratio(text: str) -> str:
    return text if text == "inf" else f"{float(text):.2f}"


async def watch(bootstrap: str, counts: Counter) -> None:
    from aiokafka import AIOKafkaConsumer  # noqa: PLC0415

    consumer = AIOKafkaConsumer(
        *(PREFIX + t for t in ("liquidations", "decisions", "dead-letters", "liquidation-orders")),
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        isolation_level="read_committed",  # the output contract (docs/records-and-topics.md)
    )
    await consumer.start()
    try:
        while True:
            for tp, messages in (await consumer.getmany(timeout_ms=200)).items():
                for message in messages:
                    value = orjson.loads(message.value)
                    topic = tp.topic[len(PREFIX) :]
                    if topic == "liquidations":
                        counts[value["type"]] += 1
                        print(alert_line(value), flush=True)
                    elif topic == "liquidation-orders":
                        counts[value["type"].replace("_", " ") + "s"] += 1
                        if value["type"] == "liquidation_order":
                            print(order_line(value), flush=True)
                    elif topic == "decisions":
                        counts["accepted" if value["accepted"] else "refused"] += 1
                    else:
                        counts["dead letters"] += 1
    finally:
        await consumer.stop()


def describe_run(run: list[dict[str, Any]]) -> str | None:
    first = run[0]
    value = first["value"]
    if first["topic"] == "prices" and value["type"] == "index":
        return f"--- index {value['underlying']} -> {float(value['price']):,.2f}"
    if first["topic"] == "prices" and value["type"] == "funding":
        return f"--- funding {value['symbol']} rate {value['rate']}"
    if len(run) > 1:
        return f"--- {len(run)} {first['topic']} records"
    return None


async def feed(bootstrap: str, records: list[dict[str, Any]], counts: Counter) -> None:
    from marginstream.feeds.driver import produce_runs  # noqa: PLC0415
    from marginstream.stream.topics import TopicNames  # noqa: PLC0415

    watcher = asyncio.create_task(watch(bootstrap, counts))

    def announce(_: int, run: list[dict[str, Any]]) -> None:
        line = describe_run(run)
        if line:
            print(line, flush=True)

    try:
        await produce_runs(records, bootstrap, PREFIX, TopicNames(PREFIX, APP_ID), on_run=announce)
        await asyncio.sleep(1.0)  # the last alerts
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)


def _interrupted(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def run(args: argparse.Namespace) -> int:
    # SIGTERM (kill, a supervisor) and SIGHUP (the terminal closed) stop the demo as
    # Ctrl-C does: through the finally below, which stops the worker and the broker (a
    # 512 MiB Java process otherwise left behind) and removes the temporary directory.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupted)
    records = list(demo_events(DemoMarket(accounts=args.accounts)))
    with tempfile.TemporaryDirectory(prefix="marginstream-demo-") as directory:
        root = Path(directory)
        broker = LocalBroker(port=args.port or free_port(), data_dir=root / "kafka")
        print(f"starting Kafka on {broker.bootstrap} ...", flush=True)
        broker.start()
        worker = LocalWorker(
            root / "worker-data",
            root / "worker.log",
            {
                "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
                "MARGINSTREAM_TOPIC_PREFIX": PREFIX,
                "MARGINSTREAM_APP_ID": APP_ID,
                "MARGINSTREAM_COMMIT_INTERVAL": "0.2",
            },
        )
        try:
            print(f"starting a worker (web view on {worker.url}, risk page {worker.url}/risk/)")
            worker.start()
            try:
                worker.wait_ready()
            except WorkerError as error:
                raise CommandError(str(error)) from None
            print(
                f"feeding {len(records)} records: {args.accounts} accounts open leveraged "
                "perpetuals and short puts; the index falls 25% in steps and recovers"
            )
            counts: Counter = Counter()
            asyncio.run(feed(broker.bootstrap, records, counts))
            print("--- done:", ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
            _, account = worker.get("/accounts/acct-00001/")
            print("GET /accounts/acct-00001/ ->", json.dumps(account)[:400], "...")
            if args.stay:
                print(f"the risk page stays at {worker.url}/risk/ until Ctrl-C", flush=True)
                with contextlib.suppress(KeyboardInterrupt):
                    while worker.alive():
                        time.sleep(1)
        finally:
            worker.stop()
            broker.stop()
            print("stopped the worker and Kafka", flush=True)
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "demo", help="run a local broker, a worker and the demo market, showing alerts live"
    )
    parser.add_argument("--accounts", type=int, default=300, help="trading accounts")
    parser.add_argument("--port", type=int, help="broker port (default: a free one)")
    parser.add_argument(
        "--stay", action="store_true", help="keep the worker after the feed, until Ctrl-C"
    )
    parser.set_defaults(run=run)
