"""Liquidation and bankruptcy prices of many accounts at once, to the bit what
prices.position_prices finds for each.

Why: an index move that puts thousands of accounts in liquidation needs every one's
prices, for its alert and its closing set. An option position's price is a root found
on a ladder of index levels and refined by the Illinois method, some thirty Black-76
valuations per account, which in Python cost about 200 µs an account: most of a
cascade. Here each step of that search runs for every account of the underlying at
once, as NumPy arrays: the ladder is walked for all, and each account's bracket is
refined in lock-step, an account leaving the loop when its own bracket is narrow
enough.

Bit for bit: every operation is the scalar path's, in its order, on IEEE doubles
(+, -, x, / and sqrt are correctly rounded in NumPy as in Python); log and erfc, which
NumPy would compute with its own approximations, are the math module's, applied element
by element; min and max are written as the comparisons Python's builtins make. So the
prices, and everything priced from them, are the same whichever path found them
(tests/core/test_many_prices.py checks this over random books).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from marginstream.core.books.ledger import Account
from marginstream.core.liquidation.prices import (
    _LADDER,
    TOLERANCE,
    OptionBook,
    PositionPrices,
    found_prices,
    many_portfolio_prices,
    prices_to_solve,
)
from marginstream.core.risk.figures import Rows
from marginstream.core.risk.market import Market
from marginstream.core.risk.pricing import black76_prices

Gap = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (spots, which accounts) -> gaps


def many_position_prices(
    accounts: Sequence[tuple[Account, Rows]], market: Market, threshold: float
) -> list[dict[str, PositionPrices]]:
    """position_prices(account, market, threshold, rows) of each, in order (portfolio
    accounts': prices.many_portfolio_prices, all at once)."""
    todos = [
        None if a.portfolio else prices_to_solve(a, market, threshold, rows) for a, rows in accounts
    ]
    solved: list[dict[str, PositionPrices]] = [{} for _ in todos]
    by_underlying: dict[str, list[tuple[int, OptionBook]]] = {}
    for n, todo in enumerate(todos):
        if todo is None:
            continue
        for underlying, book in todo.books.items():
            if book is None:
                solved[n][underlying] = PositionPrices(None, None)
            else:
                by_underlying.setdefault(underlying, []).append((n, book))
    for underlying, books in by_underlying.items():
        index = market.risk_index(underlying)
        assert index is not None  # a book is made only where the index is known
        found = _solve_books([book for _, book in books], index, threshold)
        for (n, _), prices in zip(books, found, strict=True):
            solved[n][underlying] = prices
    portfolio = [(n, pair) for n, pair in enumerate(accounts) if todos[n] is None]
    found = many_portfolio_prices([pair for _, pair in portfolio], market, threshold)
    placed = dict(zip((n for n, _ in portfolio), found, strict=True))
    return [
        placed[n] if todo is None else found_prices(todo, s)
        for n, (todo, s) in enumerate(zip(todos, solved, strict=True))
    ]


class _Books:
    """The books of one underlying as columns: an account per row, its options across
    (padded; `held` says which are real)."""

    def __init__(self, books: list[OptionBook]) -> None:
        count, width = len(books), max(len(b.options) for b in books)
        shape = (count, width)
        self.fixed_equity = np.array([b.fixed_equity for b in books])
        self.fixed_maintenance = np.array([b.fixed_maintenance for b in books])
        self.real = np.zeros(shape, dtype=bool)
        self.units, self.strike = np.zeros(shape), np.ones(shape)
        self.put, self.modelled = np.zeros(shape, dtype=bool), np.zeros(shape, dtype=bool)
        self.rate, self.years, self.vol = np.zeros(shape), np.ones(shape), np.ones(shape)
        self.mark = np.zeros(shape)
        for row, book in enumerate(books):
            for column, (units, strike, put, rates, model, mark) in enumerate(book.options):
                self.real[row, column] = True
                self.units[row, column], self.strike[row, column] = units, strike
                self.put[row, column], self.rate[row, column] = put, rates.maintenance
                self.mark[row, column] = mark
                if model is not None:
                    self.modelled[row, column] = True
                    self.years[row, column], self.vol[row, column] = model
        self.width = width

    def at(self, spot: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(equity, maintenance margin) of the accounts `rows` at their index `spot`:
        prices._option_prices's `at`, operation for operation."""
        equity = self.fixed_equity[rows]
        maintenance = self.fixed_maintenance[rows]
        for column in range(self.width):
            real = self.real[rows, column]
            units, strike = self.units[rows, column], self.strike[rows, column]
            put, mark = self.put[rows, column], self.mark[rows, column].copy()
            priced = real & self.modelled[rows, column]  # Black-76 only where it is used
            if priced.any():
                mark[priced] = black76_prices(
                    spot[priced], strike[priced], self.years[rows, column][priced],
                    self.vol[rows, column][priced], put[priced],
                )  # fmt: skip
            equity = np.where(real, equity + units * mark, equity)
            per_unit = self.rate[rows, column] * spot + mark  # margin.short_option_margin
            per_unit = np.where(put & (strike < per_unit), strike, per_unit)
            short = real & (units < 0.0)
            maintenance = np.where(short, maintenance - units * per_unit, maintenance)
        return equity, maintenance


def _solve_books(books: list[OptionBook], index: float, threshold: float) -> list[PositionPrices]:
    columns = _Books(books)

    def liquidation_gap(equity: np.ndarray, maintenance: np.ndarray) -> np.ndarray:
        return np.where(maintenance > 0.0, threshold * equity - maintenance, 1.0)

    def bankruptcy_gap(equity: np.ndarray, maintenance: np.ndarray) -> np.ndarray:
        return equity

    count = len(books)
    every = np.arange(count)
    # The ladder's points are the same for both roots: valued once, as the scalar path's
    # memo does.
    points = [origin_point(index, d, s) for d, s in _LADDER]
    ladder = [columns.at(np.full(count, x), every) for x in (index, *points)]
    found = []
    for gap in (liquidation_gap, bankruptcy_gap):
        values = [gap(*figures) for figures in ladder]

        def solve_gap(spot: np.ndarray, rows: np.ndarray, gap: Any = gap) -> np.ndarray:
            return gap(*columns.at(spot, rows))

        found.append(_nearest_roots(solve_gap, index, points, values))
    liquidation, bankruptcy = found
    return [PositionPrices(_root(liquidation[n]), _root(bankruptcy[n])) for n in range(count)]


def origin_point(origin: float, distance: float, direction: float) -> float:
    """A ladder point, as prices.nearest_root computes it."""
    return origin * (1.0 + direction * distance)


def _root(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _nearest_roots(
    gap: Gap, origin: float, points: list[float], values: list[np.ndarray]
) -> np.ndarray:
    """prices.nearest_root for every account (NaN: None), from the same origin; values:
    the gap at the origin, then at each of the ladder's points."""
    start = values[0]
    count = start.size
    roots = np.full(count, np.nan)
    roots[start == 0.0] = origin
    searching = start != 0.0
    last = {d: (np.full(count, origin), start.copy()) for d in (-1.0, 1.0)}
    bracket = [np.zeros(count) for _ in range(4)]  # a, f(a), b, f(b)
    bracketed = np.zeros(count, dtype=bool)
    for (_, direction), x, value in zip(_LADDER, points, values[1:], strict=True):
        previous, previous_value = last[direction]
        found = searching & ((value <= 0.0) != (previous_value <= 0.0))
        for column, figure in zip(bracket, (previous, previous_value, x, value), strict=True):
            column[found] = figure[found] if isinstance(figure, np.ndarray) else figure
        bracketed |= found
        searching &= ~found
        previous[:], previous_value[:] = x, value
    rows = np.flatnonzero(bracketed)
    if rows.size:
        a, fa, b, fb = (column[rows] for column in bracket)
        roots[rows] = _illinois(gap, rows, a, fa, b, fb, origin * TOLERANCE)
    return roots


def _illinois(
    gap: Gap,
    rows: np.ndarray,
    a: np.ndarray,
    fa: np.ndarray,
    b: np.ndarray,
    fb: np.ndarray,
    tolerance: float,
) -> np.ndarray:
    """prices._solve in lock-step: each account's bracket refined until its own is narrow
    enough (or no float lies inside it)."""
    kept = np.zeros(rows.size)  # +1: a kept last step, -1: b kept
    steps = 0
    width = np.abs(b - a)
    active = np.abs(b - a) > tolerance
    while active.any():
        steps += 1
        with np.errstate(all="ignore"):
            secant = (a * fb - b * fa) / (fb - fa)
        c = np.where(fb != fa, secant, 0.5 * (a + b))
        if steps % 3 == 0:
            c = np.where(np.abs(b - a) > 0.5 * width, 0.5 * (a + b), c)
            width = np.where(active, np.abs(b - a), width)
        low, high = np.where(a < b, a, b), np.where(a < b, b, a)
        outside = ~((low < c) & (c < high))
        c = np.where(outside, 0.5 * (a + b), c)
        stuck = outside & ~((low < c) & (c < high))
        active &= ~stuck  # no float between them: as narrow as it gets
        live = np.flatnonzero(active)
        if live.size == 0:
            break
        fc = np.zeros(rows.size)
        fc[live] = gap(c[live], rows[live])
        same = active & ((fc <= 0.0) == (fb <= 0.0))  # c replaces b, a is kept
        other = active & ~same
        fa = np.where(same & (kept == 1), fa * 0.5, fa)
        fb = np.where(other & (kept == -1), fb * 0.5, fb)
        b, fb = np.where(same, c, b), np.where(same, fc, fb)
        a, fa = np.where(other, c, a), np.where(other, fc, fa)
        kept = np.where(same, 1.0, np.where(other, -1.0, kept))
        active &= np.abs(b - a) > tolerance
    return 0.5 * (a + b)
