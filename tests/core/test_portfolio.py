"""Portfolio margin (core/portfolio): hand-computed books, and the properties of the grid.

Every book below is on BTC with the index and perpetual mark at 65,000 and the default
parameters (Deribit's BTC values): price points 0, ±0.04, ±0.08, ±0.12, ±0.16; vol up,
same and down; extended moves ±0.33 under vol up, counted at 0.35; roll shock 1% a year's
minimum for perpetuals; contingency 1% of the index per net short option; mm_factor 0.8.
Options are valued with Black-76 (pricing.black76_price), the same model the grid uses:
the expected figures name the scenario and the arithmetic, the option values come from it.
"""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marginstream.core.portfolio.margin import grid, portfolio_margin
from marginstream.core.portfolio.params import DEFAULT
from marginstream.core.portfolio.scenarios import exposure, scenarios
from marginstream.core.risk.figures import figures, risk_rows
from marginstream.core.risk.pricing import black76_price
from tests.core.venue import Venue, only

INDEX = 65_000.0
LATER = "2027-03-26T08:00:00Z"


def btc_venue(*accounts: str, cash: str = "1000000") -> Venue:
    venue = Venue()
    venue.perpetual()
    venue.perpetual("BTC-PERP-B")
    venue.option("P60", "60000", "put")
    venue.option("C70", "70000", "call")
    venue.option("C70-LATER", "70000", "call", expiry=LATER)
    venue.option("P40", "40000", "put")
    venue.option("C90", "90000", "call")
    venue.perpetual("ETH-PERP", underlying="ETH")
    venue.perpetual("SOL-PERP", underlying="SOL")  # never priced: off the grid
    venue.index("65000")
    venue.index("3000", underlying="ETH")
    venue.mark("BTC-PERP", "65000")
    venue.mark("BTC-PERP-B", "65000")
    venue.mark("ETH-PERP", "3000")
    for symbol in ("P60", "C70", "C70-LATER"):
        venue.mark(symbol, iv="0.6")
    for symbol in ("P40", "C90"):  # the wings, at a lower volatility
        venue.mark(symbol, iv="0.3")
    for account in accounts:
        venue.deposit(account, cash)
        assert only(venue.margin_mode(account, "portfolio"))["accepted"]
    venue.deposit("street", "100000000")
    return venue


def hold(venue: Venue, account: str, symbol: str, qty: str, price: str = "1000") -> None:
    """account holds qty (signed) of symbol, bought from or sold to the street."""
    buyer, seller = ("street", account) if qty.startswith("-") else (account, "street")
    venue.trade(buyer, seller, symbol, qty.lstrip("-"), price)


def margin(venue: Venue, account: str):
    engine = venue.engine
    return portfolio_margin(risk_rows(engine.accounts[account], engine.market), engine.market)


def option_pnl(venue: Venue, symbol: str, move: float, vol_case: str, iv: float = 0.6) -> float:
    """A long option's P&L in one scenario, as the grid's vol shocks define it: years to
    expiry as the model counts them (from its last index or iv), at volatility iv."""
    market = venue.engine.market
    instrument = market.instruments[symbol]
    years, _ = market.pricing_inputs(symbol)
    days = years * 365.0
    power = 0.30 if days < 30 else 0.13  # short- or long-term vega power
    shock = (30.0 / days) ** power
    vol = {"up": max(iv * (1 + 0.5 * shock), 0.5), "same": iv, "down": iv * (1 - 0.25 * shock)}
    strike, put = float(instrument.strike), instrument.is_put
    base = black76_price(INDEX, strike, years, iv, put)
    return black76_price(INDEX * (1 + move), strike, years, vol[vol_case], put) - base


def test_a_short_perpetual():
    venue = btc_venue("a")
    hold(venue, "a", "BTC-PERP", "-1", "65000")
    found = margin(venue, "a").underlyings[0]
    # Worst: the index up 16%, vol any: -1 x 65,000 x 0.16 = -10,400 (the extended move,
    # 0.35 x 65,000 x 0.33 = 7,507.5, is less). Roll: 65,000 x 0.01 = 650. No options.
    assert found.grid.worst_case == pytest.approx(10_400.0, rel=1e-12)
    assert scenarios(DEFAULT)[found.grid.worst].move == pytest.approx(0.16)
    assert found.grid.roll_shock == pytest.approx(650.0, rel=1e-12)
    assert found.grid.contingency == 0.0
    assert found.initial == pytest.approx(11_050.0, rel=1e-12)
    assert found.maintenance == pytest.approx(0.8 * 11_050.0, rel=1e-12)  # 8,840


def test_a_long_perpetual_against_a_short_one_pays_the_roll_shock_only():
    venue = btc_venue("a")
    hold(venue, "a", "BTC-PERP", "1", "65000")
    hold(venue, "a", "BTC-PERP-B", "-1", "65000")
    found = margin(venue, "a")
    # Every scenario: +65,000 x x - 65,000 x x = 0, so worst case 0; roll 650 + 650.
    assert found.underlyings[0].grid.worst_case == 0.0
    assert found.initial == pytest.approx(1_300.0, rel=1e-12)
    assert found.maintenance == pytest.approx(1_040.0, rel=1e-12)


def test_a_short_put():
    venue = btc_venue("a")
    hold(venue, "a", "P60", "-1", "2000")
    found = margin(venue, "a").underlyings[0]
    # Worst: the index down 16% (54,600) under vol up: the put gains most, the writer loses
    # it. The extended move down 33% (43,550) counts at 0.35 and is less here.
    loss = option_pnl(venue, "P60", -0.16, "up")
    assert found.grid.worst_case == pytest.approx(loss, rel=1e-12)
    assert 0.35 * option_pnl(venue, "P60", -0.33, "up") < loss
    assert scenarios(DEFAULT)[found.grid.worst] == (pytest.approx(-0.16), "up", False)
    # Contingency: one net short option at (expiry, 60,000): 1 x 65,000 x 0.01 = 650.
    assert found.grid.contingency == pytest.approx(650.0, rel=1e-12)
    assert found.grid.roll_shock == 0.0
    assert found.initial == pytest.approx(loss + 650.0, rel=1e-12)


def test_a_short_put_hedged_by_a_short_perpetual():
    venue = btc_venue("a", "b")
    hold(venue, "a", "P60", "-1", "2000")
    hold(venue, "b", "P60", "-1", "2000")
    hold(venue, "b", "BTC-PERP", "-1", "65000")
    alone = margin(venue, "a").initial
    hedged = margin(venue, "b").underlyings[0]
    # Each scenario: the put's loss plus the perpetual's -65,000 x x. Down 16%: the put's
    # loss less 10,400 gained; up 16%: the put gains its premium back, the perpetual loses
    # 10,400. The worst is the larger of the two sides' net losses.
    expected = max(
        -(-option_pnl(venue, "P60", x, v) - 65_000 * x)
        for v in ("up", "same", "down")
        for x in (-0.16, -0.12, -0.08, -0.04, 0.0, 0.04, 0.08, 0.12, 0.16)
    )
    assert hedged.grid.worst_case == pytest.approx(expected, rel=1e-9)
    assert hedged.grid.roll_shock == pytest.approx(650.0, rel=1e-12)
    assert hedged.grid.contingency == pytest.approx(650.0, rel=1e-12)
    # The short perpetual alone would need 10,400 + 650: together they need less than
    # the two apart.
    assert hedged.initial < alone + 11_050.0


def test_a_calendar_spread():
    venue = btc_venue("a")
    hold(venue, "a", "C70", "-1", "2000")
    hold(venue, "a", "C70-LATER", "1", "4000")
    found = margin(venue, "a").underlyings[0]
    # Short the December 70,000 call, long the March one: the long call's value moves
    # with the short's, so each scenario nets the two.
    pnl = [
        -option_pnl(venue, "C70", s.move, s.vol) + option_pnl(venue, "C70-LATER", s.move, s.vol)
        for s in scenarios(DEFAULT)[:27]
    ]
    assert found.grid.worst_case == pytest.approx(max(0.0, -min(pnl)), rel=1e-9)
    # Contingency per (expiry, strike): December is net short one, March net long: 650.
    assert found.grid.contingency == pytest.approx(650.0, rel=1e-12)
    naked = btc_venue("b")
    hold(naked, "b", "C70", "-1", "2000")
    assert found.initial < margin(naked, "b").initial


def test_a_short_strangle_hits_the_extended_table():
    venue = btc_venue("a")
    hold(venue, "a", "P40", "-1", "100")
    hold(venue, "a", "C90", "-1", "100")
    found = margin(venue, "a").underlyings[0]
    # Far out of the money at iv 0.3: within ±16% (75,400 at most) both stay cheap; 33% up
    # (86,450) brings the call near the money, and 0.35 x that loss exceeds every grid
    # scenario's.
    up = option_pnl(venue, "C90", 0.33, "up", 0.3) + option_pnl(venue, "P40", 0.33, "up", 0.3)
    extended_up = 0.35 * up  # the writer loses what the long options gain
    assert scenarios(DEFAULT)[found.grid.worst] == (pytest.approx(0.33), "up", True)
    assert found.grid.worst_case == pytest.approx(extended_up, rel=1e-9)
    # Two strikes, each net short one: 2 x 650.
    assert found.grid.contingency == pytest.approx(1_300.0, rel=1e-12)


def test_two_underlyings_are_summed():
    venue = btc_venue("a")
    hold(venue, "a", "BTC-PERP", "-1", "65000")
    hold(venue, "a", "ETH-PERP", "10", "3000")
    found = margin(venue, "a")
    # BTC: 10,400 + 650 = 11,050. ETH: long 10 x 3,000 = 30,000, worst down 16%: 4,800,
    # roll 300: 5,100. Together 16,150; maintenance 0.8 x that.
    assert [m.underlying for m in found.underlyings] == ["BTC", "ETH"]
    assert found.initial == pytest.approx(16_150.0, rel=1e-12)
    assert found.maintenance == pytest.approx(12_920.0, rel=1e-12)


def test_the_switch_is_refused_when_it_would_leave_the_account_under_margined():
    venue = btc_venue()
    venue.deposit("a", "5000")
    hold(venue, "a", "BTC-PERP", "-1", "65000")
    # Standard: 2% of 65,000 = 1,300 initial, so 3,700 available. Portfolio: 11,050
    # initial against 5,000 of equity: refused, and the account stays on standard.
    decision = only(venue.margin_mode("a", "portfolio"))
    assert decision["accepted"] is False
    assert decision["reason"].startswith("insufficient margin: available -6050")
    assert decision["available_before"] == decision["available_after"] == "3700"
    assert venue.engine.accounts["a"].margin == "standard"
    # With enough cash it goes through, and back to standard whatever the figures.
    venue.deposit("a", "10000")
    assert only(venue.margin_mode("a", "portfolio"))["accepted"]
    assert venue.engine.accounts["a"].margin == "portfolio"
    assert figures(venue.engine.accounts["a"], venue.engine.market).initial_margin == (
        pytest.approx(11_050.0, rel=1e-12)
    )


def test_a_repeated_transfer_id_and_a_bad_mode_are_dead_letters():
    venue = btc_venue("a")
    outcome = venue.margin_mode("a", "standard", transfer_id="t1")
    assert only(outcome)["accepted"]
    again = venue.margin_mode("a", "portfolio", transfer_id="t1")
    assert "duplicate transfer_id t1" in only(again)["reason"]
    bad = venue.send("transfers", {"type": "margin_mode", "transfer_id": "t2", "account": "a",
                                   "mode": "cross", "ts": venue.next_ts()})  # fmt: skip
    assert "mode must be standard or portfolio" in only(bad)["reason"]
    unknown = venue.margin_mode("nobody", "portfolio")
    assert "unknown account nobody" in only(unknown)["reason"]


def test_parameters_from_a_record_move_the_margin_and_survive_a_restore():
    venue = btc_venue("a")
    hold(venue, "a", "BTC-PERP", "-1", "65000")
    venue.portfolio_params("BTC", price_range="0.2", mm_factor="0.5")
    # 65,000 x 0.2 = 13,000 + 650 = 13,650; maintenance 0.5 x that.
    found = margin(venue, "a")
    assert found.initial == pytest.approx(13_650.0, rel=1e-12)
    assert found.maintenance == pytest.approx(6_825.0, rel=1e-12)
    from marginstream.core import RiskEngine

    again = RiskEngine.from_parts(venue.engine.parts())
    assert again.market.params_for("BTC") == venue.engine.market.params_for("BTC")
    bad = venue.portfolio_params("BTC", price_range="2")
    assert "price_range must be from" in only(bad)["reason"]


def test_the_account_view_shows_the_model_and_the_worst_scenario():
    venue = btc_venue("a")
    hold(venue, "a", "BTC-PERP", "-1", "65000")
    state = venue.engine.state_of(venue.engine.accounts["a"])
    assert state["margin_model"] == "portfolio"
    [line] = state["portfolio"]
    assert line["worst_scenario"] == {"move": "0.16", "vol": "up", "extended": False}
    assert line["worst_case"] == "10400" and line["roll_shock"] == "650"
    assert state["initial_margin"] == "11050"


# -- properties --------------------------------------------------------------------

SYMBOLS = ("BTC-PERP", "BTC-PERP-B", "P60", "C70", "C70-LATER", "P40", "C90", "ETH-PERP")
_MARKET = btc_venue().engine.market
quantities = st.integers(-20, 20).map(lambda n: n / 4)
books = st.dictionaries(st.sampled_from(SYMBOLS[:-1]), quantities, max_size=6)


def worst(book: dict[str, float]) -> float:
    return grid([(q, exposure(_MARKET, s)) for s, q in sorted(book.items())]).worst_case


@settings(max_examples=200, deadline=None)
@given(books, books)
def test_the_worst_case_is_subadditive_over_disjoint_books(a, b):
    b = {s: q for s, q in b.items() if s not in a}
    both = {**a, **b}
    assert worst(both) <= worst(a) + worst(b) + 1e-9 * (1 + worst(a) + worst(b))


@settings(max_examples=200, deadline=None)
@given(books, st.sampled_from([0.5, 2.0, 3.0, 10.0]))
def test_scaling_every_position_scales_the_worst_case(book, k):
    scaled = {s: q * k for s, q in book.items()}
    assert worst(scaled) == pytest.approx(k * worst(book), rel=1e-12, abs=1e-9)


WITH_UNPRICED = (*SYMBOLS, "SOL-PERP")
accounts = st.lists(
    st.tuples(
        st.dictionaries(st.sampled_from(WITH_UNPRICED), st.integers(-8, 8), max_size=5),
        st.lists(
            st.tuples(st.sampled_from(WITH_UNPRICED), st.sampled_from(["buy", "sell"])),
            max_size=2,
        ),
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(accounts, st.sampled_from(["58000", "65000", "71000"]))
def test_the_vectorised_figures_equal_the_single_account_path_to_the_bit(books_, index):
    venue = btc_venue(*(f"a{n}" for n in range(len(books_))))
    prices = {"BTC-PERP": "65000", "BTC-PERP-B": "65000", "ETH-PERP": "3000", "SOL-PERP": "90"}
    for n, (book, orders) in enumerate(books_):
        for symbol, qty in book.items():
            if qty:
                hold(venue, f"a{n}", symbol, str(qty), prices.get(symbol, "1500"))
        for symbol, side in orders:
            venue.order(f"a{n}", symbol, side, "1", prices.get(symbol, "1500"))
    venue.index(index)
    engine = venue.engine
    ids = [f"a{n}" for n in range(len(books_))]
    numbers = np.array([engine.view.account_ids().index(a) for a in ids])
    _, initial, maintenance = engine.view.totals(numbers)
    for n, account_id in enumerate(ids):
        exact = figures(engine.accounts[account_id], engine.market)
        assert (initial[n], maintenance[n]) == (exact.initial_margin, exact.maintenance_margin)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(books, st.sampled_from(["52000", "56000", "60000", "75000", "80000"]))
def test_levels_use_maintenance_at_mm_factor_times_initial(book, crash):
    venue = btc_venue("a", cash="30000")
    for symbol, qty in book.items():
        if qty:
            price = "65000" if "PERP" in symbol else "1500"
            hold(venue, "a", symbol, str(Decimal(str(qty))), price)
    outcome = venue.index(crash)
    for symbol in ("BTC-PERP", "BTC-PERP-B"):
        venue.mark(symbol, crash)
    engine = venue.engine
    account = engine.accounts["a"]
    found = margin(venue, "a")
    if found.underlyings:
        assert found.maintenance == pytest.approx(0.8 * found.initial, rel=1e-12)
    sums = figures(account, engine.market)
    ratio = sums.maintenance_margin / sums.equity if sums.equity > 0 else float("inf")
    if sums.maintenance_margin <= 0:
        ratio = 0.0
    expected = engine.config.thresholds.level(ratio)
    if abs(ratio - 0.8) > 1e-9 and abs(ratio - 1.0) > 1e-9:
        assert account.level == expected
    assert outcome is not None


# -- liquidation on portfolio margin -------------------------------------------------


def crashed(qty_put: str = "-3", qty_perp: str = "2", cash: str = "50000") -> Venue:
    """An account long perpetuals and short puts on portfolio margin (no hedge: both legs
    lose as the index falls), beside a standard twin; both healthy, then the index down
    10%: both in liquidation."""
    venue = btc_venue()
    for account in ("pm", "std"):
        venue.deposit(account, cash)
    assert only(venue.margin_mode("pm", "portfolio"))["accepted"]
    for account in ("pm", "std"):
        hold(venue, account, "P60", qty_put, "2000")
        hold(venue, account, "BTC-PERP", qty_perp, "65000")
    outputs = venue.index("58500").outputs + venue.mark("BTC-PERP", "58500").outputs
    venue.crash_outputs = [o.value for o in outputs]  # type: ignore[attr-defined]
    return venue


def test_at_a_portfolio_accounts_liquidation_price_its_ratio_is_the_threshold():
    from marginstream.core.liquidation.prices import position_prices
    from marginstream.core.portfolio.scenarios import exposure_at

    venue = crashed()
    engine = venue.engine
    account, market = engine.accounts["pm"], engine.market
    prices = position_prices(account, market, 1.0)
    index = market.risk_index("BTC")
    scale = prices["P60"].liquidation / index
    # Every mark on BTC at scale x its own, the put re-priced there, the grid re-margined
    # there (exposure_at): threshold x equity = maintenance, to the grid's interpolation.
    rows = risk_rows(account, market)
    years, vol = market.model_inputs("P60")
    put_there = black76_price(index * scale, 60_000.0, years, vol, True)
    equity = float(account.cash) + 2 * 58_500 * scale - 2 * 65_000 - 3 * put_there
    entries = [
        (-3.0, exposure_at(market, "P60", scale)),
        (2.0, exposure_at(market, "BTC-PERP", scale)),
    ]
    maintenance = 0.8 * grid(entries).initial
    assert rows["BTC-PERP"].risk.mark == 58_500
    assert abs(equity - maintenance) <= 1e-5 * maintenance
    assert prices["BTC-PERP"].liquidation == pytest.approx(58_500 * scale, rel=1e-15)
    # Bankruptcy: equity zero there.
    b = prices["P60"].bankruptcy / index
    there = black76_price(index * b, 60_000.0, years, vol, True)
    assert abs(float(account.cash) + 2 * 58_500 * b - 2 * 65_000 - 3 * there) <= 1e-5 * 58_500


def test_many_accounts_prices_are_each_accounts_own_to_the_bit():
    from marginstream.core.liquidation.manyprices import many_position_prices
    from marginstream.core.liquidation.prices import position_prices

    venue = crashed()
    for n, (put, perp) in enumerate((("-1", "1"), ("-2", "3"), ("1", "-2"), ("-3", "0.5"))):
        venue.deposit(f"x{n}", "40000")
        assert only(venue.margin_mode(f"x{n}", "portfolio"))["accepted"]
        hold(venue, f"x{n}", "P60", put, "2000")
        hold(venue, f"x{n}", "BTC-PERP", perp, "58500")
        hold(venue, f"x{n}", "ETH-PERP", "-5", "3000")
    engine = venue.engine
    ids = ["pm", "std", "x0", "x1", "x2", "x3"]
    pairs = [(engine.accounts[a], risk_rows(engine.accounts[a], engine.market)) for a in ids]
    together = many_position_prices(pairs, engine.market, 1.0)
    for (account, rows), found in zip(pairs, together, strict=True):
        assert found == position_prices(account, engine.market, 1.0, rows)


def test_a_portfolio_liquidation_closes_enough_to_reach_the_target_on_the_grid():
    venue = crashed()
    engine = venue.engine
    account = engine.accounts["pm"]
    assert engine.accounts["std"].level == "liquidation"
    orders = [
        v for v in venue.crash_outputs  # type: ignore[attr-defined]
        if v.get("type") == "liquidation_order" and v["account"] == "pm"
    ]  # fmt: skip
    assert orders and account.level == "liquidation"
    assert all(v["reaches_target"] for v in orders)
    assert float(orders[0]["after"]["margin_ratio"]) <= 0.8  # the margin-call threshold
    for v in orders:  # its own positions, reduce-only, on the closing side
        held = account.positions[v["symbol"]].qty
        assert (v["side"] == "sell") == (held > 0) and Decimal(v["qty"]) <= abs(held)
    # "after" is what the exact path finds once they fill at their prices.
    from marginstream.core.liquidation.closeout import Close, after_closing

    closes = [
        Close(v["symbol"], v["side"], Decimal(v["qty"]), Decimal(v["price"]), None) for v in orders
    ]
    rows = risk_rows(account, engine.market)
    after = after_closing(account, engine.market, rows, closes)
    assert float(orders[0]["after"]["maintenance_margin"]) == pytest.approx(
        after.maintenance_margin, rel=1e-14
    )


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.dictionaries(st.sampled_from(SYMBOLS[:-1]), st.integers(-6, 6), min_size=1),
            st.sampled_from(["15000", "30000", "60000"]),
        ),
        min_size=2,
        max_size=6,
    ),
    st.sampled_from(["52000", "60000", "70000"]),
)
def test_prices_found_together_are_each_books_own_to_the_bit(books_, index):
    """The shared grid's search for many books (NumPy, in lock-step) and for one (Python
    floats) take the same steps: the same prices, bit for bit."""
    from marginstream.core.liquidation.manyprices import many_position_prices
    from marginstream.core.liquidation.prices import position_prices

    venue = btc_venue()
    ids = []
    for n, (book, cash) in enumerate(books_):
        venue.deposit(f"b{n}", cash)
        venue.margin_mode(f"b{n}", "portfolio")
        for symbol, qty in book.items():
            if qty:
                hold(venue, f"b{n}", symbol, str(qty), "65000" if "PERP" in symbol else "1500")
        ids.append(f"b{n}")
    venue.index(index)
    engine = venue.engine
    pairs = [(engine.accounts[a], risk_rows(engine.accounts[a], engine.market)) for a in ids]
    together = many_position_prices(pairs, engine.market, 1.0)
    for (account, rows), found in zip(pairs, together, strict=True):
        assert found == position_prices(account, engine.market, 1.0, rows)


# -- what an outside test found (findings F1 to F4, D2) ---------------------------------


def hedged(cash: str) -> Venue:
    """Long 5 BTC-PERP and short 5 BTC-FUT at 65,000 on portfolio margin: every scenario
    nets to 0, so the margin is the roll shock alone (5 x 65,000 x 0.01 for each leg)."""
    venue = btc_venue()
    venue.future("BTC-FUT")
    venue.mark("BTC-FUT", "65000")
    venue.deposit("h", cash)
    assert only(venue.margin_mode("h", "portfolio"))["accepted"]
    hold(venue, "h", "BTC-PERP", "5", "65000")
    hold(venue, "h", "BTC-FUT", "-5", "65000")
    return venue


def test_a_hedge_in_liquidation_gets_closing_orders():
    venue = hedged("6100")
    # Up to 80,000: the roll shocks grow to 2 x 4,000, maintenance 6,400 > equity 6,100.
    outputs = venue.index("80000").outputs
    for symbol in ("BTC-PERP", "BTC-FUT"):
        outputs += venue.mark(symbol, "80000").outputs
    assert venue.engine.accounts["h"].level == "liquidation"
    orders = [o.value for o in outputs if o.value.get("type") == "liquidation_order"]
    # Neither leg frees the grid's margin alone: both are closed, the first whole.
    assert {v["symbol"] for v in orders} == {"BTC-PERP", "BTC-FUT"}
    assert all(v["reaches_target"] for v in orders)


def test_a_future_with_neither_mark_nor_index_keeps_its_standard_margin():
    venue = btc_venue()
    venue.perpetual("SOL-PERP", underlying="SOL")
    for account in ("p", "s"):
        venue.deposit(account, "1000")
    assert only(venue.margin_mode("p", "portfolio"))["accepted"]
    # 100,000 SOL at 95: 9.5M of notional. The grid cannot move it without a price, so
    # its tiers margin it, as on standard margin: refused on both.
    for account in ("p", "s"):
        decision = only(venue.order(account, "SOL-PERP", "buy", "100000", "95"))
        assert decision["accepted"] is False, decision
        assert decision["available_after"] == "1000"
    assert "-891500" in decision["reason"]


def test_a_reduce_only_order_that_takes_away_a_hedge_is_refused():
    venue = hedged("7500")
    before = figures(venue.engine.accounts["h"], venue.engine.market)
    assert before.initial_margin == pytest.approx(6_500.0, rel=1e-9)
    # Selling the perpetual leaves the short future alone: 0.16 x 325,000 = 52,000 more.
    decision = only(venue.order("h", "BTC-PERP", "sell", "5", "65000", reduce_only=True))
    assert decision["accepted"] is False
    assert "once the reduce-only order fills (it takes away a hedge)" in decision["reason"]
    # With the cash for the naked leg, the same order is accepted.
    rich = hedged("70000")
    assert only(rich.order("h", "BTC-PERP", "sell", "5", "65000", reduce_only=True))["accepted"]


def test_mm_factor_must_be_below_the_liquidation_threshold():
    venue = btc_venue()
    refused = only(venue.portfolio_params("BTC", mm_factor="1"))
    assert "mm_factor must be below the liquidation threshold 1.0" in refused["reason"]
    assert venue.engine.market.params_for("BTC").mm_factor == 0.8
    assert venue.portfolio_params("BTC", buckets="5").outputs == []  # a decimal string
    assert venue.engine.market.params_for("BTC").buckets == 5
