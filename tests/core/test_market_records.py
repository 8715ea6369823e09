"""Index moves re-price options; explicit marks override; funding and settlement reach holders."""

from __future__ import annotations

import pytest

from marginstream.core.outputs.reports import account_state
from marginstream.core.risk.figures import assess
from marginstream.core.risk.pricing import black76, years_to_expiry
from tests.core.venue import Venue, kinds, only

EXPIRY_MS = 1_798_185_600_000  # 2026-12-25T08:00:00Z


@pytest.fixture
def venue() -> Venue:
    venue = Venue()
    venue.option("BTC-70000-C", "70000", "call")
    venue.option("BTC-50000-P", "50000", "put")
    venue.perpetual("BTC-PERP")
    return venue


def test_an_index_move_reprices_every_option_on_the_underlying(venue: Venue):
    venue.index("60000", ts=1_795_000_000_000)
    venue.mark("BTC-70000-C", iv="0.6", ts=1_795_000_000_000)
    venue.mark("BTC-50000-P", iv="0.8", ts=1_795_000_000_000)
    venue.index("55000", ts=1_795_000_100_000)
    market = venue.engine.market
    years = years_to_expiry(EXPIRY_MS, 1_795_000_100_000)
    assert market.risk_mark("BTC-70000-C") == black76(55000.0, 70000.0, years, 0.6, False).price
    assert market.risk_mark("BTC-50000-P") == black76(55000.0, 50000.0, years, 0.8, True).price


def test_an_explicit_mark_overrides_until_the_next_index_move(venue: Venue):
    venue.index("60000")
    venue.mark("BTC-70000-C", iv="0.6")
    venue.mark("BTC-70000-C", price="1234.5")
    assert venue.engine.market.risk_mark("BTC-70000-C") == 1234.5
    venue.index("60000")  # same index, but it is a move: the model takes over again
    assert venue.engine.market.risk_mark("BTC-70000-C") != 1234.5


def test_a_short_option_account_is_margined_on_the_model_mark(venue: Venue):
    venue.index("60000", ts=1_795_000_000_000)
    venue.mark("BTC-50000-P", iv="0.8", ts=1_795_000_000_000)
    venue.deposit("writer", "20000")
    venue.fill("writer", "BTC-50000-P", "sell", "2", "1500")  # receives 3,000 of premium
    risk = assess(venue.engine.accounts["writer"], venue.engine.market)
    mark = venue.engine.market.risk_mark("BTC-50000-P")
    # Per contract: IM = max(0.15 x 60,000 - 10,000, 0.10 x 60,000) + mark; MM = 4,500 + mark
    assert risk.initial_margin == pytest.approx(2 * (6000 + mark))
    assert risk.maintenance_margin == pytest.approx(2 * (4500 + mark))
    assert risk.equity == pytest.approx(23000 - 2 * mark)  # cash + (-2) x mark
    # Greeks: a short put has positive delta; vega and gamma are negative.
    assert risk.greeks.delta > 0 and risk.greeks.gamma < 0 and risk.greeks.vega < 0


def test_the_index_falling_raises_alerts_for_short_put_writers(venue: Venue):
    venue.index("60000")
    venue.mark("BTC-50000-P", iv="0.5")  # model mark about 542
    venue.deposit("writer", "20000")
    assert venue.fill("writer", "BTC-50000-P", "sell", "2", "500").outputs == []
    # ratios: 0.61 at 55,000; 0.94 at 50,000; 2.19 at 45,000; 0.51 back at 60,000
    alerts = []
    for price in ("55000", "50000", "45000", "60000"):
        alerts += kinds(venue.index(price))
    # At 45,000 the liquidation also issues a closing order, cancelled on recovery.
    assert alerts == [
        "margin_call",
        "liquidation",
        "liquidation_order",
        "recovered",
        "liquidation_cancel",
    ]


def test_funding_is_paid_by_longs_to_shorts_on_the_last_mark(venue: Venue):
    venue.mark("BTC-PERP", "50000")
    venue.deposit("long", "10000")
    venue.deposit("short", "10000")
    venue.trade("long", "short", "BTC-PERP", "2", "50000")
    venue.funding("BTC-PERP", "0.0001")  # 2 x 1 x 50,000 x 0.0001 = 10
    market = venue.engine.market
    states = {
        name: account_state(account, assess(account, market), market)
        for name, account in venue.engine.accounts.items()
    }
    assert (states["long"]["cash"], states["short"]["cash"]) == ("9990", "10010")
    assert (states["long"]["equity"], states["short"]["equity"]) == ("9990", "10010")


def test_funding_without_a_mark_is_a_dead_letter(venue: Venue):
    reason = only(venue.funding("BTC-PERP", "0.0001"))["reason"]
    assert reason == "no mark for BTC-PERP yet: funding is paid on the mark"


def test_settlement_closes_positions_cancels_orders_and_expires_the_instrument(venue: Venue):
    venue.future("BTC-FUT")
    venue.mark("BTC-FUT", "60000")
    venue.index("60000")
    venue.deposit("a", "10000")
    venue.deposit("b", "10000")
    venue.trade("a", "b", "BTC-FUT", "1", "60000")
    venue.trade("a", "b", "BTC-50000-P", "1", "100")  # a pays 100 of premium to b
    venue.order("a", "BTC-FUT", "buy", "1", "59000", order_id="open")
    venue.settlement("BTC-FUT", "61000")
    venue.settlement("BTC-50000-P", "48000")  # put in the money by 2,000
    a, b = venue.engine.accounts["a"], venue.engine.accounts["b"]
    assert a.cash == 10000 + 1000 - 100 + 2000
    assert b.cash == 10000 - 1000 + 100 - 2000
    assert a.orders == {}
    # Settled positions are closed, and leave the account with their realised PnL.
    assert a.positions == {} and a.closed_realized == 1000 + 1900
    assert venue.engine.market.instruments["BTC-FUT"].status.value == "expired"
    refused = only(venue.order("a", "BTC-FUT", "buy", "1", "61000"))
    assert refused["reason"] == "instrument BTC-FUT is expired"
    late = only(venue.fill("a", "BTC-FUT", "buy", "1", "61000"))
    assert late["reason"] == "instrument BTC-FUT is settled: no fill can follow"
    twice = only(venue.settlement("BTC-FUT", "61000"))
    assert twice["reason"] == "BTC-FUT was already settled"


def test_instrument_updates_keep_positions_and_change_margin(venue: Venue):
    venue.mark("BTC-PERP", "60000")
    venue.deposit("a", "100000")
    venue.fill("a", "BTC-PERP", "buy", "5", "60000")
    before = assess(venue.engine.accounts["a"], venue.engine.market).maintenance_margin
    venue.perpetual("BTC-PERP", tiers=[{"up_to": None, "initial": "0.2", "maintenance": "0.1"}])
    after = assess(venue.engine.accounts["a"], venue.engine.market).maintenance_margin
    assert (before, after) == (pytest.approx(3750), pytest.approx(30000))  # 300,000 x 10%
    assert venue.engine.accounts["a"].positions["BTC-PERP"].qty == 5
