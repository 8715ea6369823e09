"""Latency through one worker, measured from producing a record to consuming its outputs:

- re-margining: an index move re-prices an option chain and re-margins every holder
  (N accounts); latency to the *last* alert it causes, p50 and p99 over the moves;
- decisions: orders offered at fixed rates; latency from each order to its decision.

The worker starts from a state changelog written the way workers write it (N accounts
built by the core offline), so the set-up does not dominate the run.

Outputs are read as the output contract says (read_committed): a worker publishes a
record's outputs in the transaction that commits it, so every latency here includes the
wait for that commit (MARGINSTREAM_COMMIT_INTERVAL, 0.1 s by default, and the commit).

    python -m bench.latency --accounts 100000 --moves 20 --rates 1000 10000
    python -m bench.latency --portfolio 0.5 --rates --name latency-portfolio  # half on PM
    python -m bench.latency --rates --watch --name latency-watched  # the risk page open

--watch polls GET /risk/summary every second during the moves, as an open risk page
does, and /metrics every 5 s, as Prometheus would: what watching costs the moves.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import threading
import time
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from bench.cluster import bench_deployment, broker, new_consumer, percentile
from bench.common import write_result
from bench.recovery import write_parts
from bench.remargin import T0, build
from marginstream.core import Envelope, RiskEngine
from marginstream.core.delivery.parts import StateKey
from marginstream.localworker import LocalDeployment


def index_value(price: float, ts: int) -> dict[str, Any]:
    return {"type": "index", "underlying": "BTC", "price": f"{price:.2f}", "ts": ts}


ALERTS, CLOSING = "liquidations", "liquidation-orders"


def expected_outputs(parts: dict[StateKey, Any], moves: list[dict[str, Any]]) -> list[dict]:
    """How many alerts, and closing orders and cancels, each move publishes (the core
    offline, from the same state)."""
    engine = RiskEngine.from_parts(parts)
    counts = []
    for offset, value in enumerate(moves):
        outcome = engine.apply(Envelope("prices", 0, 10_000_000 + offset, "BTC", value))
        topics = [o.topic for o in outcome.outputs]
        counts.append({ALERTS: topics.count(ALERTS), CLOSING: topics.count(CLOSING)})
    return counts


async def remargin_latency(
    deployment: LocalDeployment, moves: list[dict], expected: list[dict]
) -> dict[str, list[float]]:
    """Per move, from producing it: to its last alert, and to its last closing order or
    cancel (its closing work). A move is sent once the one before is wholly published, so
    each is measured from an idle worker (the first after start included)."""
    consumer = new_consumer(
        deployment.bootstrap,
        *(deployment.prefix + topic for topic in (ALERTS, CLOSING)),
        isolation_level="read_committed",
    )
    producer = AIOKafkaProducer(bootstrap_servers=deployment.bootstrap, acks="all")
    await consumer.start()
    await producer.start()
    latencies: dict[str, list[float]] = {ALERTS: [], CLOSING: []}
    try:
        await consumer.seek_to_end()
        for value, count in zip(moves, expected, strict=True):
            sent = time.perf_counter()
            await producer.send_and_wait(
                deployment.prefix + "prices", orjson.dumps(value), key=b"BTC"
            )
            received = dict.fromkeys(count, 0)
            last = dict.fromkeys(count, sent)
            while any(received[t] < count[t] for t in count):
                if time.perf_counter() - sent > 600:
                    raise TimeoutError(f"{received} of {count} after 600 s")
                for tp, messages in (await consumer.getmany(timeout_ms=100)).items():
                    topic = tp.topic[len(deployment.prefix) :]
                    received[topic] += len(messages)
                    last[topic] = time.perf_counter()
            for topic in count:
                latencies[topic].append(last[topic] - sent)
            await asyncio.sleep(0.5)
    finally:
        await consumer.stop()
        await producer.stop()
    return latencies


async def decision_latency(
    deployment: LocalDeployment, accounts: list[str], rate: int, seconds: float
) -> dict:
    consumer = new_consumer(
        deployment.bootstrap,
        deployment.prefix + "decisions",
        isolation_level="read_committed",
        fetch_max_wait_ms=10,  # a fetch answered as soon as a decision is committed
    )
    producer = AIOKafkaProducer(bootstrap_servers=deployment.bootstrap, acks="all", linger_ms=1)
    await consumer.start()
    await producer.start()
    sent_at: dict[str, float] = {}
    latencies: list[float] = []
    try:
        await consumer.seek_to_end()

        async def offer() -> None:
            began = time.perf_counter()
            total = int(rate * seconds)
            for n in range(total):
                account = accounts[n % len(accounts)]
                order_id = f"lat-{rate}-{n}"
                value = {
                    "type": "order",
                    "order_id": order_id,
                    "account": account,
                    "symbol": "BTC-PERP",
                    "side": "buy",
                    "qty": "0.001",
                    "price": "60000",
                    "ts": T0 + 50_000_000 + n,
                }
                sent_at[order_id] = time.perf_counter()
                await producer.send(
                    deployment.prefix + "orders", orjson.dumps(value), key=account.encode()
                )
                ahead = (n + 1) / rate - (time.perf_counter() - began)
                if ahead > 0:
                    await asyncio.sleep(ahead)
            await producer.flush()

        offering = asyncio.create_task(offer())
        wanted = int(rate * seconds)
        deadline = time.perf_counter() + seconds + 600
        while len(latencies) < wanted and time.perf_counter() < deadline:
            for messages in (await consumer.getmany(timeout_ms=100)).values():
                now = time.perf_counter()
                for message in messages:
                    request = orjson.loads(message.value)["request_id"]
                    if request in sent_at:
                        latencies.append(now - sent_at[request])
        await offering
    finally:
        await consumer.stop()
        await producer.stop()
    return {
        "offered_per_second": rate,
        "orders": int(rate * seconds),
        "decided": len(latencies),
        "p50_seconds": percentile(latencies, 0.5),
        "p99_seconds": percentile(latencies, 0.99),
    }


class Watcher(threading.Thread):
    """An open risk page and a Prometheus: /risk/summary every second, /metrics every 5 s;
    keeps each answer's time."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.stop = url, threading.Event()
        self.seconds: dict[str, list[float]] = {"summary": [], "metrics": []}

    def run(self) -> None:
        tick = 0
        while not self.stop.wait(1.0):
            self._get("summary", "/risk/summary")
            if tick % 5 == 0:
                self._get("metrics", "/metrics")
            tick += 1

    def _get(self, name: str, path: str) -> None:
        began = time.perf_counter()
        with urllib.request.urlopen(self.url + path, timeout=30) as answer:
            answer.read()
        self.seconds[name].append(time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--strikes", type=int, default=50)
    parser.add_argument("--moves", type=int, default=20)
    parser.add_argument("--rates", type=int, nargs="*", default=[1000, 10_000])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--portfolio", type=float, default=0.0, help="share of accounts on portfolio margin"
    )
    parser.add_argument("--name", default="latency", help="the results file's name")
    parser.add_argument(
        "--watch", action="store_true", help="poll the risk page's summary and /metrics meanwhile"
    )
    args = parser.parse_args()

    book, _ = build(args.accounts, args.strikes, portfolio=args.portfolio)
    parts = book.engine.parts()
    accounts = sorted(book.engine.accounts)
    moves = [
        index_value(60_000 * (0.8 if k % 2 == 0 else 1.0), T0 + 20_000_000 + k * 1000)
        for k in range(args.moves)
    ]
    expected = expected_outputs(parts, moves)
    alerts = [count[ALERTS] for count in expected]
    closing = [count[CLOSING] for count in expected]
    figures: dict[str, Any] = {
        "accounts": args.accounts, "alerts_per_move": alerts, "closing_per_move": closing,
        "portfolio_accounts": sum(a.portfolio for a in book.engine.accounts.values()),
    }  # fmt: skip
    with broker() as bootstrap, tempfile.TemporaryDirectory(prefix="bench-") as directory:
        deployment = bench_deployment(bootstrap, Path(directory))
        asyncio.run(write_parts(deployment, parts.items()))
        worker = deployment.worker("w1").start()
        try:
            worker.wait_ready(timeout=3600, partitions=deployment.partitions)
            watcher = Watcher(worker.url)
            if args.watch:
                watcher.start()
            remargin = asyncio.run(remargin_latency(deployment, moves, expected))
            watcher.stop.set()
            if args.watch:
                watcher.join()
                figures["watched"] = {
                    name: {"requests": len(found), "p50_seconds": percentile(found, 0.5),
                           "max_seconds": max(found, default=0.0)}
                    for name, found in watcher.seconds.items()
                }  # fmt: skip
                print("watched:", figures["watched"])
            for name, topic in (("remargin", ALERTS), ("closing", CLOSING)):
                seconds = remargin[topic]
                figures[name] = {
                    "moves": len(seconds),
                    "p50_seconds": percentile(seconds, 0.5),
                    "p99_seconds": percentile(seconds, 0.99),
                    "seconds": seconds,
                }
            print(
                f"index move -> last alert, {args.accounts:,} accounts: "
                f"p50 {figures['remargin']['p50_seconds'] * 1000:.0f} ms, "
                f"p99 {figures['remargin']['p99_seconds'] * 1000:.0f} ms "
                f"({sum(alerts) / len(alerts):,.0f} alerts per move); "
                f"-> last closing order: p50 {figures['closing']['p50_seconds'] * 1000:.0f} ms, "
                f"p99 {figures['closing']['p99_seconds'] * 1000:.0f} ms"
            )
            figures["decisions"] = defaultdict(dict)
            for rate in args.rates:
                result = asyncio.run(decision_latency(deployment, accounts, rate, args.seconds))
                figures["decisions"][str(rate)] = result
                print(
                    f"order -> decision at {rate:,}/s offered: "
                    f"p50 {result['p50_seconds'] * 1000:.0f} ms, "
                    f"p99 {result['p99_seconds'] * 1000:.0f} ms "
                    f"({result['decided']:,}/{result['orders']:,} decided)"
                )
        finally:
            deployment.stop_all()
    print(f"written to {write_result(args.name, figures)}")


if __name__ == "__main__":
    main()
