"""Alerts on each change of level, with ratios checked by hand.

alice: 10,000 of cash, long 5 BTC-PERP at 60,000 (SPEC tiers, no fees).
At mark m: equity = 10,000 + 5 (m - 60,000); MM on 5m = 2,500 + (5m - 250,000) x 2.5%.
"""

from __future__ import annotations

import pytest

from marginstream.core.engine import EngineConfig
from marginstream.core.outputs.alerts import Thresholds
from tests.core.venue import Venue, alert_kinds, only, only_alert


@pytest.fixture
def venue() -> Venue:
    venue = Venue()
    venue.perpetual("BTC-PERP")
    venue.mark("BTC-PERP", "60000")
    venue.deposit("alice", "10000")
    venue.deposit("mm", "100000000")
    venue.trade("alice", "mm", "BTC-PERP", "5", "60000")
    return venue


def test_levels_by_hand(venue: Venue):
    # 59,000: equity 5,000; MM 2,500 + 45,000 x 2.5% = 3,625; ratio 0.725: healthy, no alert
    assert venue.mark("BTC-PERP", "59000").outputs == []
    # 58,800: equity 4,000; MM 2,500 + 44,000 x 2.5% = 3,600; ratio 0.9: margin call
    call = only(venue.mark("BTC-PERP", "58800"))
    assert (call["type"], call["margin_ratio"], call["equity"]) == ("margin_call", "0.9", "4000")
    assert call["maintenance_margin"] == "3600"
    # IM on 294,000: 5,000 + 44,000 x 5% = 7,200
    assert call["initial_margin"] == "7200"
    assert call["positions"] == [
        {
            "symbol": "BTC-PERP",
            "qty": "5",
            "entry_price": "60000",
            "mark": "58800",
            "unrealized_pnl": "-6000",
        },
    ]
    assert call["trigger"] == {"topic": "prices", "partition": 0, "offset": 2}
    # 58,600: equity 3,000; MM 2,500 + 43,000 x 2.5% = 3,575; ratio 1.191666...: liquidation
    liquidation = only_alert(venue.mark("BTC-PERP", "58600"))
    assert liquidation["type"] == "liquidation"
    assert liquidation["margin_ratio"] == "1.19166666666667"
    # A liquidation alert names each position's prices. Equity at mark x: 5x - 290,000;
    # MM on 5x (second slice): 2,500 + (5x - 250,000) x 2.5% = 0.125x - 3,750.
    # Liquidation: 5x - 290,000 = 0.125x - 3,750, x = 286,250 / 4.875 = 58,717.948...
    # Bankruptcy: 5x - 290,000 = 0, x = 58,000.
    (position,) = liquidation["positions"]
    assert float(position["liquidation_price"]) == pytest.approx(286250 / 4.875, abs=1e-6)
    assert position["bankruptcy_price"] == "58000"
    # 58,500: still liquidation: no second alert for the same level
    assert alert_kinds(venue.mark("BTC-PERP", "58500")) == []
    # Back to 59,000: healthy again
    recovered = only_alert(venue.mark("BTC-PERP", "59000"))
    assert (recovered["type"], recovered["seq"], recovered["alert_id"]) == (
        "recovered",
        3,
        "alice:alert:3",
    )


def test_from_liquidation_back_to_margin_call_is_its_own_alert(venue: Venue):
    venue.mark("BTC-PERP", "58600")  # margin call is skipped straight to liquidation
    assert alert_kinds(venue.mark("BTC-PERP", "58800")) == ["margin_call"]


def test_a_fill_and_a_deposit_move_levels_too(venue: Venue):
    venue.mark("BTC-PERP", "58800")  # margin call
    assert alert_kinds(venue.deposit("alice", "5000")) == ["recovered"]  # equity 9,000: 0.4
    # Buying 15 more at 58,800 with the fill (a fact): notional 1,176,000.
    # MM = 2,500 + 18,750 + 176,000 x 5% = 30,050 > equity 9,000: liquidation
    assert alert_kinds(venue.fill("alice", "BTC-PERP", "buy", "15", "58800")) == ["liquidation"]


def test_an_empty_account_is_never_alerted():
    venue = Venue()
    venue.deposit("carol", "100")
    assert venue.withdraw("carol", "100").outputs[0].value["accepted"] is True
    # Equity 0 with nothing to maintain: ratio 0, not infinite.
    assert len(venue.withdraw("carol", "0.01").outputs) == 1  # the refusal only


def test_thresholds_are_configurable():
    venue = Venue(config=EngineConfig(thresholds=Thresholds(margin_call=0.5, liquidation=0.7)))
    venue.perpetual("BTC-PERP")
    venue.mark("BTC-PERP", "60000")
    venue.deposit("alice", "10000")
    venue.fill("alice", "BTC-PERP", "buy", "5", "60000")
    assert alert_kinds(venue.mark("BTC-PERP", "59000")) == ["liquidation"]  # 0.725 >= 0.7
