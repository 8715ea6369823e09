"""The demo market: accounts open leveraged perpetuals and short options, the index falls 25%
in steps and recovers. Deterministic for a given seed, so a replay of it is a fixed reference.

Every trade has a counterparty, the market maker account `mm`, so open interest nets
to zero as on a real venue. Each account first sends an order (some are refused for
margin), then its fill arrives from the matching engine.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from typing import Any

from marginstream.core.risk.pricing import black76, years_to_expiry

START_MS = 1_795_000_000_000  # 2026-11-17T...Z: a fixed event time, so replays are identical
DAY_MS = 86_400_000
TIERS = [
    {"up_to": "250000", "initial": "0.02", "maintenance": "0.01"},
    {"up_to": "1000000", "initial": "0.05", "maintenance": "0.025"},
    {"up_to": None, "initial": "0.10", "maintenance": "0.05"},
]
MARKET_MAKER = "mm"
PORTFOLIO_EVERY = 5  # every fifth account is on portfolio margin


@dataclass(frozen=True)
class DemoMarket:
    accounts: int = 300
    seed: int = 7
    index: Decimal = Decimal(60000)
    drop: Decimal = Decimal("0.25")
    steps: int = 10
    strikes: tuple[int, ...] = (45000, 50000, 55000, 60000, 65000, 70000, 75000)
    poison_every: int = 0  # one malformed record after every N good ones (0: none)


def record(topic: str, key: str, value: dict[str, Any]) -> dict[str, Any]:
    return {"topic": topic, "key": key, "value": value}


def _text(value: Decimal, places: str = "0.001") -> str:
    return str(value.quantize(Decimal(places), rounding=ROUND_DOWN).normalize())


class _Script:
    def __init__(self, market: DemoMarket) -> None:
        self.market = market
        self.rng = random.Random(market.seed)
        self.ts = START_MS
        self.expiry = START_MS + 30 * DAY_MS
        self.fills = 0

    def tick(self, ms: int = 1) -> int:
        self.ts += ms
        return self.ts

    def option_symbol(self, strike: int, kind: str) -> str:
        return f"BTC-30D-{strike}-{kind[0].upper()}"

    def instruments(self) -> Iterator[dict[str, Any]]:
        yield record(
            "instruments",
            "BTC-PERP",
            {
                "type": "instrument",
                "symbol": "BTC-PERP",
                "kind": "perpetual",
                "underlying": "BTC",
                "contract_size": "1",
                "status": "active",
                "margin": {"tiers": TIERS},
            },
        )
        for strike in self.market.strikes:
            for kind in ("call", "put"):
                symbol = self.option_symbol(strike, kind)
                yield record(
                    "instruments",
                    symbol,
                    {
                        "type": "instrument",
                        "symbol": symbol,
                        "kind": "option",
                        "underlying": "BTC",
                        "contract_size": "1",
                        "status": "active",
                        "expiry": "2026-12-17T08:00:00Z",
                        "option_type": kind,
                        "strike": str(strike),
                        "margin": {
                            "short_initial": "0.15",
                            "short_initial_floor": "0.10",
                            "short_maintenance": "0.075",
                        },
                    },
                )

    def prices(self, index: Decimal, with_vols: bool = False) -> Iterator[dict[str, Any]]:
        ts = self.tick(1000)
        yield record(
            "prices",
            "BTC",
            {"type": "index", "underlying": "BTC", "price": _text(index, "0.01"), "ts": ts},
        )
        basis = Decimal(self.rng.randint(-20, 40))
        yield record(
            "prices",
            "BTC-PERP",
            {"type": "mark", "symbol": "BTC-PERP", "price": _text(index + basis, "0.01"), "ts": ts},
        )
        if with_vols:
            for strike in self.market.strikes:
                for kind in ("call", "put"):
                    symbol = self.option_symbol(strike, kind)
                    smile = Decimal("0.55") + abs(Decimal(strike) / index - 1) * Decimal("0.8")
                    yield record(
                        "prices",
                        symbol,
                        {"type": "mark", "symbol": symbol, "iv": _text(smile, "0.0001"), "ts": ts},
                    )

    def deposit(self, account: str, amount: Decimal) -> dict[str, Any]:
        return record(
            "transfers",
            account,
            {
                "type": "deposit",
                "transfer_id": f"dep-{account}",
                "account": account,
                "amount": _text(amount, "0.01"),
                "ts": self.tick(),
            },
        )

    def portfolio(self, account: str) -> dict[str, Any]:
        """account chooses portfolio margin (core/portfolio)."""
        return record(
            "transfers",
            account,
            {
                "type": "margin_mode",
                "transfer_id": f"pm-{account}",
                "account": account,
                "mode": "portfolio",
                "ts": self.tick(),
            },
        )

    def trade(
        self, account: str, symbol: str, side: str, qty: Decimal, price: Decimal, order_id: str
    ) -> Iterator[dict[str, Any]]:
        """The account's order, then both sides' fills if the engine is expected to accept."""
        yield record(
            "orders",
            account,
            {
                "type": "order",
                "order_id": order_id,
                "account": account,
                "symbol": symbol,
                "side": side,
                "qty": _text(qty),
                "price": _text(price, "0.5"),
                "ts": self.tick(),
            },
        )
        other = "sell" if side == "buy" else "buy"
        for who, how in ((account, side), (MARKET_MAKER, other)):
            self.fills += 1
            fee = (qty * price * Decimal("0.0002")).quantize(Decimal("0.01"))
            yield record(
                "orders",
                who,
                {
                    "type": "fill",
                    "fill_id": f"fill-{self.fills}",
                    "order_id": order_id if who == account else None,
                    "account": who,
                    "symbol": symbol,
                    "side": how,
                    "qty": _text(qty),
                    "price": _text(price, "0.5"),
                    "fee": str(fee),
                    "ts": self.tick(),
                },
            )

    def option_price(self, strike: int, kind: str, index: Decimal) -> Decimal:
        vol = 0.55 + abs(strike / float(index) - 1) * 0.8
        value = black76(
            float(index), strike, years_to_expiry(self.expiry, self.ts), vol, kind == "put"
        )
        return max(Decimal(str(round(value.price * 2) / 2)), Decimal("0.5"))


def demo_events(market: DemoMarket | None = None) -> Iterator[dict[str, Any]]:
    """The scripted market as {topic, key, value} records, in processing order."""
    market = market or DemoMarket()
    script = _Script(market)
    poisoner = random.Random(market.seed + 1)  # its own draws: the good records stay the same
    for good, item in enumerate(_demo_records(script), start=1):
        yield item
        if market.poison_every and good % market.poison_every == 0:
            yield poison(poisoner, good)


def _demo_records(script: _Script) -> Iterator[dict[str, Any]]:
    """Instruments, then market, then every deposit, then every order and fill, then moves:
    records of one topic come in runs, so a live run can wait for each run to be applied
    and see the very interleaving a replay sees."""
    market, rng = script.market, script.rng
    yield from script.instruments()
    yield from script.prices(market.index, with_vols=True)
    names = [f"acct-{n:05d}" for n in range(1, market.accounts + 1)]
    cash = {name: Decimal(rng.randint(5_000, 50_000)) for name in names}
    yield script.deposit(MARKET_MAKER, Decimal(10) ** 10)
    for name in names:
        yield script.deposit(name, cash[name])
    for name in names[::PORTFOLIO_EVERY]:  # before trading: their orders meet the grid
        yield script.portfolio(name)
    for name in names:
        yield from _open_positions(script, name, cash[name])
    yield from _move(script, names, market.index, market.index * (1 - market.drop))
    yield record(
        "prices",
        "BTC-PERP",
        {"type": "funding", "symbol": "BTC-PERP", "rate": "0.0001", "ts": script.tick()},
    )
    yield from _move(script, names, market.index * (1 - market.drop), market.index)


def _open_positions(script: _Script, name: str, cash: Decimal) -> Iterator[dict[str, Any]]:
    market, rng = script.market, script.rng
    leverage = Decimal(rng.choice((2, 3, 5, 8, 10, 12, 15)))
    side = "buy" if rng.random() < 0.7 else "sell"
    qty = (cash * leverage / market.index).quantize(Decimal("0.001"), rounding=ROUND_DOWN)
    if leverage > 12:  # too much: the engine refuses the order, so no fill follows
        yield record(
            "orders",
            name,
            {
                "type": "order",
                "order_id": f"{name}-big",
                "account": name,
                "symbol": "BTC-PERP",
                "side": side,
                "qty": _text(qty * 5),
                "price": _text(market.index),
                "ts": script.tick(),
            },
        )
        qty = (cash * 8 / market.index).quantize(Decimal("0.001"), rounding=ROUND_DOWN)
    yield from script.trade(name, "BTC-PERP", side, qty, market.index, f"{name}-perp")
    # Short puts, for those with room for them: about 0.1 x index of margin per contract.
    room = int((cash - qty * market.index * Decimal("0.02")) / (market.index / 8))
    if room >= 1 and rng.random() < 0.5:
        strike = rng.choice([k for k in market.strikes if k < market.index])
        contracts = Decimal(rng.randint(1, min(room, 3)))
        price = script.option_price(strike, "put", market.index)
        symbol = script.option_symbol(strike, "put")
        yield from script.trade(name, symbol, "sell", contracts, price, f"{name}-put")


def _move(script: _Script, names: list[str], start: Decimal, end: Decimal) -> Iterator[dict]:
    steps = script.market.steps
    for step in range(1, steps + 1):
        yield from script.prices(start + (end - start) * step / steps)
        lucky = script.rng.choice(names)
        yield record(
            "transfers",
            lucky,
            {
                "type": "withdrawal",
                "transfer_id": f"wd-{lucky}-{script.ts}",
                "account": lucky,
                "amount": "100",
                "ts": script.tick(),
            },
        )


def poison(rng: random.Random, n: int) -> dict[str, Any]:
    """One malformed or impossible record, of the kinds a worker must dead-letter."""
    account = f"acct-{rng.randint(1, 99999):05d}"
    choices: list[dict[str, Any]] = [
        record(
            "orders",
            account,
            {
                "type": "fill",
                "fill_id": f"p{n}",
                "account": account,
                "symbol": "BTC-PERP",
                "side": "buy",
                "qty": "-1",
                "price": "60000",
                "ts": START_MS,
            },
        ),
        record("orders", account, {"type": "order", "order_id": f"p{n}", "account": account}),
        record(
            "transfers",
            account,
            {
                "type": "deposit",
                "transfer_id": f"p{n}",
                "account": account,
                "amount": "NaN",
                "ts": START_MS,
            },
        ),
        record(
            "prices", "BTC", {"type": "index", "underlying": "BTC", "price": "1e40", "ts": START_MS}
        ),
        record("orders", account, {"type": "teleport", "account": account}),
        record("prices", "NOPE", {"type": "mark", "symbol": "NOPE", "price": "1", "ts": START_MS}),
    ]
    return rng.choice(choices)
