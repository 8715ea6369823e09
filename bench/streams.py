"""Benchmark record streams: perpetual-only accounts, orders and fills, in SPEC format."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

T0 = 1_795_000_000_000
TIERS = [
    {"up_to": "250000", "initial": "0.02", "maintenance": "0.01"},
    {"up_to": "1000000", "initial": "0.05", "maintenance": "0.025"},
    {"up_to": None, "initial": "0.10", "maintenance": "0.05"},
]


def symbols(count: int) -> list[str]:
    return [f"PERP-{n:02d}" for n in range(count)]


def mark_of(symbol: str) -> int:
    return 1000 + 10 * int(symbol.rsplit("-", 1)[1])


def market(instruments: int) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for symbol in symbols(instruments):
        records.append(
            {
                "topic": "instruments",
                "key": symbol,
                "value": {
                    "type": "instrument",
                    "symbol": symbol,
                    "kind": "perpetual",
                    "underlying": symbol.replace("PERP", "U"),
                    "contract_size": "1",
                    "status": "active",
                    "margin": {"tiers": TIERS},
                },
            }
        )
    records += [
        {
            "topic": "prices",
            "key": s,
            "value": {"type": "mark", "symbol": s, "price": str(mark_of(s)), "ts": T0},
        }
        for s in symbols(instruments)
    ]
    return records


def deposits(accounts: int) -> list[dict[str, Any]]:
    return [
        {
            "topic": "transfers",
            "key": name,
            "value": {
                "type": "deposit",
                "transfer_id": f"d-{name}",
                "account": name,
                "amount": "100000",
                "ts": T0 + 1,
            },
        }
        for name in account_names(accounts)
    ]


def account_names(accounts: int) -> list[str]:
    return [f"a{n:07d}" for n in range(accounts)]


def trading(accounts: int, instruments: int, records: int, seed: int = 3) -> Iterator[dict]:
    """About `records` records: for each trade an order, the buyer's fill, the seller's fill.

    Every value carries "bench_seq" (extra fields are ignored by the engine), so a peer can
    tell when the first and last measured record went through.
    """
    rng = random.Random(seed)
    names = account_names(accounts)
    books = symbols(instruments)
    ts = T0 + 10
    seq = 0
    for trade in range(records // 3):
        buyer, seller = rng.sample(names, 2)
        symbol = rng.choice(books)
        qty = str(rng.randint(1, 50))
        price = str(mark_of(symbol) + rng.randint(-5, 5))
        ts += 1
        order_id = f"o{trade}"
        values = [
            {
                "type": "order",
                "order_id": order_id,
                "account": buyer,
                "symbol": symbol,
                "side": "buy",
                "qty": qty,
                "price": price,
                "ts": ts,
            },
            {
                "type": "fill",
                "fill_id": f"f{trade}b",
                "order_id": order_id,
                "account": buyer,
                "symbol": symbol,
                "side": "buy",
                "qty": qty,
                "price": price,
                "fee": "0.1",
                "ts": ts,
            },
            {
                "type": "fill",
                "fill_id": f"f{trade}s",
                "account": seller,
                "symbol": symbol,
                "side": "sell",
                "qty": qty,
                "price": price,
                "fee": "0.1",
                "ts": ts,
            },
        ]
        for value in values:
            value["bench_seq"] = seq
            seq += 1
            yield {"topic": "orders", "key": value["account"], "value": value}
