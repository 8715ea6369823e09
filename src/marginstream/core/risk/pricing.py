"""Black-76 prices and Greeks for European options on the index (r = 0).

Conventions (Deribit's): vega per one volatility point (0.01), theta per
calendar day, both per unit of underlying like price, delta and gamma.
An option chain is tens of strikes, so pricing is scalar; what is vectorised
is the re-margining of the accounts that hold them (see view.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MS_PER_YEAR = 365 * 86_400_000
_SQRT_2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
# log and erfc as the math module computes them, applied element by element: NumPy's own
# approximations would differ from the scalar path in the last bits.
_log = np.frompyfunc(math.log, 1, 1)
_erfc = np.frompyfunc(math.erfc, 1, 1)


@dataclass(frozen=True, slots=True)
class OptionValue:
    price: float
    delta: float
    gamma: float
    vega: float
    theta: float


def norm_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / _SQRT_2)


def norm_pdf(x: float) -> float:
    return _INV_SQRT_2PI * math.exp(-0.5 * x * x)


def years_to_expiry(expiry_ms: int, ts: int) -> float:
    return (expiry_ms - ts) / MS_PER_YEAR


def intrinsic(forward: float, strike: float, is_put: bool) -> float:
    return max(strike - forward, 0.0) if is_put else max(forward - strike, 0.0)


def black76_price(forward: float, strike: float, years: float, vol: float, is_put: bool) -> float:
    """black76(...).price, to the bit, without the Greeks (the liquidation prices' root
    finding prices an option tens of times per account)."""
    if years <= 0.0 or vol <= 0.0:
        return intrinsic(forward, strike, is_put)
    root = math.sqrt(years)
    spread = vol * root
    d1 = (math.log(forward / strike) + 0.5 * vol * vol * years) / spread
    d2 = d1 - spread
    if is_put:
        price = strike * norm_cdf(-d2) - forward * norm_cdf(-d1)
    else:
        price = forward * norm_cdf(d1) - strike * norm_cdf(d2)
    return max(price, 0.0)


def black76(forward: float, strike: float, years: float, vol: float, is_put: bool) -> OptionValue:
    """Price and Greeks; at or past expiry (or with zero volatility) the intrinsic value."""
    if years <= 0.0 or vol <= 0.0:
        in_the_money = forward < strike if is_put else forward > strike
        delta = (-1.0 if is_put else 1.0) if in_the_money else 0.0
        return OptionValue(intrinsic(forward, strike, is_put), delta, 0.0, 0.0, 0.0)
    root = math.sqrt(years)
    spread = vol * root
    d1 = (math.log(forward / strike) + 0.5 * vol * vol * years) / spread
    d2 = d1 - spread
    density = norm_pdf(d1)
    if is_put:
        price = strike * norm_cdf(-d2) - forward * norm_cdf(-d1)
        delta = norm_cdf(d1) - 1.0
    else:
        price = forward * norm_cdf(d1) - strike * norm_cdf(d2)
        delta = norm_cdf(d1)
    gamma = density / (forward * spread)
    vega = forward * density * root / 100.0
    theta = -forward * density * vol / (2.0 * root) / 365.0
    return OptionValue(max(price, 0.0), delta, gamma, vega, theta)


def black76_prices(
    forward: np.ndarray, strike: np.ndarray, years: np.ndarray, vol: np.ndarray, put: np.ndarray
) -> np.ndarray:
    """black76_price, element by element, to the bit. A put's N(-d) is N of d
    negated, which is exact: two erfc per option, as in the scalar path."""
    with np.errstate(all="ignore"):
        root = np.sqrt(years)
        spread = vol * root
        logs = _log(forward / strike).astype(float)
        d1 = (logs + 0.5 * vol * vol * years) / spread
        d2 = d1 - spread
        sign = np.where(put, -1.0, 1.0)
        n1, n2 = _cdf(sign * d1), _cdf(sign * d2)
        price = np.where(put, strike * n2 - forward * n1, forward * n1 - strike * n2)
    price = np.where(price < 0.0, 0.0, price)  # max(price, 0.0)
    intrinsic = np.where(put, strike - forward, forward - strike)
    intrinsic = np.where(intrinsic < 0.0, 0.0, intrinsic)
    return np.where((years <= 0.0) | (vol <= 0.0), intrinsic, price)


def _cdf(x: np.ndarray) -> np.ndarray:
    """norm_cdf, element by element."""
    return 0.5 * _erfc(-x / _SQRT_2).astype(float)
