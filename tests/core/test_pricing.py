"""Black-76 (r = 0) against figures computed by hand."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from marginstream.core.risk.pricing import MS_PER_YEAR, black76, norm_cdf, years_to_expiry

# F = K = 100, T = 1 year, sigma = 0.2:
#   d1 = (ln(1) + 0.02) / 0.2 = 0.1, d2 = -0.1
#   N(0.1) = 0.539827837277029, N(-0.1) = 0.460172162722971, n(0.1) = 0.396952547477012
N_D1, N_D2, PDF_D1 = 0.539827837277029, 0.460172162722971, 0.396952547477012


def test_at_the_money_call_by_hand():
    value = black76(100.0, 100.0, 1.0, 0.2, is_put=False)
    assert value.price == pytest.approx(100 * N_D1 - 100 * N_D2, rel=1e-12)  # 7.96556745540580
    assert value.delta == pytest.approx(N_D1, rel=1e-12)
    assert value.gamma == pytest.approx(PDF_D1 / (100 * 0.2 * 1.0), rel=1e-12)  # 0.0198476...
    assert value.vega == pytest.approx(100 * PDF_D1 * 1.0 / 100, rel=1e-12)  # per vol point
    assert value.theta == pytest.approx(-100 * PDF_D1 * 0.2 / (2 * 1.0) / 365, rel=1e-12)


def test_at_the_money_put_by_hand():
    value = black76(100.0, 100.0, 1.0, 0.2, is_put=True)
    # K N(-d2) - F N(-d1) = 100 x 0.539827... - 100 x 0.460172... : the call's price (ATM, r = 0)
    assert value.price == pytest.approx(100 * N_D1 - 100 * N_D2, rel=1e-12)
    assert value.delta == pytest.approx(N_D1 - 1, rel=1e-12)


def test_out_of_the_money_call_by_hand():
    # F = 60000, K = 70000, T = 0.25, sigma = 0.6: sigma sqrt(T) = 0.3
    #   d1 = (ln(6/7) + 0.045) / 0.3 = (-0.15415067982725836 + 0.045) / 0.3 = -0.363835599424195
    #   d2 = d1 - 0.3 = -0.663835599424195
    d1 = (math.log(60000 / 70000) + 0.5 * 0.36 * 0.25) / 0.3
    d2 = d1 - 0.3
    assert d1 == pytest.approx(-0.363835599424195, rel=1e-12)
    #   N(d1) = 0.357990388699843, N(d2) = 0.253397769110796 (normal tables)
    #   C = 60,000 x 0.357990... - 70,000 x 0.253397... = 21,479.423 - 17,737.844 = 3,741.579
    assert norm_cdf(d1) == pytest.approx(0.357990388699843, rel=1e-12)
    assert norm_cdf(d2) == pytest.approx(0.253397769110796, rel=1e-12)
    value = black76(60000.0, 70000.0, 0.25, 0.6, is_put=False)
    assert value.price == pytest.approx(3741.579484, rel=1e-9)
    assert value.delta == pytest.approx(0.357990388699843, rel=1e-12)


def test_at_or_after_expiry_is_intrinsic():
    assert black76(110.0, 100.0, 0.0, 0.5, is_put=False).price == 10.0
    assert black76(110.0, 100.0, -0.1, 0.5, is_put=True).price == 0.0
    expired_put = black76(90.0, 100.0, 0.0, 0.5, is_put=True)
    assert (expired_put.price, expired_put.delta, expired_put.gamma) == (10.0, -1.0, 0.0)


def test_time_to_expiry_counts_365_day_years_of_milliseconds():
    assert MS_PER_YEAR == 365 * 86_400_000
    assert years_to_expiry(expiry_ms=31_536_000_000 + 5, ts=5) == 1.0
    assert years_to_expiry(expiry_ms=1_000, ts=2_000) < 0


@given(
    forward=st.floats(1.0, 1e6),
    moneyness=st.floats(0.5, 2.0),
    years=st.floats(1e-3, 3.0),
    vol=st.floats(0.05, 3.0),
)
def test_put_call_parity(forward, moneyness, years, vol):
    strike = forward * moneyness
    call = black76(forward, strike, years, vol, is_put=False)
    put = black76(forward, strike, years, vol, is_put=True)
    # With r = 0: C - P = F - K, and the deltas differ by exactly one.
    assert call.price - put.price == pytest.approx(forward - strike, abs=1e-9 * forward)
    assert call.delta - put.delta == pytest.approx(1.0, abs=1e-12)
    assert call.gamma == pytest.approx(put.gamma, rel=1e-12)
