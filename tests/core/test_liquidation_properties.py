"""Properties of the liquidation core over random perpetual accounts (hypothesis).

Accounts are built directly on the ledger (Account.apply_fill) against a market made of
instrument and mark records: one to three perpetuals, each with its own random tiers,
position and mark; the account's cash is chosen for the margin ratio wanted.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from marginstream.core.books.ledger import Account
from marginstream.core.inputs.numbers import ZERO
from marginstream.core.inputs.records import FillRecord
from marginstream.core.liquidation.closeout import LiquidationPolicy, after_closing, plan
from marginstream.core.liquidation.prices import position_prices
from marginstream.core.risk.figures import figures, risk_rows
from marginstream.core.risk.market import Market
from tests.core.venue import Venue

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
THRESHOLD, TARGET = 1.0, 0.8
POLICY = LiquidationPolicy()

rates = st.decimals(min_value="0.001", max_value="0.2", places=3)


@st.composite
def tier_lists(draw: Any) -> list[dict[str, Any]]:
    bounds = sorted(draw(st.sets(st.integers(1, 400), max_size=3)))
    tiers = []
    for up_to in [*(str(b * 5000) for b in bounds), None]:
        maintenance = draw(rates)
        tiers.append(
            {"up_to": up_to, "initial": str(2 * maintenance), "maintenance": str(maintenance)}
        )
    return tiers


@st.composite
def positions(draw: Any) -> dict[str, Any]:
    qty = draw(st.decimals(min_value="0.001", max_value="50", places=3))
    return {
        "tiers": draw(tier_lists()),
        "size": draw(st.sampled_from(["1", "0.1", "0.01"])),
        "qty": qty if draw(st.booleans()) else -qty,
        "entry": draw(st.decimals(min_value="100", max_value="100000", places=1)),
        "mark": draw(st.decimals(min_value="100", max_value="100000", places=1)),
    }


accounts = st.lists(positions(), min_size=1, max_size=3)


def build(legs: list[dict[str, Any]], ratio: float) -> tuple[Account, Market]:
    """An account holding legs whose margin ratio is about `ratio` (equity = MM / ratio;
    ratio <= 0: equity about MM x ratio, at or below zero)."""
    venue = Venue()
    account = Account("x")
    for n, leg in enumerate(legs):
        symbol = f"P{n}"
        venue.perpetual(symbol, tiers=leg["tiers"], contract_size=leg["size"])
        venue.mark(symbol, str(leg["mark"]))
    market = venue.engine.market
    for n, leg in enumerate(legs):
        symbol, qty = f"P{n}", leg["qty"]
        fill = FillRecord(
            "f", None, "x", symbol, "buy" if qty > 0 else "sell", abs(qty), leg["entry"], ZERO, 0
        )
        account.apply_fill(fill, market.instruments[symbol], ZERO)
    start = figures(account, market)  # cash 0: equity is the positions' PnL
    equity = start.maintenance_margin / ratio if ratio > 0 else start.maintenance_margin * ratio
    account.cash = Decimal(repr(equity - start.equity)).quantize(Decimal("0.01"))
    return account, market


def less_one_lot(qty: Decimal, lot: Decimal) -> Decimal:
    lots = (qty / lot).to_integral_value(rounding=ROUND_CEILING)
    return (lots - 1) * lot


@PROPERTY
@given(accounts, st.one_of(st.floats(1.0, 8.0), st.floats(-2.0, 0.0)))
def test_the_planned_closes_reach_the_target_and_one_lot_less_does_not(legs, ratio):
    account, market = build(legs, ratio)
    rows = risk_rows(account, market)
    before = figures(account, market)
    assume(before.margin_ratio >= THRESHOLD)  # an account in liquidation
    closeout = plan(account, market, POLICY, THRESHOLD, TARGET, rows)
    assert closeout.before == before
    for close in closeout.closes:  # reduce-only, on the penalty side of the mark
        position = account.positions[close.symbol]
        assert 0 < close.qty <= abs(position.qty)
        assert close.side == ("sell" if position.qty > 0 else "buy")
        mark = market.risk_mark(close.symbol)
        if close.side == "sell":
            assert float(close.price) <= mark * (1 - POLICY.penalty_rate)
        else:
            assert float(close.price) >= mark * (1 + POLICY.penalty_rate)
    after = after_closing(account, market, rows, closeout.closes)
    assert after == closeout.after
    event(f"reaches the target: {closeout.reaches_target}; closes: {len(closeout.closes)}")
    # Perpetuals only: closing every position leaves no margin to maintain (ratio 0), so
    # the plan always reaches the target.
    assert closeout.reaches_target
    assert after.margin_ratio <= TARGET
    *whole, last = closeout.closes
    less = less_one_lot(last.qty, POLICY.lot)
    trial = [*whole, last._replace(qty=less)] if less else whole
    assert after_closing(account, market, rows, trial).margin_ratio > TARGET


def value_at(
    account: Account, market: Market, symbol: str, price: float
) -> tuple[float, float, float]:
    """(equity, MM, gross notional) of the account were symbol's mark at price, the others
    where they are: SPEC's formulas, from the positions and the market's tier tables."""
    equity, maintenance, gross = float(account.cash), 0.0, 0.0
    for name, position in account.positions.items():
        size = float(market.instruments[name].contract_size)
        mark = price if name == symbol else market.risk_mark(name)
        assert mark is not None
        qty = float(position.qty)
        equity += qty * size * mark - float(position.cost)
        maintenance += market.tier_tables[name].maintenance_margin(abs(qty) * size * mark)
        gross += abs(qty) * size * mark + abs(float(position.cost))
    return equity, maintenance, gross


@PROPERTY
@given(accounts, st.floats(0.05, 0.95))
def test_liquidation_and_bankruptcy_prices_sit_on_the_right_side_of_the_mark(legs, ratio):
    account, market = build(legs, ratio)
    current = figures(account, market)
    # A healthy account (after rounding cash), not within float noise of the threshold:
    # there its liquidation price is its mark, to the last bit either side (hypothesis
    # found a short at ratio 0.9999999999999991 priced one ulp below its mark).
    assume(0.0 < current.margin_ratio < THRESHOLD * (1 - 1e-9))
    prices = position_prices(account, market, THRESHOLD)
    assert set(prices) == set(account.positions)
    for symbol, (liquidation, bankruptcy) in prices.items():
        mark = market.risk_mark(symbol)
        assert mark is not None
        if account.positions[symbol].qty > 0:  # falls to liquidation, then to bankruptcy
            if bankruptcy is not None:
                assert liquidation is not None and bankruptcy < liquidation
            if liquidation is not None:
                assert liquidation < mark
        else:  # a short: both exist and are above the mark
            assert liquidation is not None and bankruptcy is not None
            assert mark < liquidation < bankruptcy
        # At the liquidation price the ratio is the threshold; at bankruptcy, equity is 0
        # (both up to the float error of sums as large as the gross notional).
        if liquidation is not None:
            equity, maintenance, gross = value_at(account, market, symbol, liquidation)
            assert maintenance == pytest.approx(THRESHOLD * equity, rel=1e-9, abs=1e-12 * gross)
            if abs(equity) > 1e-6 * gross:  # else the ratio is float noise over noise
                assert maintenance / equity == pytest.approx(THRESHOLD, rel=1e-6)
        if bankruptcy is not None:
            equity, _, gross = value_at(account, market, symbol, bankruptcy)
            assert equity == pytest.approx(0.0, abs=1e-12 * gross)
