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
- A settled instrument moves with nothing: zeros. A future or perpetual with neither a
  mark nor an index is not on the grid at all (priced=False): its positions keep their
  standard margin (margin.py).

Vectors are cached per symbol until the market changes what they read (its quote, its
underlying's index or parameters): a move of one underlying recomputes only its own.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from marginstream.core.portfolio.params import PortfolioParams
from marginstream.core.risk.instruments import Kind
from marginstream.core.risk.market import Market
from marginstream.core.risk.pricing import black76_price, black76_prices, years_to_expiry

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
    # False: a future or perpetual with neither a mark nor an index, which the grid cannot
    # move: its positions keep their standard margin (margin.py).
    priced: bool = True


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
    return exposures_at(market, [(symbol, scale)])[0]


def exposures_at(market: Market, wanted: list[tuple[str, float]]) -> list[Exposure]:
    """exposure_at of each (symbol, scale), the options' valuations made in one call.
    Cached while the market is unchanged: every account's search walks the same ladder of
    scales first (core/portfolio/prices.py), so most are found here."""
    seq, cache = market.shifted_exposures
    if seq != market.seq:  # every market change ticks seq first
        cache = {}
        market.shifted_exposures = (market.seq, cache)
    pending: dict[tuple[str, float], _Valuation] = {}
    for pair in wanted:
        if pair[1] != 1.0 and pair not in cache and pair not in pending:
            planned = _plan(market, *pair)
            if isinstance(planned, Exposure):
                cache[pair] = planned
            else:
                pending[pair] = planned
    if pending:
        cache.update(zip(pending, _valued(list(pending.values())), strict=True))
    return [exposure(market, s) if k == 1.0 else cache[(s, k)] for s, k in wanted]


class _Valuation(NamedTuple):
    """An option's exposure before its scenarios are valued: what to value, and with what."""

    forwards: list[float]
    vols: list[float]
    strike: float
    years: float
    put: bool
    base: float  # its value at (F, sigma)
    size: float
    extended: int  # the first extended scenario
    weight: float
    option: tuple[int, float]
    charge: float


def _valued(valuations: list[_Valuation]) -> list[Exposure]:
    counts = [len(v.forwards) for v in valuations]
    values = black76_prices(
        np.array([f for v in valuations for f in v.forwards]),
        np.repeat([v.strike for v in valuations], counts),
        np.repeat([v.years for v in valuations], counts),
        np.array([sigma for v in valuations for sigma in v.vols]),
        np.repeat([v.put for v in valuations], counts),
    )
    found, start = [], 0
    for v, count in zip(valuations, counts, strict=True):
        vector = v.size * (values[start : start + count] - v.base)
        vector[v.extended :] = v.weight * vector[v.extended :]  # at the extended weight
        found.append(Exposure(vector, 0.0, v.option, v.size, v.charge))
        start += count
    return found


def _exposure(market: Market, symbol: str, scale: float = 1.0) -> Exposure:
    planned = _plan(market, symbol, scale)
    return planned if isinstance(planned, Exposure) else _valued([planned])[0]


def _plan(market: Market, symbol: str, scale: float) -> Exposure | _Valuation:
    """The exposure of a future, perpetual or settled instrument; an option's valuation."""
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
        if mark is None and spot is None:
            return Exposure(np.zeros(width(params)), 0.0, None, size, 0.0, priced=False)
        price = mark * scale if mark is not None else spot
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
    cases = [(forward * (1.0 + x), sigma) for sigma in (up, vol, down) for x in moves]
    cases += [(forward * (1.0 + x), up) for x in params.extended_moves]
    return _Valuation(
        [f for f, _ in cases], [sigma for _, sigma in cases], strike, years, put,
        black76_price(forward, strike, years, vol, put), size, 3 * len(moves),
        params.extended_weight, (instrument.expiry_ms, strike),
        forward * params.short_option_contingency,  # the strike before any index
    )  # fmt: skip
