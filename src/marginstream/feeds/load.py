"""A long, busy record stream for crash tests and benchmarks, in topic runs.

Accounts deposit, trade perpetuals and options with one another (every fill has
a counterparty fill), send orders (some refused) and cancels, and withdraw,
while the index and marks move in rounds. Deterministic for a given seed.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from typing import Any

from marginstream.feeds.demo import MARKET_MAKER, DemoMarket, _Script, poison, record


@dataclass(frozen=True)
class LoadFeed:
    accounts: int = 2000
    rounds: int = 12
    trades_per_round: int = 1500  # each is an order and two fills
    moves_per_round: int = 6
    seed: int = 11
    poison_every: int = 0


def load_events(feed: LoadFeed) -> Iterator[dict[str, Any]]:
    rng = random.Random(feed.seed)
    poisoner = random.Random(feed.seed + 1)  # its own draws: the good records stay the same
    script = _Script(DemoMarket(accounts=feed.accounts, seed=feed.seed))
    names = [f"acct-{n:05d}" for n in range(1, feed.accounts + 1)]
    count = 0

    def emit(item: dict[str, Any]) -> Iterator[dict[str, Any]]:
        nonlocal count
        yield item
        count += 1
        if feed.poison_every and count % feed.poison_every == 0:
            yield poison(poisoner, count)

    yield from script.instruments()
    yield from script.prices(Decimal(60000), with_vols=True)
    for name in names:
        yield from emit(script.deposit(name, Decimal(rng.randint(20_000, 200_000))))
    index = Decimal(60000)
    symbols = ["BTC-PERP", *(f"BTC-30D-{k}-P" for k in script.market.strikes)]
    for round_number in range(feed.rounds):
        for n in range(feed.trades_per_round):
            buyer, seller = rng.sample(names, 2)
            symbol = rng.choice(symbols)
            perpetual = symbol == "BTC-PERP"
            qty = Decimal(rng.randint(1, 400)) / (1000 if perpetual else 100)
            price = index if perpetual else Decimal(rng.randint(50, 3000))
            order_id = f"r{round_number}-{n}"
            for item in script.trade(buyer, symbol, "buy", qty, price, order_id):
                maker_side = item["value"]["account"] == MARKET_MAKER
                yield from emit(_as_counterparty(item, seller) if maker_side else item)
            if n % 10 == 0:
                yield from emit(_cancel(script, buyer, f"{order_id}-gone"))
        index = (index * Decimal(rng.uniform(0.97, 1.03))).quantize(Decimal("0.01"), ROUND_DOWN)
        for _ in range(feed.moves_per_round):
            for item in script.prices(index):
                yield from emit(item)
        for name in rng.sample(names, min(200, len(names))):
            amount = Decimal(rng.randint(10, 5000))
            yield from emit(
                record(
                    "transfers",
                    name,
                    {
                        "type": "withdrawal",
                        "transfer_id": f"wd-{round_number}-{name}",
                        "account": name,
                        "amount": str(amount),
                        "ts": script.tick(),
                    },
                )
            )


def _as_counterparty(item: dict[str, Any], seller: str) -> dict[str, Any]:
    value = {**item["value"], "account": seller}
    return {**item, "key": seller, "value": value}


def _cancel(script: _Script, account: str, order_id: str) -> dict[str, Any]:
    return record(
        "orders",
        account,
        {"type": "cancel", "order_id": order_id, "account": account, "ts": script.tick()},
    )
