"""A liquidation cascade through one worker: one index move puts N accounts into
liquidation; latency from producing it to the last liquidation_order (liquidation-orders)
and to the last liquidation alert (liquidations), both read committed.

The book: N accounts, each short 1 to 3 puts of the remargin chain (strikes 50k to 70k),
some also holding the perpetual, with cash set so that every account is healthy at an
index of 60,000 and in liquidation at 48,000 (the latency bench's two levels). The index
goes down (a cascade: N alerts, a closing set each), up (N recoveries, every set
cancelled), down again, and so on. The same moves are applied first offline to a
RiskEngine built from the same parts: its CPU time per cascade is the core's part of the
live figure, and its outputs are the counts the worker must publish.

    python -m bench.cascade --accounts 10000 --cascades 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from bench.cluster import bench_deployment, broker, new_consumer, percentile
from bench.common import write_result
from bench.latency import index_value
from bench.recovery import write_parts
from bench.remargin import T0, Book, build
from marginstream.core import Envelope, RiskEngine
from marginstream.core.delivery.parts import StateKey
from marginstream.core.risk.margin import ShortOptionRates
from marginstream.core.risk.market import Market
from marginstream.localworker import LocalDeployment, LocalWorker

UP, DOWN = 60_000.0, 48_000.0
# What each move must publish: (alert type, liquidation-orders type).
DOWN_TYPES, UP_TYPES = ("liquidation", "liquidation_order"), ("recovered", "liquidation_cancel")


def short_put(
    market: Market, symbol: str, qty: int, perp: float, index: float
) -> tuple[float, float]:
    """(maintenance margin, equity less the cash) at index of qty short puts sold at 500
    and a perpetual position of perp bought or sold at the mark, UP."""
    instrument = market.instruments[symbol]
    model = market.model_at(symbol, index)
    assert model is not None and instrument.strike is not None
    maintenance = ShortOptionRates.of(instrument).maintenance * index + model.price
    mm = qty * min(maintenance, float(instrument.strike)) + 0.01 * abs(perp) * UP
    return mm, qty * (500 - model.price)


def cascade_book(accounts: int, seed: int = 7) -> Book:
    """The remargin market with N accounts healthy at UP and in liquidation at DOWN."""
    rng = random.Random(seed)
    book, _ = build(0, 50)
    market = book.engine.market
    puts = [s for s, i in market.instruments.items() if i.is_put and 50_000 <= i.strike <= 70_000]
    for n in range(accounts):
        account, symbol = f"liq-{n:06d}", rng.choice(puts)
        qty, perp = rng.choice((1, 2, 3)), rng.choice((0.0, 0.0, 0.1, -0.1, 0.3))
        (mm_up, rest_up), (mm_down, rest_down) = (
            short_put(market, symbol, qty, perp, index) for index in (UP, DOWN)
        )
        low, high = mm_up / 0.8 - rest_up, mm_down - rest_down  # healthy above, liquidated below
        cash = low + (high - low) * rng.uniform(0.2, 0.8)
        ts = T0 + n + 1
        book.send("transfers", account, {"type": "deposit", "transfer_id": f"d{n}",
                  "account": account, "amount": f"{cash:.2f}", "ts": ts})  # fmt: skip
        fills = [("o", symbol, "sell", str(qty), "500")]
        if perp:
            fills.append(("p", "BTC-PERP", "buy" if perp > 0 else "sell", str(abs(perp)), "60000"))
        for tag, instrument, side, size, price in fills:
            fill = {"type": "fill", "fill_id": f"{tag}{n}", "account": account, "ts": ts}
            fill |= {"symbol": instrument, "side": side, "qty": size, "price": price}
            book.send("orders", account, fill)
    return book


def core_moves(parts: dict[StateKey, Any], moves: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each move through engine.apply offline: CPU and wall seconds, outputs by type."""
    engine = RiskEngine.from_parts(parts)
    results = []
    for offset, value in enumerate(moves):
        envelope = Envelope("prices", 0, 10_000_000 + offset, "BTC", value)
        wall, cpu = time.perf_counter(), time.process_time()
        outcome = engine.apply(envelope)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        counts = Counter(o.value["type"] for o in outcome.outputs)
        results.append({"cpu_seconds": cpu, "wall_seconds": wall, "outputs": dict(counts)})
    return results


def worker_cpu(worker: LocalWorker) -> float:
    """The worker process's CPU seconds so far (user + system)."""
    assert worker.process is not None
    fields = Path(f"/proc/{worker.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def live_moves(
    deployment: LocalDeployment,
    worker: LocalWorker,
    moves: list[dict[str, Any]],
    expected: list[dict[str, int]],
    timeout: float,
) -> list[dict[str, Any]]:
    """Each move produced, then liquidations and liquidation-orders read (read_committed)
    until the core's counts of the move's two types are in, and 1 s more for extras (or
    until timeout, or the worker's exit)."""
    topics = [deployment.prefix + t for t in ("liquidations", "liquidation-orders")]
    consumer = new_consumer(deployment.bootstrap, *topics, isolation_level="read_committed")
    producer = AIOKafkaProducer(bootstrap_servers=deployment.bootstrap, acks="all")
    await consumer.start()
    await producer.start()
    results: list[dict[str, Any]] = []
    try:
        await consumer.seek_to_end()
        for value, want in zip(moves, expected, strict=True):
            alert, order = DOWN_TYPES if float(value["price"]) < UP else UP_TYPES
            counts: Counter[str] = Counter()
            last: dict[str, float] = {}
            cpu_before, sent = worker_cpu(worker), time.perf_counter()
            await producer.send_and_wait(
                deployment.prefix + "prices", orjson.dumps(value), key=b"BTC"
            )
            complete, settle = False, None
            while settle is None or time.perf_counter() < settle:
                if not complete and (time.perf_counter() - sent > timeout or not worker.alive()):
                    break
                for messages in (await consumer.getmany(timeout_ms=100)).values():
                    now = time.perf_counter()
                    for message in messages:
                        kind = orjson.loads(message.value)["type"]
                        counts[kind] += 1
                        last.setdefault(f"first_{kind}", now - sent)
                        last[kind] = now - sent
                if not complete and all(counts[k] >= want.get(k, 0) for k in (alert, order)):
                    complete, settle = True, time.perf_counter() + 1.0
            results.append({"index": value["price"], "complete": complete,
                            "counts": dict(counts), "expected": want,
                            "to_last_alert_seconds": last.get(alert),
                            "to_last_order_seconds": last.get(order),
                            "to_first_order_seconds": last.get(f"first_{order}"),
                            "worker_cpu_seconds": worker_cpu(worker) - cpu_before})  # fmt: skip
            if not complete:
                break  # the worker is stuck or dead: later moves would say nothing more
            await asyncio.sleep(0.5)
    finally:
        await consumer.stop()
        await producer.stop()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--cascades", type=int, default=3, help="down moves (up moves between)")
    parser.add_argument("--quick", action="store_true", help="1,000 accounts, 2 cascades")
    args = parser.parse_args()
    if args.quick:
        args.accounts, args.cascades = 1_000, 2

    began = time.perf_counter()
    parts = cascade_book(args.accounts).engine.parts()
    print(f"book: {args.accounts:,} accounts built in {time.perf_counter() - began:.1f}s")
    moves = [index_value(DOWN if k % 2 == 0 else UP, T0 + 20_000_000 + k * 1000)
             for k in range(2 * args.cascades - 1)]  # fmt: skip
    core = core_moves(parts, moves)
    downs = core[::2]
    core_cpu = statistics.median(m["cpu_seconds"] for m in downs)
    print(f"core alone, engine.apply of the down move: {core_cpu * 1000:,.0f} ms CPU (median of "
          f"{len(downs)}; {downs[0]['outputs']})")  # fmt: skip
    timeout = max(120.0, 20 * max(m["cpu_seconds"] for m in core))
    figures: dict[str, Any] = {"accounts": args.accounts, "cascades": args.cascades,
                               "load_before": os.getloadavg(), "core": core}  # fmt: skip
    with broker() as bootstrap, tempfile.TemporaryDirectory(prefix="bench-") as directory:
        deployment = bench_deployment(bootstrap, Path(directory))
        asyncio.run(write_parts(deployment, parts.items()))
        worker = deployment.worker("w1").start()
        try:
            worker.wait_ready(timeout=3600, partitions=deployment.partitions)
            expected = [m["outputs"] for m in core]
            live = asyncio.run(live_moves(deployment, worker, moves, expected, timeout))
            health, log = worker.health() or {}, worker.log_tail(60)
        finally:
            deployment.stop_all()
    figures |= {"live": live, "load_after": os.getloadavg(), "worker_health": health}
    figures["worker_log_tail"] = log.splitlines()  # warnings only (log level warn)
    print(
        f"worker after the moves: {health.get('reopened')} reopened, {health.get('fenced')} "
        f"fenced, {health.get('commits')} commits, {len(log.splitlines())} log lines"
    )
    cascades = [m for m in live[::2] if m["complete"]]
    problems = [f"core, down move: {m['outputs']}" for m in downs
                if m["outputs"].get("liquidation") != args.accounts]  # fmt: skip
    problems += [f"move {k} (index {m['index']}): {m['counts']} seen, {m['expected']} expected"
                for k, m in enumerate(live) if m["counts"] != m["expected"]]  # fmt: skip
    for m in live[::2]:
        alerts, orders = (m["counts"].get(k, 0) for k in DOWN_TYPES)
        if alerts != args.accounts or orders < args.accounts:
            problems.append(
                f"cascade at index {m['index']}: {alerts:,} liquidation alerts, "
                f"{orders:,} orders; {args.accounts:,} and >= {args.accounts:,} due"
            )
    if len(live) < len(moves):
        problems.append(f"only {len(live)} of {len(moves)} moves ran (timed out at {timeout:.0f}s)")
    if cascades:
        to_order = [m["to_last_order_seconds"] for m in cascades]
        to_alert = [m["to_last_alert_seconds"] for m in cascades]
        work = statistics.median(m["worker_cpu_seconds"] for m in cascades)
        figures["summary"] = {
            "to_last_order_p50_seconds": percentile(to_order, 0.5),
            "to_last_order_p99_seconds": percentile(to_order, 0.99),
            "to_last_alert_p50_seconds": percentile(to_alert, 0.5),
            "to_last_alert_p99_seconds": percentile(to_alert, 0.99),
            "worker_cpu_seconds_median": work,
            "core_cpu_seconds_median": core_cpu,
            "live_over_core": percentile(to_order, 0.5) / core_cpu,
            "orders_per_cascade": [m["counts"].get("liquidation_order", 0) for m in cascades],
            "alerts_per_cascade": [m["counts"].get("liquidation", 0) for m in cascades],
        }
        s = figures["summary"]
        print(f"cascade of {args.accounts:,} accounts, index move -> last liquidation_order: p50 "
              f"{s['to_last_order_p50_seconds']:.2f} s, p99 {s['to_last_order_p99_seconds']:.2f} "
              f"s; -> last liquidation alert: p50 {s['to_last_alert_p50_seconds']:.2f} s, p99 "
              f"{s['to_last_alert_p99_seconds']:.2f} s ({len(cascades)} cascades)")  # fmt: skip
        print(f"per cascade: orders {s['orders_per_cascade']}, alerts {s['alerts_per_cascade']}; "
              f"worker CPU {work:.2f} s; core alone {core_cpu:.2f} s CPU; "
              f"live / core {s['live_over_core']:.2f}")  # fmt: skip
    for m in live[1::2]:
        print(f"recovery (index {m['index']}): last cancel after "
              f"{m['to_last_order_seconds'] or float('nan'):.2f} s, {m['counts']}")  # fmt: skip
    figures["problems"] = problems
    if problems:
        print("\n!!! CASCADE INCOMPLETE OR WRONG:\n!!! " + "\n!!! ".join(problems), file=sys.stderr)
        print(f"!!! worker log tail:\n{log}", file=sys.stderr)
    print(f"written to {write_result('cascade-quick' if args.quick else 'cascade', figures)}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
