"""Every order, cancel and withdrawal gets a decision, with figures checked by hand.

Tiers are SPEC's: 2% / 1% up to 250k of notional, 5% / 2.5% up to 1M, then 10% / 5%.
"""

from __future__ import annotations

import pytest

from marginstream.core import EngineConfig
from tests.core.venue import Venue, only


@pytest.fixture
def venue() -> Venue:
    venue = Venue()
    venue.perpetual("BTC-PERP")
    venue.mark("BTC-PERP", "60000")
    venue.deposit("alice", "10000")
    return venue


def test_an_order_that_fits_is_accepted_and_reserves_its_margin(venue: Venue):
    decision = only(venue.order("alice", "BTC-PERP", "buy", "5", "60000", order_id="o1"))
    # 5 x 60,000 = 300,000 of notional: 250,000 x 2% + 50,000 x 5% = 7,500 reserved.
    assert decision == {
        "type": "decision",
        "decision_id": "alice:decision:1",
        "request": "order",
        "request_id": "o1",
        "account": "alice",
        "accepted": True,
        "available_before": "10000",
        "available_after": "2500",
        "ts": decision["ts"],
    }


def test_an_order_beyond_available_is_refused_and_reserves_nothing(venue: Venue):
    venue.order("alice", "BTC-PERP", "buy", "5", "60000")
    decision = only(venue.order("alice", "BTC-PERP", "buy", "5", "60000"))
    # Buys of 10 open: 600,000 -> 5,000 + 350,000 x 5% = 22,500 > 10,000.
    assert decision["accepted"] is False
    assert (
        decision["reason"]
        == "insufficient margin: available 2500, -12500 after reserving for the order"
    )
    assert decision["available_before"] == decision["available_after"] == "2500"
    assert len(venue.engine.accounts["alice"].orders) == 1


def test_open_orders_reserve_only_the_worse_side(venue: Venue):
    venue.order("alice", "BTC-PERP", "buy", "2", "60000")  # 120,000: 2,400
    decision = only(venue.order("alice", "BTC-PERP", "sell", "3", "60000"))
    # Sells of 3 (180,000: 3,600) are now the worse side; buys are no longer counted.
    assert decision["available_before"] == "7600"
    assert decision["available_after"] == "6400"


def test_orders_before_the_first_mark_are_valued_at_their_price():
    venue = Venue()
    venue.perpetual("BTC-PERP")
    venue.deposit("bob", "1000")
    # No mark yet: 1 x 50,000 at the order's price: 50,000 x 2% = 1,000 -> available 0, accepted.
    assert only(venue.order("bob", "BTC-PERP", "buy", "1", "50000"))["available_after"] == "0"


@pytest.mark.parametrize(
    ("setup", "symbol", "reason"),
    [
        (None, "ETH-PERP", "unknown instrument ETH-PERP"),
        ("halted", "BTC-PERP", "instrument BTC-PERP is halted"),
        ("expired", "BTC-PERP", "instrument BTC-PERP is expired"),
    ],
)
def test_orders_on_unknown_halted_or_expired_instruments_are_refused(venue, setup, symbol, reason):
    if setup:
        venue.perpetual("BTC-PERP", status=setup)
    decision = only(venue.order("alice", symbol, "buy", "1", "60000"))
    assert (decision["accepted"], decision["reason"]) == (False, reason)


def test_an_option_after_its_expiry_time_is_refused_even_before_settlement(venue: Venue):
    venue.option("BTC-C", "70000", expiry="2026-11-01T00:00:00Z")
    venue.index("60000")
    decision = only(venue.order("alice", "BTC-C", "buy", "1", "10"))
    assert decision["reason"] == "instrument BTC-C is expired"


def test_an_option_cannot_be_ordered_before_its_underlying_has_an_index(venue: Venue):
    venue.option("BTC-C", "70000")
    decision = only(venue.order("alice", "BTC-C", "buy", "1", "10"))
    assert decision["reason"] == "no index price for BTC yet: cannot margin BTC-C"


def test_a_duplicate_open_order_id_is_refused(venue: Venue):
    venue.order("alice", "BTC-PERP", "buy", "1", "60000", order_id="same")
    decision = only(venue.order("alice", "BTC-PERP", "buy", "1", "60000", order_id="same"))
    assert decision["reason"] == "duplicate order_id same: that order is still open"


def test_open_orders_per_account_are_capped_so_its_state_stays_bounded():
    venue = Venue(config=EngineConfig(max_open_orders=3))
    venue.perpetual("BTC-PERP")
    venue.mark("BTC-PERP", "60000")
    venue.deposit("alice", "100000")
    for n in range(3):
        assert only(venue.order("alice", "BTC-PERP", "buy", "0.01", "50000", f"o{n}"))["accepted"]
    decision = only(venue.order("alice", "BTC-PERP", "buy", "0.01", "50000", "o3"))
    assert decision["reason"] == "too many open orders: 3 (limit 3)"
    venue.cancel("alice", "o0")
    assert only(venue.order("alice", "BTC-PERP", "buy", "0.01", "50000", "o4"))["accepted"]


def test_reduce_only_orders(venue: Venue):
    flat = only(venue.order("alice", "BTC-PERP", "sell", "1", "60000", reduce_only=True))
    assert flat["reason"] == "reduce-only sell would not reduce the position in BTC-PERP (0)"
    venue.fill("alice", "BTC-PERP", "buy", "2", "60000")
    same_side = only(venue.order("alice", "BTC-PERP", "buy", "1", "60000", reduce_only=True))
    assert same_side["accepted"] is False
    first = only(venue.order("alice", "BTC-PERP", "sell", "1.5", "61000", reduce_only=True))
    assert first["accepted"] is True
    assert first["available_after"] == first["available_before"]  # reserves nothing
    too_much = only(venue.order("alice", "BTC-PERP", "sell", "1", "61000", reduce_only=True))
    assert too_much["reason"].startswith("reduce-only sell of 1 would not reduce")


def test_reduce_only_is_accepted_even_under_water(venue: Venue):
    venue.fill("alice", "BTC-PERP", "buy", "5", "60000")
    # equity 10,000 - 5 x 2,000 = 0; IM on 290,000 = 5,000 + 40,000 x 5% = 7,000
    venue.mark("BTC-PERP", "58000")
    decision = only(venue.order("alice", "BTC-PERP", "sell", "5", "58000", reduce_only=True))
    assert decision["accepted"] is True
    assert decision["available_before"] == "-7000"


def test_cancel_frees_the_reservation_and_an_unknown_order_is_refused(venue: Venue):
    venue.order("alice", "BTC-PERP", "buy", "5", "60000", order_id="o1")
    decision = only(venue.cancel("alice", "o1"))
    assert (decision["request"], decision["accepted"]) == ("cancel", True)
    assert (decision["available_before"], decision["available_after"]) == ("2500", "10000")
    again = only(venue.cancel("alice", "o1"))
    assert (again["accepted"], again["reason"]) == (False, "unknown order o1")


def test_a_fill_consumes_its_order(venue: Venue):
    venue.order("alice", "BTC-PERP", "buy", "5", "60000", order_id="o1")
    venue.fill("alice", "BTC-PERP", "buy", "2", "60000", order_id="o1")
    assert venue.engine.accounts["alice"].orders["o1"].qty == 3
    venue.fill("alice", "BTC-PERP", "buy", "3", "60000", order_id="o1")
    assert "o1" not in venue.engine.accounts["alice"].orders


def test_withdrawals_need_both_cash_and_available_margin(venue: Venue):
    ok = only(venue.withdraw("alice", "4000"))
    assert (ok["accepted"], ok["available_before"], ok["available_after"]) == (
        True,
        "10000",
        "6000",
    )
    venue.fill("alice", "BTC-PERP", "buy", "3", "60000")  # IM 180,000 x 2% = 3,600
    refused = only(venue.withdraw("alice", "2500"))
    assert refused["reason"] == "insufficient margin: available 2400 < 2500"
    venue.mark("BTC-PERP", "62000")  # +6,000 unrealised: available 8,280 but cash is 6,000
    no_cash = only(venue.withdraw("alice", "7000"))
    assert no_cash["reason"] == "insufficient cash: 6000 < 7000"
    assert venue.engine.accounts["alice"].cash == 6000


def test_decision_ids_count_per_account(venue: Venue):
    venue.deposit("bob", "10")
    ids = [
        only(venue.order("alice", "BTC-PERP", "buy", "1", "60000"))["decision_id"],
        only(venue.order("bob", "BTC-PERP", "buy", "1", "60000"))["decision_id"],
        only(venue.withdraw("alice", "1"))["decision_id"],
    ]
    assert ids == ["alice:decision:1", "bob:decision:1", "alice:decision:2"]
