"""Tiered and short-option margin against figures computed by hand."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from marginstream.core.risk.instruments import parse_instrument
from marginstream.core.risk.margin import ShortOptionRates, TierTable, short_option_margin
from tests.core.venue import SPEC_TIERS

SPEC_TABLE = TierTable.of(
    parse_instrument(
        {
            "symbol": "P",
            "kind": "perpetual",
            "underlying": "BTC",
            "contract_size": "1",
            "margin": {"tiers": SPEC_TIERS},
        }
    )
)
DEFAULT_RATES = ShortOptionRates(0.15, 0.10, 0.075)


def test_spec_example_notional_1_200_000():
    # IM = 250,000 x 0.02 + 750,000 x 0.05 + 200,000 x 0.10 = 5,000 + 37,500 + 20,000
    assert SPEC_TABLE.initial_margin(1_200_000) == 62_500
    # MM = 250,000 x 0.01 + 750,000 x 0.025 + 200,000 x 0.05 = 2,500 + 18,750 + 10,000
    assert SPEC_TABLE.maintenance_margin(1_200_000) == 31_250


def test_binance_brackets_from_the_venue_notes():
    brackets = [
        {"up_to": "50000", "initial": "0.008", "maintenance": "0.004"},
        {"up_to": "250000", "initial": "0.01", "maintenance": "0.005"},
        {"up_to": "1000000", "initial": "0.02", "maintenance": "0.01"},
        {"up_to": None, "initial": "0.05", "maintenance": "0.025"},
    ]
    table = TierTable.of(
        parse_instrument(
            {
                "symbol": "B",
                "kind": "perpetual",
                "underlying": "BTC",
                "contract_size": "1",
                "margin": {"tiers": brackets},
            }
        )
    )
    assert table.maintenance_margin(250_000) == pytest.approx(1_200)  # 200 + 1,000
    assert table.maintenance_margin(500_000) == pytest.approx(3_700)  # + 250,000 x 1%
    assert table.maintenance_margin(2_000_000) == pytest.approx(33_700)  # + 7,500 + 25,000


def test_tiers_are_continuous_at_their_edges():
    assert SPEC_TABLE.initial_margin(250_000) == 5_000
    assert SPEC_TABLE.initial_margin(250_010) == pytest.approx(5_000 + 10 * 0.05)
    assert SPEC_TABLE.initial_margin(0) == 0


def test_short_call_out_of_the_money():
    # index 60,000, strike 65,000 (5,000 OTM), mark 1,000:
    # IM = max(0.15 x 60,000 - 5,000, 0.10 x 60,000) + 1,000 = max(4,000, 6,000) + 1,000
    # MM = 0.075 x 60,000 + 1,000 = 5,500
    assert short_option_margin(60_000, 65_000, 1_000, False, DEFAULT_RATES) == (7_000, 5_500)


def test_short_call_in_the_money():
    # strike 55,000: OTM 0; IM = max(9,000, 6,000) + 6,000; MM = 4,500 + 6,000
    assert short_option_margin(60_000, 55_000, 6_000, False, DEFAULT_RATES) == (15_000, 10_500)


def test_short_put_out_of_the_money():
    # strike 50,000: OTM = 10,000; IM = max(9,000 - 10,000, 6,000) + 300; MM = 4,500 + 300
    assert short_option_margin(60_000, 50_000, 300, True, DEFAULT_RATES) == (6_300, 4_800)


def test_short_put_is_capped_at_its_strike():
    # strike 4,000: IM = max(9,000 - 56,000, 6,000) + 1 = 6,001 -> 4,000; MM = 4,501 -> 4,000
    assert short_option_margin(60_000, 4_000, 1, True, DEFAULT_RATES) == (4_000, 4_000)
    # A call has no such cap: the same figures stand.
    assert short_option_margin(60_000, 4_000, 1, False, DEFAULT_RATES) == (9_001, 4_501)


@given(st.floats(min_value=0, max_value=1e13) | st.just(math.nan))
def test_tiered_margin_has_the_bits_of_every_slice_summed(notional):
    # TierTable stops at the first slice above the notional (and takes a first-slice
    # notional in one product); the risk view sums every slice. They must agree to the bit.
    for rates in (SPEC_TABLE.initial, SPEC_TABLE.maintenance):
        every_slice = 0.0
        for low, span, rate in zip(SPEC_TABLE.lower, SPEC_TABLE.width, rates, strict=True):
            every_slice += rate * min(max(notional - low, 0.0), span)
        margin = (
            SPEC_TABLE.initial_margin
            if rates is SPEC_TABLE.initial
            else SPEC_TABLE.maintenance_margin
        )
        fast = margin(notional)
        assert fast == every_slice or (math.isnan(fast) and math.isnan(every_slice))
