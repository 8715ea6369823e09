"""Each instrument's P&L per unit held, in every scenario of its underlying's grid.

The grid (params.py): the underlying moves to each of 2 x buckets + 1 price points from
-range to +range, under three volatility cases (up, same, down): scenario number
case x points + point. Then each extended move under vol up, its P&L x extended_weight.

- A future or perpetual gains size x mark x move per unit.
- An option is revalued with Black-76 at F (1 + move) under the case's volatility, the
  same time to expiry: size x (value there - value at (F, sigma)). F is the index (the
  strike before any); sigma the option's last iv (min_vol_for_shock_up without one).
  Volatility cases: up = max(sigma (1 + vol_range_up (30 / DTE)^p), min_vol_for_shock_up),
  down = sigma (1 - vol_range_down (30 / DTE)^p), at least 0; p is the short-term power
  under 30 days to expiry, else the long-term one; DTE is at least one day (Deribit does
  not publish what it does as DTE reaches 0: the floor keeps the shock finite).
- A settled instrument, or one with no price at all, moves with nothing: zeros.

Vectors are cached per symbol until the market changes what they read (its quote, its
underlying's index or parameters): a move of one underlying recomputes only its own.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from marginstream.core.instruments import Kind
from marginstream.core.market import Market
from marginstream.core.portfolio.params import PortfolioParams
from marginstream.core.pricing import black76_price, years_to_expiry

VOL_CASES = ("up", "same", "down")
_SHORT_TERM_DAYS = 30.0
_MIN_DAYS = 1.0


class Exposure(NamedTuple):
    """What one unit of an instrument adds to its holder's grid, and to its charges."""

    vector: np.ndarray  # P&L per scenario, per unit held (contract size included)
    roll: float  # roll shock per unit of |qty|: size x mark x the roll rate (futures)
    option: tuple[int, float] | None  # options: (expiry, strike), the contingency's group
    size: float  # contract size
    charge: float  # contingency per unit of net short option (x size): index x parameter


class Scenario(NamedTuple):
    move: float
    vol: str  # up, same or down
    extended: bool


def scenarios(params: PortfolioParams) -> list[Scenario]:
    """The grid's scenarios, in the order of every vector's entries."""
    grid = [Scenario(x, case, False) for case in VOL_CASES for x in params.moves()]
    return grid + [Scenario(x, "up", True) for x in params.extended_moves]


def width(params: PortfolioParams) -> int:
    return 3 * (2 * params.buckets + 1) + len(params.extended_moves)


def exposure(market: Market, symbol: str) -> Exposure:
    """The symbol's exposure, from the cache while what it reads is unchanged."""
    instrument = market.instruments[symbol]
    underlying = instrument.underlying
    index = market.index.get(underlying)
    key = (
        market.quotes[symbol].seq,
        0 if index is None else index.seq,
        market.portfolio_seq.get(underlying, 0),
        market.clock() if index is None else 0,
    )
    cached = market.exposures.get(symbol)
    if cached is not None and cached[0] == key:
        return cached[1]
    found = _exposure(market, symbol)
    market.exposures[symbol] = (key, found)
    return found


def exposure_at(market: Market, symbol: str, scale: float) -> Exposure:
    """The symbol's exposure were its underlying's index (and so every mark on it) scale
    times what it is: a portfolio account's liquidation prices search over scale."""
    return _exposure(market, symbol, scale)


def _exposure(market: Market, symbol: str, scale: float = 1.0) -> Exposure:
    instrument = market.instruments[symbol]
    params = market.params_for(instrument.underlying)
    size = instrument.size
    spot = market.risk_index(instrument.underlying)
    if spot is not None and scale != 1.0:
        spot = spot * scale
    index = market.index.get(instrument.underlying)
    now = index.ts if index is not None else market.clock()
    moves = params.moves()
    if market.settlement(symbol) is not None:
        return Exposure(np.zeros(width(params)), 0.0, None, size, 0.0)
    if not instrument.is_option:
        mark = market.risk_mark(symbol)
        price = mark * scale if mark is not None else (spot if spot is not None else 0.0)
        unit = size * price
        grid = [unit * x for _ in VOL_CASES for x in moves]
        extended = [params.extended_weight * (unit * x) for x in params.extended_moves]
        rate = params.min_annualised_move
        if instrument.kind is Kind.FUTURE:
            assert instrument.expiry_ms is not None
            years = max(years_to_expiry(instrument.expiry_ms, now), 0.0)
            rate = max(params.annualised_move_risk * years, params.min_annualised_move)
        return Exposure(np.array(grid + extended), unit * rate, None, size, 0.0)
    assert instrument.strike is not None and instrument.expiry_ms is not None
    strike = float(instrument.strike)
    forward = spot if spot is not None else strike
    inputs = market.pricing_inputs(symbol)
    if inputs is None:
        years = years_to_expiry(instrument.expiry_ms, now)
        vol = params.min_vol_for_shock_up
    else:
        years, vol = inputs
    put = instrument.is_put
    days = max(years * 365.0, _MIN_DAYS)
    power = params.short_term_vega_power if days < _SHORT_TERM_DAYS else params.long_term_vega_power
    shock = (_SHORT_TERM_DAYS / days) ** power
    up = max(vol * (1.0 + params.vol_range_up * shock), params.min_vol_for_shock_up)
    down = max(vol * (1.0 - params.vol_range_down * shock), 0.0)
    base = black76_price(forward, strike, years, vol, put)
    grid = [
        size * (black76_price(forward * (1.0 + x), strike, years, sigma, put) - base)
        for sigma in (up, vol, down)
        for x in moves
    ]
    extended = [
        params.extended_weight
        * (size * (black76_price(forward * (1.0 + x), strike, years, up, put) - base))
        for x in params.extended_moves
    ]
    charge = 0.0 if spot is None else spot * params.short_option_contingency
    return Exposure(np.array(grid + extended), 0.0, (instrument.expiry_ms, strike), size, charge)
