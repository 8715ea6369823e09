"""Portfolio accounts' liquidation and bankruptcy prices, for one account or many at once.

For each underlying an account holds positions on, the price is a scale of its index: the
index moves to scale x index, every mark on it with it (a future's, in proportion; an
option's, re-priced by the model there), and the grid is re-margined there (scenarios.py
exposure_at); other underlyings are held. The liquidation scale is where threshold x
equity = maintenance, the bankruptcy scale where equity = 0, nearest the index.

Why a grid of scales: re-margining a book at another index re-prices each option in every
scenario (some thirty Black-76 valuations), so a root searched per account at scales of
its own (as standard margin's option books are, core/liquidation/prices.py) costs about a
millisecond an account, seconds in a cascade. Here the scales are the points STEP**j, for
integer j, shared by every account: each (instrument, j) is valued once for all. The
search walks the ladder of standard margin (as j's, nearest first) for every account in
lock-step, then bisects the bracket over the integers, and interpolates the gap linearly
between the last two neighbouring points, 0.1% apart: the root is within about 1e-6 of
the index of the exact one (the gap is smooth at that scale).

One account's prices are the same function on one account, so a single account's alert
and a cascade's give the same prices to the bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from marginstream.core.portfolio.many import Table, grid_initial
from marginstream.core.portfolio.margin import grid
from marginstream.core.portfolio.scenarios import exposures_at
from marginstream.core.risk.market import Market
from marginstream.core.risk.pricing import black76_price, black76_prices

if TYPE_CHECKING:
    from marginstream.core.risk.figures import MarginFigures, RiskRow

STEP = 1.001
_SPAN = 1 << 32  # a (symbol, point) pair as one integer: symbol x _SPAN + point + _SPAN / 2
_DOWN = (0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 0.9, 0.99, 0.999)
_UP = (0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.0, 2.0, 4.0, 9.0, 19.0, 99.0)


def _j(scale: float) -> int:
    return round(math.log(scale) / math.log(STEP))


# The ladder as points of the grid, nearest first: (j, direction).
LADDER = sorted([(d, _j(1.0 - d), -1) for d in _DOWN] + [(d, _j(1.0 + d), 1) for d in _UP])


def scale(j: int) -> float:
    return STEP**j


class Book(NamedTuple):
    """One account's positions on one underlying, and the rest of its figures held."""

    fixed_equity: float  # the account's equity without these positions' values
    fixed_maintenance: float  # its maintenance without this underlying's
    symbols: list[str]  # in symbol order
    qty: list[float]
    # Per position: a future's equity is a + b x scale; an option's q x size x its price
    # (modelled: black76_price's (strike, years, vol, put); else its held mark, in a).
    a: list[float]
    b: list[float]
    model: list[tuple[float, float, float, bool] | None]


def book_of(
    held: list[RiskRow], figures: MarginFigures, maintenance: float, market: Market
) -> Book:
    """The book of an account's held positions on one underlying (in symbol order), its
    figures and that underlying's maintenance margin."""
    symbols, qty, a, b, model = [], [], [], [], []
    value = 0.0
    for row in held:
        instrument, q = row.instrument, row.inputs.qty
        symbols.append(instrument.symbol)
        qty.append(q)
        value += row.risk.value
        inputs = market.model_inputs(instrument.symbol) if instrument.is_option else None
        if not instrument.is_option:
            slope = q * instrument.size * row.risk.mark
            a.append(row.risk.value - slope)
            b.append(slope)
            model.append(None)
        elif inputs is None:
            a.append(q * instrument.size * row.risk.mark)
            b.append(0.0)
            model.append(None)
        else:
            a.append(0.0)
            b.append(q * instrument.size)
            model.append((float(instrument.strike or 0), *inputs, instrument.is_put))
    return Book(
        figures.equity - value, figures.maintenance_margin - maintenance, symbols, qty, a, b,
        model,
    )  # fmt: skip


class _Columns:
    """Books of one underlying as columns: one entry per position, grouped by book."""

    def __init__(self, books: list[Book], market: Market, underlying: str, index: float) -> None:
        self.market, self.index = market, index
        self.mm_factor = market.params_for(underlying).mm_factor
        self.count = len(books)
        self.fixed_equity = np.array([b.fixed_equity for b in books])
        self.fixed_maintenance = np.array([b.fixed_maintenance for b in books])
        self.book = np.repeat(np.arange(self.count), [len(b.symbols) for b in books])
        self.symbols = sorted({s for b in books for s in b.symbols})
        number = {s: n for n, s in enumerate(self.symbols)}
        self.symbol = np.array([number[s] for b in books for s in b.symbols], dtype=np.int64)
        self.qty = np.array([q for b in books for q in b.qty])
        self.a = np.array([x for b in books for x in b.a])
        self.b = np.array([x for b in books for x in b.b])
        models = [m for b in books for m in b.model]
        self.modelled = np.array([m is not None for m in models])
        self.strike = np.array([m[0] if m else 1.0 for m in models])
        self.years = np.array([m[1] if m else 1.0 for m in models])
        self.vol = np.array([m[2] if m else 1.0 for m in models])
        self.put = np.array([m[3] if m else False for m in models])
        self._tables: dict[int, Table] = {}
        self._ladder: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # at(), by ladder point

    def _shared(self, j: int) -> Table:
        """Every symbol's exposure at point j, by symbol number."""
        found = self._tables.get(j)
        if found is None:
            point = scale(j)
            found = self._tables[j] = Table.of(
                exposures_at(self.market, [(symbol, point) for symbol in self.symbols])
            )
        return found

    def at(self, j: np.ndarray, books: np.ndarray, margin: bool) -> tuple[np.ndarray, ...]:
        """(equity, maintenance) of books at their points j (maintenance only if margin).
        A ladder step's figures are kept: both roots walk the same ladder."""
        if books.size and (j == j[0]).all():
            point = int(j[0])
            equity, maintenance = self._ladder.setdefault(
                point, (np.full(self.count, np.nan), np.full(self.count, np.nan))
            )
            missing = books[np.isnan(equity[books] if not margin else maintenance[books])]
            if missing.size:
                found = self._at(j[: missing.size], missing, margin)
                equity[missing] = found[0]
                if margin:
                    maintenance[missing] = found[1]
            return (equity[books], maintenance[books]) if margin else (equity[books],)
        return self._at(j, books, margin)

    def _at(self, j: np.ndarray, books: np.ndarray, margin: bool) -> tuple[np.ndarray, ...]:
        take = np.isin(self.book, books)
        entries = np.flatnonzero(take)
        local = np.zeros(self.count, dtype=np.int64)
        local[books] = np.arange(books.size)
        group = local[self.book[entries]]
        k_book = np.array([scale(int(x)) for x in j])
        k = k_book[group]
        terms = self.a[entries] + self.b[entries] * k
        priced = self.modelled[entries]
        if priced.any():
            chosen = entries[priced]
            terms[priced] = self.b[chosen] * black76_prices(
                self.index * k[priced], self.strike[chosen], self.years[chosen],
                self.vol[chosen], self.put[chosen],
            )  # fmt: skip
        equity = self.fixed_equity[books].copy()
        np.add.at(equity, group, terms)
        if not margin:
            return (equity,)
        points = j[group]
        if (points == points[0]).all():  # a ladder step: one point for every book
            table, inst = self._shared(int(points[0])), self.symbol[entries]
        else:
            code = self.symbol[entries] * _SPAN + (points + _SPAN // 2)
            unique, where = np.unique(code, return_inverse=True)
            inst = where.ravel()
            pairs = [
                (self.symbols[int(c // _SPAN)], scale(int(c % _SPAN) - _SPAN // 2)) for c in unique
            ]
            table = Table.of(exposures_at(self.market, pairs))
        grid = grid_initial(table, inst, group, books.size, self.qty[entries])
        return equity, self.fixed_maintenance[books] + self.mm_factor * grid


def solve(columns: _Columns, threshold: float) -> list[tuple[float | None, float | None]]:
    """(liquidation, bankruptcy) scale of each book; None where none is found."""

    def liquidation(j: np.ndarray, books: np.ndarray) -> np.ndarray:
        equity, maintenance = columns.at(j, books, True)
        return np.where(maintenance > 0.0, threshold * equity - maintenance, 1.0)

    def bankruptcy(j: np.ndarray, books: np.ndarray) -> np.ndarray:
        return columns.at(j, books, False)[0]

    roots = [_roots(gap, columns.count) for gap in (liquidation, bankruptcy)]
    return [
        (None if math.isnan(x) else float(x), None if math.isnan(y) else float(y))
        for x, y in zip(*roots, strict=True)
    ]


Gap = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _roots(gap: Gap, count: int) -> np.ndarray:
    every = np.arange(count)
    start = gap(np.zeros(count, dtype=np.int64), every)
    roots = np.full(count, np.nan)
    roots[start == 0.0] = 1.0
    searching = start != 0.0
    last = {d: (np.zeros(count, dtype=np.int64), start.copy()) for d in (-1, 1)}
    ja, fa = np.zeros(count, dtype=np.int64), np.zeros(count)
    jb, fb = np.zeros(count, dtype=np.int64), np.zeros(count)
    bracket = np.zeros(count, dtype=bool)
    for _, j, direction in LADDER:
        books = np.flatnonzero(searching)
        if books.size == 0:
            break
        value = gap(np.full(books.size, j, dtype=np.int64), books)
        previous, previous_value = last[direction]
        found = (value <= 0.0) != (previous_value[books] <= 0.0)
        hit = books[found]
        ja[hit], fa[hit] = previous[hit], previous_value[hit]
        jb[hit], fb[hit] = j, value[found]
        searching[hit], bracket[hit] = False, True
        previous[books], previous_value[books] = j, value
    # Regula falsi over the integers, Illinois' way: the secant's point, rounded to a point
    # strictly inside the bracket; an end kept twice in a row has its weight halved (wa,
    # wb: the gaps the secant is drawn through; fa, fb stay the true gaps).
    wa, wb = fa.copy(), fb.copy()
    kept = np.zeros(count)  # +1: a kept last step, -1: b kept
    while True:
        wide = np.flatnonzero(bracket & (np.abs(jb - ja) > 1))
        if wide.size == 0:
            break
        a, b = ja[wide], jb[wide]
        with np.errstate(all="ignore"):
            secant = (a * wb[wide] - b * wa[wide]) / (wb[wide] - wa[wide])
        secant = np.where(np.isfinite(secant), secant, 0.5 * (a + b))
        low, high = np.minimum(a, b) + 1, np.maximum(a, b) - 1
        middle = np.clip(np.rint(secant), low, high).astype(np.int64)
        value = gap(middle, wide)
        same = (value <= 0.0) == (fb[wide] <= 0.0)  # the point replaces b, a is kept
        b_side, a_side = wide[same], wide[~same]
        wa[b_side] = np.where(kept[b_side] == 1, wa[b_side] * 0.5, wa[b_side])
        wb[a_side] = np.where(kept[a_side] == -1, wb[a_side] * 0.5, wb[a_side])
        jb[b_side], fb[b_side], wb[b_side] = middle[same], value[same], value[same]
        ja[a_side], fa[a_side], wa[a_side] = middle[~same], value[~same], value[~same]
        kept[b_side], kept[a_side] = 1.0, -1.0
    done = np.flatnonzero(bracket)
    ka = np.array([scale(int(x)) for x in ja[done]])
    kb = np.array([scale(int(x)) for x in jb[done]])
    with np.errstate(all="ignore"):
        between = ka + (kb - ka) * fa[done] / (fa[done] - fb[done])
    roots[done] = np.where(fa[done] != fb[done], between, 0.5 * (ka + kb))
    return roots


def portfolio_scales(
    books: list[Book], market: Market, underlying: str, threshold: float
) -> list[tuple[float | None, float | None]]:
    """(liquidation, bankruptcy) scales of the books, all on underlying (its index > 0).
    One book (a fill's alert) is solved by _one, the same steps on Python floats: NumPy's
    per-call cost on arrays of one would be most of it."""
    index = market.risk_index(underlying)
    assert index is not None and index > 0.0
    if len(books) == 1:
        return [_one(books[0], market, underlying, index, threshold)]
    return solve(_Columns(books, market, underlying, index), threshold)


def _one(
    book: Book, market: Market, underlying: str, index: float, threshold: float
) -> tuple[float | None, float | None]:
    """solve() of one book, operation for operation (tests/core/test_portfolio.py)."""
    mm_factor = market.params_for(underlying).mm_factor
    seen: dict[int, tuple[float, float | None]] = {}

    def at(j: int, margin: bool) -> tuple[float, float | None]:
        found = seen.get(j)
        if found is not None and (found[1] is not None or not margin):
            return found
        k = scale(j)
        equity = book.fixed_equity
        for a, b, model in zip(book.a, book.b, book.model, strict=True):
            term = a + b * k
            if model is not None:
                term = b * black76_price(index * k, *model)
            equity = equity + term
        maintenance = None
        if margin:
            entries = [
                (q, exposure) for q, exposure in zip(
                    book.qty, exposures_at(market, [(s, k) for s in book.symbols]), strict=True
                )
            ]  # fmt: skip
            maintenance = book.fixed_maintenance + mm_factor * grid(entries).initial
        seen[j] = (equity, maintenance)
        return equity, maintenance

    def liquidation(j: int) -> float:
        equity, maintenance = at(j, True)
        assert maintenance is not None
        return threshold * equity - maintenance if maintenance > 0.0 else 1.0

    def bankruptcy(j: int) -> float:
        return at(j, False)[0]

    return _root(liquidation), _root(bankruptcy)


def _root(gap: Callable[[int], float]) -> float | None:
    """_roots for one book, on Python numbers (the same comparisons and arithmetic)."""
    start = gap(0)
    if start == 0.0:
        return 1.0
    last = {-1: (0, start), 1: (0, start)}
    bracket = None
    for _, j, direction in LADDER:
        value = gap(j)
        previous, previous_value = last[direction]
        if (value <= 0.0) != (previous_value <= 0.0):
            bracket = (previous, previous_value, j, value)
            break
        last[direction] = (j, value)
    if bracket is None:
        return None
    ja, fa, jb, fb = bracket
    wa, wb, kept = fa, fb, 0
    while abs(jb - ja) > 1:
        secant = math.nan
        if wb - wa != 0.0:
            secant = (ja * wb - jb * wa) / (wb - wa)
        if not math.isfinite(secant):
            secant = 0.5 * (ja + jb)
        middle = min(max(round(secant), min(ja, jb) + 1), max(ja, jb) - 1)
        value = gap(middle)
        if (value <= 0.0) == (fb <= 0.0):  # the point replaces b, a is kept
            wa = wa * 0.5 if kept == 1 else wa
            jb, fb, wb, kept = middle, value, value, 1
        else:
            wb = wb * 0.5 if kept == -1 else wb
            ja, fa, wa, kept = middle, value, value, -1
    ka, kb = scale(ja), scale(jb)
    return ka + (kb - ka) * fa / (fa - fb) if fa != fb else 0.5 * (ka + kb)
