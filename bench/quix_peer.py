"""The peer: the same perpetual-only margin logic, written as a Quix Streams application.

Run by bench/throughput.py in its own process (Quix Streams brings confluent-kafka;
faust brings aiokafka). State lives in Quix's RocksDB stores with changelog topics, run
exactly once (as our worker runs: Kafka transactions) or at least once, as asked. Per
account: exact Decimal cash and positions (cost basis, realised PnL on reduction), open
orders, fill ids seen; decisions for orders (tiered initial margin on the worse side
against available) and margin-level alerts after fills, with the marks the benchmark
stream sets (fixed: it has no mark moves).

    python -m bench.quix_peer BOOTSTRAP INPUT OUTPUT GROUP STATE_DIR MEASURED RESULT.json \
        [exactly-once|at-least-once]
"""

from __future__ import annotations

import json
import sys
import time
from decimal import Decimal
from typing import Any

from quixstreams import Application

from bench.streams import TIERS, mark_of

TIER_TABLE = [
    (
        None if t["up_to"] is None else float(t["up_to"]),
        float(t["initial"]),
        float(t["maintenance"]),
    )
    for t in TIERS
]


def tiered(notional: float, column: int) -> float:
    total, lower = 0.0, 0.0
    for up_to, *rates in TIER_TABLE:
        top = notional if up_to is None else min(notional, up_to)
        if top > lower:
            total += rates[column] * (top - lower)
        if up_to is None or notional <= up_to:
            break
        lower = up_to
    return total


def figures(cash: Decimal, positions: dict, orders: dict) -> tuple[float, float, float]:
    """(equity, initial margin, maintenance margin), open orders on the worse side."""
    equity = float(cash)
    initial = maintenance = 0.0
    pending: dict[str, list[float]] = {}
    for symbol, side, qty, _ in orders.values():
        buys_sells = pending.setdefault(symbol, [0.0, 0.0])
        buys_sells[0 if side == "buy" else 1] += float(qty)
    for symbol in set(positions) | set(pending):
        qty, cost = (float(v) for v in positions.get(symbol, ("0", "0")))
        mark = float(mark_of(symbol))
        equity += qty * mark - cost
        buy, sell = pending.get(symbol, (0.0, 0.0))
        initial += max(tiered(abs(qty + buy) * mark, 0), tiered(abs(qty - sell) * mark, 0))
        maintenance += tiered(abs(qty) * mark, 1)
    return equity, initial, maintenance


def level(equity: float, maintenance: float) -> str:
    ratio = 0.0 if maintenance <= 0 else float("inf") if equity <= 0 else maintenance / equity
    return "liquidation" if ratio >= 1.0 else "margin_call" if ratio >= 0.8 else "healthy"


def apply_fill(value: dict, state: Any) -> list[dict]:
    seen = state.get("fills", {})
    if value["fill_id"] in seen:
        return [{"type": "dead-letter", "reason": "duplicate fill_id"}]
    seen[value["fill_id"]] = value["ts"]
    positions = state.get("positions", {})
    qty, cost = (Decimal(v) for v in positions.get(value["symbol"], ("0", "0")))
    delta = Decimal(value["qty"]) * (1 if value["side"] == "buy" else -1)
    price = Decimal(value["price"])
    cash = Decimal(state.get("cash", "0")) - Decimal(value.get("fee") or "0")
    if qty == 0 or (qty > 0) == (delta > 0):
        qty, cost = qty + delta, cost + delta * price
    else:
        closing = min(abs(delta), abs(qty))
        removed = cost if closing == abs(qty) else cost * closing / abs(qty)
        cash += (1 if qty > 0 else -1) * closing * price - removed
        cost -= removed
        qty += (1 if delta > 0 else -1) * closing
        rest = abs(delta) - closing
        if rest:
            qty, cost = (rest if delta > 0 else -rest), (rest if delta > 0 else -rest) * price
    positions[value["symbol"]] = (str(qty), str(cost))
    orders = state.get("orders", {})
    order = orders.get(value.get("order_id") or "")
    if order is not None:
        left = Decimal(order[2]) - Decimal(value["qty"])
        if left > 0:
            order[2] = str(left)
        else:
            del orders[value["order_id"]]
    state.set("fills", seen)
    state.set("positions", positions)
    state.set("orders", orders)
    state.set("cash", str(cash))
    equity, _, maintenance = figures(cash, positions, orders)
    new = level(equity, maintenance)
    if new == state.get("level", "healthy"):
        return []
    state.set("level", new)
    return [{"type": new, "account": value["account"], "equity": equity}]


def apply_order(value: dict, state: Any) -> list[dict]:
    cash = Decimal(state.get("cash", "0"))
    positions, orders = state.get("positions", {}), state.get("orders", {})
    before = figures(cash, positions, orders)
    proposed = {
        **orders,
        value["order_id"]: [value["symbol"], value["side"], value["qty"], value["price"]],
    }
    after = figures(cash, positions, proposed)
    accepted = after[0] - after[1] >= 0
    if accepted:
        state.set("orders", proposed)
    return [
        {
            "type": "decision",
            "request_id": value["order_id"],
            "account": value["account"],
            "accepted": accepted,
            "available_before": before[0] - before[1],
        }
    ]


def main() -> None:
    bootstrap, source, sink, group, state_dir, measured, result = sys.argv[1:8]
    guarantee = sys.argv[8] if len(sys.argv) > 8 else "at-least-once"
    measured_count = int(measured)
    clock: dict[str, float] = {}
    seen: set[int] = set()  # measured records handled (a redelivery counts once)
    app = Application(
        broker_address=bootstrap,
        consumer_group=group,
        auto_offset_reset="earliest",
        commit_interval=1.0,
        state_dir=state_dir,
        processing_guarantee=guarantee,
        loglevel="WARNING",
    )
    sdf = app.dataframe(app.topic(source, value_deserializer="json", key_deserializer="str"))

    def handle(value: dict, state: Any) -> list[dict]:
        seq = value.get("bench_seq")
        if seq is not None and "first" not in clock:  # partitions interleave: any first
            clock["first"] = time.perf_counter()
        match value.get("type"):
            case "deposit":
                state.set("cash", str(Decimal(state.get("cash", "0")) + Decimal(value["amount"])))
                outputs: list[dict] = []
            case "order":
                outputs = apply_order(value, state)
            case "fill":
                outputs = apply_fill(value, state)
            case _:
                outputs = []
        if seq is not None:
            seen.add(seq)
            if len(seen) == measured_count:
                clock["last"] = time.perf_counter()
                app.stop()
        return outputs

    sdf = sdf.apply(handle, stateful=True, expand=True)
    sdf.to_topic(app.topic(sink, value_serializer="json"))
    app.run()
    seconds = clock["last"] - clock["first"]
    with open(result, "w") as out:
        json.dump(
            {
                "records": measured_count,
                "seconds": seconds,
                "records_per_second": measured_count / seconds,
            },
            out,
        )


if __name__ == "__main__":
    main()
