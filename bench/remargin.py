"""Accounts re-margined per second when the index moves: the vectorised view against a
per-account Python loop, measured side by side in one run (ratios, not absolute claims).

The book: N accounts, each long or short the BTC perpetual, a third of them also short
a put from a chain of S strikes (calls and puts). One "move" is an index move (every
option re-priced with Black-76) and a perpetual mark move, then every holder re-margined.

    python -m bench.remargin --accounts 100000 --strikes 50 --moves 20
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from decimal import Decimal

from bench.common import write_result
from marginstream.core import Envelope, RiskEngine
from marginstream.core.inputs.records import IndexRecord, MarkRecord
from marginstream.core.risk.figures import assess

T0 = 1_795_000_000_000
TIERS = [
    {"up_to": "250000", "initial": "0.02", "maintenance": "0.01"},
    {"up_to": "1000000", "initial": "0.05", "maintenance": "0.025"},
    {"up_to": None, "initial": "0.10", "maintenance": "0.05"},
]


# The book's history is applied as if read from this partition of each topic, which live
# topics never have: a worker started from the book's state takes live records as new.
HISTORY_PARTITION = 1_000_000


class Book:
    def __init__(self) -> None:
        self.engine = RiskEngine()
        self.offsets: dict[str, int] = {}

    def send(self, topic: str, key: str, value: dict) -> None:
        offset = self.offsets.get(topic, 0)
        self.offsets[topic] = offset + 1
        self.engine.apply(Envelope(topic, HISTORY_PARTITION, offset, key, value))


def build(
    accounts: int, strikes: int, seed: int = 1, portfolio: float = 0.0
) -> tuple[Book, list[str]]:
    """portfolio: the share of accounts that choose portfolio margin (core/portfolio), right
    after their deposit (so every switch is accepted), spread evenly over the book."""
    rng = random.Random(seed)
    book = Book()
    book.send(
        "instruments",
        "BTC-PERP",
        {
            "type": "instrument",
            "symbol": "BTC-PERP",
            "kind": "perpetual",
            "underlying": "BTC",
            "contract_size": "1",
            "margin": {"tiers": TIERS},
        },
    )
    chain = [40_000 + 1_000 * k for k in range(strikes)]
    options = []
    for strike in chain:
        for kind in ("call", "put"):
            symbol = f"BTC-{strike}-{kind[0].upper()}"
            options.append(symbol)
            book.send(
                "instruments",
                symbol,
                {
                    "type": "instrument",
                    "symbol": symbol,
                    "kind": "option",
                    "underlying": "BTC",
                    "contract_size": "1",
                    "expiry": "2026-12-25T08:00:00Z",
                    "option_type": kind,
                    "strike": str(strike),
                },
            )
    book.send("prices", "BTC", {"type": "index", "underlying": "BTC", "price": "60000", "ts": T0})
    book.send(
        "prices", "BTC-PERP", {"type": "mark", "symbol": "BTC-PERP", "price": "60000", "ts": T0}
    )
    for symbol in options:
        book.send("prices", symbol, {"type": "mark", "symbol": symbol, "iv": "0.6", "ts": T0})
    ts = T0
    for n in range(accounts):
        account = f"acct-{n:07d}"
        ts += 1
        cash = rng.randint(5_000, 50_000)
        book.send(
            "transfers",
            account,
            {
                "type": "deposit",
                "transfer_id": f"d{n}",
                "account": account,
                "amount": str(cash),
                "ts": ts,
            },
        )
        if portfolio and int((n + 1) * portfolio) > int(n * portfolio):
            book.send(
                "transfers",
                account,
                {"type": "margin_mode", "transfer_id": f"m{n}", "account": account,
                 "mode": "portfolio", "ts": ts},
            )  # fmt: skip
        qty = Decimal(cash * rng.choice((1, 2, 3, 5, 8)) / 60_000).quantize(Decimal("0.001"))
        side = rng.choice(("buy", "sell"))
        book.send(
            "orders",
            account,
            {
                "type": "fill",
                "fill_id": f"p{n}",
                "account": account,
                "symbol": "BTC-PERP",
                "side": side,
                "qty": str(qty),
                "price": "60000",
                "ts": ts,
            },
        )
        if n % 3 == 0:
            symbol = f"BTC-{rng.choice(chain)}-P"
            book.send(
                "orders",
                account,
                {
                    "type": "fill",
                    "fill_id": f"o{n}",
                    "account": account,
                    "symbol": symbol,
                    "side": "sell",
                    "qty": "1",
                    "price": "500",
                    "ts": ts,
                },
            )
    return book, ["BTC-PERP", *options]


def move_market(book: Book, index: float, ts: int) -> None:
    """The market side of a move, without re-margining anyone."""
    price = Decimal(f"{index:.2f}")
    book.engine.market.apply_index(IndexRecord("BTC", price, ts))
    book.engine.market.apply_mark(MarkRecord("BTC-PERP", price, None, ts))


def vectorised_move(book: Book, symbols: list[str], index: float, ts: int) -> int:
    """Index and mark move, then one vectorised re-margining pass; returns accounts looked at."""
    engine = book.engine
    move_market(book, index, ts)
    engine.view.refresh(symbols, engine.market)
    ratios = engine.view.margin_ratios(engine.view.holder_numbers(symbols))
    return int(ratios.size)


def naive_move(book: Book, index: float, ts: int) -> int:
    """The same move, then every account re-margined one by one with the exact path."""
    engine = book.engine
    market = engine.market
    move_market(book, index, ts)
    for symbol in market.options_on["BTC"]:
        market.model(symbol)  # price the chain, as the vectorised refresh does
    thresholds = engine.config.thresholds
    levels = [thresholds.level(assess(a, market).margin_ratio) for a in engine.accounts.values()]
    return len(levels)


def engine_move(book: Book, index: float, ts: int) -> int:
    """Through engine.apply, as the workers run it: proposals confirmed, alerts raised."""
    outputs = 0
    for topic, key, value in (
        (
            "prices",
            "BTC",
            {"type": "index", "underlying": "BTC", "price": f"{index:.2f}", "ts": ts},
        ),
        (
            "prices",
            "BTC-PERP",
            {"type": "mark", "symbol": "BTC-PERP", "price": f"{index:.2f}", "ts": ts},
        ),
    ):
        offset = book.offsets[topic]
        book.offsets[topic] = offset + 1
        outputs += len(
            book.engine.apply(Envelope(topic, HISTORY_PARTITION, offset, key, value)).outputs
        )
    return outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--strikes", type=int, default=50)
    parser.add_argument("--moves", type=int, default=20)
    parser.add_argument("--naive-moves", type=int, default=3)
    parser.add_argument(
        "--portfolio", type=float, default=0.0, help="share of accounts on portfolio margin"
    )
    parser.add_argument("--name", default="remargin", help="the results file's name")
    args = parser.parse_args()

    began = time.perf_counter()
    book, symbols = build(args.accounts, args.strikes, portfolio=args.portfolio)
    build_seconds = time.perf_counter() - began
    positions = sum(len(a.positions) for a in book.engine.accounts.values())
    print(
        f"book: {len(book.engine.accounts):,} accounts, {positions:,} positions, "
        f"{len(symbols)} instruments, built through engine.apply in {build_seconds:.1f}s"
    )

    prices = [60_000 * (1 - 0.01 * (k % 10)) for k in range(args.moves)]
    vector_times, naive_times, engine_times = [], [], []
    looked_at = 0
    for k, index in enumerate(prices):
        ts = T0 + 10_000_000 + k * 1000
        start = time.perf_counter()
        looked_at = vectorised_move(book, symbols, index, ts)
        vector_times.append(time.perf_counter() - start)
        if k < args.naive_moves:  # interleaved, so both see the same machine load
            start = time.perf_counter()
            naive_count = naive_move(book, index, ts)
            naive_times.append(time.perf_counter() - start)
    alerts = 0
    for k, index in enumerate(prices):
        start = time.perf_counter()
        alerts += engine_move(book, index, T0 + 20_000_000 + k * 1000)
        engine_times.append(time.perf_counter() - start)

    vector_rate = looked_at / statistics.median(vector_times)
    naive_rate = naive_count / statistics.median(naive_times)
    engine_rate = looked_at / statistics.median(engine_times)
    figures = {
        "accounts": len(book.engine.accounts),
        "portfolio_accounts": sum(a.portfolio for a in book.engine.accounts.values()),
        "positions": positions,
        "instruments": len(symbols),
        "moves": args.moves,
        "vectorised_seconds_per_move_median": statistics.median(vector_times),
        "vectorised_accounts_per_second": vector_rate,
        "naive_seconds_per_move_median": statistics.median(naive_times),
        "naive_accounts_per_second": naive_rate,
        "speedup_vectorised_over_naive": vector_rate / naive_rate,
        "engine_apply_seconds_per_move_median": statistics.median(engine_times),
        "engine_apply_accounts_per_second": engine_rate,
        "engine_alerts_raised": alerts,
        "build_seconds": build_seconds,
    }
    print(
        f"vectorised view: {vector_rate:,.0f} accounts/s "
        f"({figures['vectorised_seconds_per_move_median'] * 1000:.1f} ms per move)"
    )
    print(
        f"naive loop:      {naive_rate:,.0f} accounts/s "
        f"({figures['naive_seconds_per_move_median'] * 1000:.0f} ms per move)"
    )
    print(f"ratio:           {figures['speedup_vectorised_over_naive']:.0f}x")
    per_move = figures["engine_apply_seconds_per_move_median"] * 1000
    print(
        f"engine.apply (index + mark, proposals confirmed, {alerts} alerts): "
        f"{engine_rate:,.0f} accounts/s ({per_move:.1f} ms per move)"
    )
    print(f"written to {write_result(args.name, figures)}")


if __name__ == "__main__":
    main()
