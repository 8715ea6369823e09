"""many_position_prices finds, to the bit, what position_prices finds for each account.

Random books on one venue: a perpetual and puts and calls on BTC (some with an explicit
mark, so their mark is held at other index levels), and accounts holding random mixes
of them, long and short, with random cash: healthy ones, ones near liquidation, bankrupt
ones. Prices are compared as the bits of their floats (None where none exists).
"""

from __future__ import annotations

import struct
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marginstream.core.liquidation.manyprices import many_position_prices
from marginstream.core.liquidation.prices import PositionPrices, position_prices
from marginstream.core.risk.figures import risk_rows
from tests.core.venue import Venue

STRIKES = ("40000", "55000", "60000", "65000", "90000")
OPTIONS = [f"BTC-{k}-{t[0].upper()}" for k in STRIKES for t in ("call", "put")]

holdings = st.lists(
    st.tuples(
        st.sampled_from(["BTC-PERP", *OPTIONS]),
        st.sampled_from(["buy", "sell"]),
        st.sampled_from(["0.01", "0.5", "1", "3", "12.5"]),
    ),
    min_size=1,
    max_size=4,
)
books = st.lists(st.tuples(holdings, st.integers(0, 400_000)), min_size=1, max_size=12)


def _bits(prices: dict[str, PositionPrices]) -> dict[str, tuple[Any, Any]]:
    def bits(x: float | None) -> Any:
        return None if x is None else struct.pack("<d", x)

    return {s: (bits(p.liquidation), bits(p.bankruptcy)) for s, p in prices.items()}


def _venue(index: str, explicit: str | None, iv: str) -> Venue:
    venue = Venue()
    venue.perpetual()
    for strike in STRIKES:
        for kind in ("call", "put"):
            venue.option(f"BTC-{strike}-{kind[0].upper()}", strike, kind)
    venue.index(index)
    venue.mark("BTC-PERP", index)
    for symbol in OPTIONS:
        venue.mark(symbol, iv=iv)
    if explicit is not None:
        venue.mark("BTC-60000-P", price=explicit)
    return venue


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    books,
    st.sampled_from(["30000", "60000", "61234.5", "95000"]),
    st.sampled_from([None, "2500", "0"]),
    st.sampled_from(["0.2", "0.6", "1.5"]),
    st.sampled_from([0.8, 1.0]),
)
def test_many_equals_one_by_one(
    book: list[tuple[list[tuple[str, str, str]], int]],
    index: str,
    explicit: str | None,
    iv: str,
    threshold: float,
) -> None:
    venue = _venue(index, explicit, iv)
    names = []
    for n, (legs, cash) in enumerate(book):
        name = f"a{n}"
        venue.deposit(name, str(cash + 1))
        for symbol, side, qty in legs:
            price = index if symbol == "BTC-PERP" else "1000"
            venue.fill(name, symbol, side, qty, price)
        names.append(name)
    engine = venue.engine
    accounts = [engine.accounts[name] for name in names]
    pairs = [(account, risk_rows(account, engine.market)) for account in accounts]
    many = many_position_prices(pairs, engine.market, threshold)
    for (account, rows), found in zip(pairs, many, strict=True):
        one = position_prices(account, engine.market, threshold, rows)
        assert list(found) == list(one)
        assert _bits(found) == _bits(one), account.account_id


def test_a_book_the_ladder_never_brackets() -> None:
    """An account whose equity no index level on the ladder can make negative: None."""
    venue = _venue("60000", None, "0.6")
    venue.deposit("rich", "100000000")
    venue.fill("rich", "BTC-60000-P", "sell", "1", "1000")
    account = venue.engine.accounts["rich"]
    rows = risk_rows(account, venue.engine.market)
    [found] = many_position_prices([(account, rows)], venue.engine.market, 1.0)
    assert found == position_prices(account, venue.engine.market, 1.0, rows)
    assert found["BTC-60000-P"].bankruptcy is None
