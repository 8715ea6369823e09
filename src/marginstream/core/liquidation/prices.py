"""Liquidation and bankruptcy prices of an account's positions, under cross margin.

A position's liquidation price is the price at which the account's margin ratio reaches
the liquidation threshold, and its bankruptcy price the price at which the account's
equity reaches zero, every other price held where it is. "Price" is what moves the
position's value:

- a future or perpetual: its own mark. Equity is linear in it and maintenance margin is
  linear on each tier's slice, so both prices are solved exactly, slice by slice; for one
  position this is the venues' own formula (Binance's isolated long:
  LP = (W + cum - Q E) / (Q mm - Q)).
- an option: the index of its underlying, at which every option the account holds on it
  is re-priced with Black-76 (from its last implied volatility, as the market prices it)
  and re-margined (the short-option formulas read the index too). Futures on the same
  underlying keep their marks. No closed form: the price is bracketed on a ladder of
  index moves outwards from the index (0.5% doubling to 64% down and to 100x up), the
  nearest bracket is bisected until it is narrower than TOLERANCE times the index.

None where no such price exists within that range: no maintenance margin to reach, a
position whose value does not move the account there, a price that would be negative.
Risk figures (floats): shown to traders and used to price liquidation orders, never
booked as they are (closeout.py rounds an order's price to a Decimal).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

from marginstream.core.books.ledger import Account
from marginstream.core.portfolio.margin import by_underlying, portfolio_margin
from marginstream.core.portfolio.prices import Book, book_of, portfolio_scales
from marginstream.core.risk.figures import MarginFigures, RiskRow, Rows, risk_rows, total
from marginstream.core.risk.margin import ShortOptionRates, short_option_margin
from marginstream.core.risk.market import Market
from marginstream.core.risk.pricing import black76_price

TOLERANCE = 1e-9  # of the index: the bisection's final bracket, for option positions
_DOWN = (0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 0.9, 0.99, 0.999)
_UP = (0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.0, 2.0, 4.0, 9.0, 19.0, 99.0)
# Both ladders walked together, nearest first: (distance, direction).
_LADDER = sorted([(d, -1.0) for d in _DOWN] + [(d, 1.0) for d in _UP])


class PositionPrices(NamedTuple):
    liquidation: float | None
    bankruptcy: float | None


class OptionBook(NamedTuple):
    """What an account's equity and maintenance margin are at another index of one
    underlying: the rest of the account held fixed, and its options on it re-priced."""

    fixed_equity: float
    fixed_maintenance: float
    # (qty x size, strike, put?, short margin rates, (years, vol) or None: mark held, mark)
    options: list[tuple[float, float, bool, ShortOptionRates, tuple[float, float] | None, float]]


class PricesToSolve(NamedTuple):
    """An account's futures prices, found; its option books, by underlying, to solve
    (None: no index to move); and which symbol takes which underlying's prices."""

    found: dict[str, PositionPrices]
    books: dict[str, OptionBook | None]
    order: list[tuple[str, str | None]]  # (symbol, its underlying if an option), rows' order


def position_prices(
    account: Account, market: Market, threshold: float, rows: Rows | None = None
) -> dict[str, PositionPrices]:
    """Each open position's prices, by symbol (options: index levels of the underlying).
    (manyprices.py finds the same, to the bit, for many accounts at once.)"""
    if account.portfolio:
        return portfolio_prices(account, market, threshold, rows)
    todo = prices_to_solve(account, market, threshold, rows)
    solved = {
        underlying: PositionPrices(None, None) if book is None
        else _option_prices(book, market.risk_index(underlying) or 0.0, threshold)
        for underlying, book in todo.books.items()
    }  # fmt: skip
    return found_prices(todo, solved)


def prices_to_solve(
    account: Account, market: Market, threshold: float, rows: Rows | None = None
) -> PricesToSolve:
    """Everything position_prices needs, the option roots left to find."""
    if rows is None:
        rows = risk_rows(account, market)
    figures = total(account, rows, market)
    found: dict[str, PositionPrices] = {}
    books: dict[str, OptionBook | None] = {}
    order: list[tuple[str, str | None]] = []
    for symbol, row in rows.items():
        if row.position is None or not row.inputs.qty:
            continue
        instrument = row.instrument
        if not instrument.is_option:
            found[symbol] = _future_prices(row, market, figures, threshold)
            order.append((symbol, None))
            continue
        underlying = instrument.underlying
        order.append((symbol, underlying))
        if underlying not in books:
            books[underlying] = _option_book(rows, market, figures, underlying)
    return PricesToSolve(found, books, order)


def found_prices(
    todo: PricesToSolve, solved: dict[str, PositionPrices]
) -> dict[str, PositionPrices]:
    """The prices by symbol, in the rows' order (futures found, options solved)."""
    return {s: todo.found[s] if u is None else solved[u] for s, u in todo.order}


def _future_prices(
    row: RiskRow, market: Market, figures: MarginFigures, threshold: float
) -> PositionPrices:
    """Exact on each tier's slice: equity = e0 + q s x and, on the slice from `low`,
    MM = m0 + cum + rate (|q| s x - low); the ratio reaches threshold where
    threshold x equity = MM."""
    q, size, mark = row.inputs.qty, row.instrument.size, row.risk.mark
    e0 = figures.equity - q * size * mark  # the account's equity without this position's x
    m0 = figures.maintenance_margin - row.risk.maintenance
    bankrupt = -e0 / (q * size)
    tiers = market.tier_tables[row.instrument.symbol]
    roots = []
    cum = 0.0
    units = abs(q) * size
    for low, width, rate in zip(tiers.lower, tiers.width, tiers.maintenance, strict=True):
        slope = threshold * q * size - rate * units
        if slope:
            x = -(threshold * e0 - m0 - cum + rate * low) / slope
            if x > 0.0 and low <= units * x <= low + width:
                roots.append(x)
        cum += rate * width
    # With positive maintenance at the root: where only equity is zero, that is bankruptcy.
    liquidation = min(roots, key=lambda x: abs(x - mark)) if roots else None
    return PositionPrices(liquidation, bankrupt if bankrupt > 0.0 else None)


def _option_book(
    rows: Rows, market: Market, figures: MarginFigures, underlying: str
) -> OptionBook | None:
    index = market.risk_index(underlying)
    if index is None or index <= 0.0:
        return None
    moving = [
        r for r in rows.values()
        if r.instrument.is_option and r.instrument.underlying == underlying and r.inputs.qty
    ]  # fmt: skip
    fixed_equity = figures.equity - sum(r.risk.value for r in moving)
    fixed_maintenance = figures.maintenance_margin - sum(r.risk.maintenance for r in moving)
    options = []  # what each option's value and margin at another index depend on
    for r in moving:
        instrument = r.instrument
        assert instrument.strike is not None
        options.append((
            r.inputs.qty * instrument.size, float(instrument.strike), instrument.is_put,
            market.option_rates[instrument.symbol], market.model_inputs(instrument.symbol),
            r.risk.mark,
        ))  # fmt: skip
    return OptionBook(fixed_equity, fixed_maintenance, options)


def _option_prices(book: OptionBook, index: float, threshold: float) -> PositionPrices:
    fixed_equity, fixed_maintenance, options = book
    seen: dict[float, tuple[float, float]] = {}

    def at(spot: float) -> tuple[float, float]:
        """(equity, maintenance margin) at index spot; both roots share the ladder's."""
        found = seen.get(spot)
        if found is not None:
            return found
        equity, maintenance = fixed_equity, fixed_maintenance
        for units, strike, is_put, rates, model, held in options:
            mark = held if model is None else black76_price(spot, strike, *model, is_put)
            equity += units * mark
            if units < 0.0:
                maintenance -= units * short_option_margin(spot, strike, mark, is_put, rates)[1]
        found = seen[spot] = (equity, maintenance)
        return found

    def liquidation_gap(spot: float) -> float:
        equity, maintenance = at(spot)
        return threshold * equity - maintenance if maintenance > 0.0 else 1.0

    liquidation = nearest_root(liquidation_gap, index)
    bankruptcy = nearest_root(lambda spot: at(spot)[0], index)
    return PositionPrices(liquidation, bankruptcy)


def portfolio_prices(
    account: Account, market: Market, threshold: float, rows: Rows | None = None
) -> dict[str, PositionPrices]:
    """A portfolio account's prices (many_portfolio_prices of the one account)."""
    if rows is None:
        rows = risk_rows(account, market)
    return many_portfolio_prices([(account, rows)], market, threshold)[0]


def many_portfolio_prices(
    accounts: Sequence[tuple[Account, Rows]], market: Market, threshold: float
) -> list[dict[str, PositionPrices]]:
    """Portfolio accounts' prices: for each underlying, the index level at which the
    account's ratio reaches threshold (equity zero: bankruptcy) when that index moves and
    every mark on it moves in proportion (options re-priced by the model), the grid
    re-margined there; other underlyings held. A position's price is its mark at that
    level (an option's: the index level, as under standard margin).

    A book of futures alone is linear in the move (equity, and every scenario's P&L, hence
    the grid's margin): solved in closed form. Books with options are solved together on
    the grid of scales of core/portfolio/prices.py, each underlying's at once."""
    found: list[dict[str, PositionPrices]] = [{} for _ in accounts]
    pending: dict[str, list[tuple[int, Book, list[RiskRow], float]]] = {}
    for n, (account, rows) in enumerate(accounts):
        grid = portfolio_margin(rows, market)
        figures = total(account, rows, market, grid)
        margins = {m.underlying: m for m in grid.underlyings}
        for underlying, group in by_underlying(rows).items():
            held = [row for row in group if row.position is not None and row.inputs.qty]
            if not held:
                continue
            index = market.risk_index(underlying)
            if index is None or index <= 0.0:
                for row in held:
                    found[n][row.instrument.symbol] = PositionPrices(None, None)
                continue
            mm = margins[underlying].maintenance
            if any(row.instrument.is_option for row in held):
                book = book_of(held, figures, mm, market)
                pending.setdefault(underlying, []).append((n, book, held, index))
                continue
            _place(found[n], held, index, _linear_scales(held, figures, mm, threshold))
    for underlying, books in pending.items():
        scales = portfolio_scales([b for _, b, _, _ in books], market, underlying, threshold)
        for (n, _, held, index), pair in zip(books, scales, strict=True):
            _place(found[n], held, index, PositionPrices(*pair))
    return found


def _place(
    found: dict[str, PositionPrices], held: list[RiskRow], index: float, scales: PositionPrices
) -> None:
    """Each held position's prices from its underlying's scales: a future's mark there,
    an option's index level."""
    for row in held:
        unit = index if row.instrument.is_option else row.risk.mark
        found[row.instrument.symbol] = PositionPrices(
            *(None if k is None else k * unit for k in scales)
        )


def _linear_scales(
    held: list[RiskRow], figures: MarginFigures, maintenance: float, threshold: float
) -> PositionPrices:
    """Futures alone: equity = base + slope x scale and the grid's maintenance is
    maintenance x scale, so threshold x equity = others + maintenance x scale is linear."""
    others = figures.maintenance_margin - maintenance
    slope = sum(row.inputs.qty * row.instrument.size * row.risk.mark for row in held)
    base = figures.equity - slope  # the equity at scale 0
    denominator = threshold * slope - maintenance
    liquidation = (others - threshold * base) / denominator if denominator else 0.0
    bankruptcy = -base / slope if slope else 0.0
    return PositionPrices(
        liquidation if liquidation > 0.0 and maintenance > 0.0 else None,
        bankruptcy if bankruptcy > 0.0 else None,
    )


def nearest_root(gap: Callable[[float], float], origin: float) -> float | None:
    """Where gap changes sign nearest origin on the ladder, solved to TOLERANCE x origin."""
    start = gap(origin)
    if start == 0.0:
        return origin
    last = {-1.0: (origin, start), 1.0: (origin, start)}
    for distance, direction in _LADDER:
        x = origin * (1.0 + direction * distance)
        value = gap(x)
        previous, previous_value = last[direction]
        if (value <= 0.0) != (previous_value <= 0.0):
            return _solve(gap, previous, previous_value, x, value, origin * TOLERANCE)
        last[direction] = (x, value)
    return None


def _solve(
    gap: Callable[[float], float], a: float, fa: float, b: float, fb: float, tolerance: float
) -> float:
    """The root in the bracket [a, b] (gap(a) and gap(b) on either side of <= 0), until
    the bracket is narrower than tolerance: the Illinois method (regula falsi that halves
    the value of an end kept twice in a row), with a bisection whenever three steps have
    not halved the bracket. A dozen evaluations where bisection needs about thirty."""
    kept = 0  # +1: a kept last step, -1: b kept
    steps, width = 0, abs(b - a)
    while abs(b - a) > tolerance:
        steps += 1
        c = (a * fb - b * fa) / (fb - fa) if fb != fa else 0.5 * (a + b)
        if steps % 3 == 0:
            if abs(b - a) > 0.5 * width:
                c = 0.5 * (a + b)
            width = abs(b - a)
        low, high = (a, b) if a < b else (b, a)
        if not low < c < high:
            c = 0.5 * (a + b)
            if not low < c < high:
                break  # no float between them: as narrow as it gets
        fc = gap(c)
        if (fc <= 0.0) == (fb <= 0.0):  # c replaces b, a is kept
            b, fb = c, fc
            if kept == 1:
                fa *= 0.5
            kept = 1
        else:
            a, fa = c, fc
            if kept == -1:
                fb *= 0.5
            kept = -1
    return 0.5 * (a + b)
