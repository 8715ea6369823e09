"""The smallest set of reduce-only orders that brings an account in liquidation back to
a target margin ratio, and the account's figures before and after they fill.

Positions are closed in the order of the maintenance margin each frees per unit of
loss at its order's price (the loss being the value given up against the mark; on
portfolio margin, what closing it whole frees of the grid's margin, core/portfolio, and
where no position frees any alone, a hedge, the standard order): the
cheapest relief first; ties by symbol. Whole positions are closed until closing the
next whole one reaches the target; that one is closed by the fewest lots that do
(bisected over whole lots; its last lot may be what remains of the position). Positions
without maintenance margin (long options) free nothing and are left alone. A set has at
most MAX_CLOSES orders (an account may hold thousands of positions; each order is also in
the account's part): if they do not reach the target, the next set, issued once they have
filled, goes on.

"Reaches" is judged on the account as the ledger would hold it after the fills: each
close is booked on a scratch copy with Account.apply_fill at the order's price (which
is what desk.py books a liquidation fill at), and the figures are risk/figures.py's. So the
order published carries "after" figures the account will have if it fills while the
prices stand, and closing one lot less does not reach the target.

An order's price is the position's penalty price (mark moved against the account by
the penalty rate) or its bankruptcy price (policy), as a Decimal of at most
`price_digits` significant digits, rounded against the account (down for a sell, up for
a buy): what a fill of it can carry back.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import NamedTuple

from marginstream.core.books.ledger import Account, Position
from marginstream.core.inputs.numbers import MAX_PLACES, ZERO
from marginstream.core.inputs.records import FillRecord
from marginstream.core.liquidation.prices import PositionPrices, position_prices
from marginstream.core.risk.figures import (
    MarginFigures,
    RiskRow,
    Rows,
    orders_by_symbol,
    risk_row,
    risk_rows,
    total,
)
from marginstream.core.risk.market import Market

MAX_CLOSES = 100  # orders in one set: the next set goes on from where it stopped
PENALTY = "penalty"
BANKRUPTCY = "bankruptcy"


@dataclass(frozen=True, slots=True)
class LiquidationPolicy:
    target_ratio: float | None = None  # None: the margin-call threshold
    pricing: str = PENALTY  # or BANKRUPTCY
    penalty_rate: float = 0.005
    lot: Decimal = Decimal("0.001")  # quantities are whole lots, but for a position's rest
    reissue_after_ms: int = 30_000  # event time an open set waits for its fills
    price_digits: int = 10

    def __post_init__(self) -> None:
        if self.pricing not in (PENALTY, BANKRUPTCY):
            raise ValueError(f"liquidation pricing is {PENALTY} or {BANKRUPTCY}")
        if not 0.0 <= self.penalty_rate < 1.0:
            raise ValueError(f"the liquidation penalty is in [0, 1), got {self.penalty_rate}")
        if not Decimal("1e-12") <= self.lot <= Decimal("1e9"):
            raise ValueError(f"the liquidation lot is from 1e-12 to 1e9, got {self.lot}")
        if not 0 < self.reissue_after_ms <= 10**12:
            raise ValueError(
                f"the liquidation re-issue time is from 1 to 10**12 ms, got {self.reissue_after_ms}"
            )


class Close(NamedTuple):
    symbol: str
    side: str
    qty: Decimal
    price: Decimal
    bankruptcy_price: float | None  # the position's (an index level, for an option)


class Closeout(NamedTuple):
    closes: list[Close]
    before: MarginFigures
    after: MarginFigures
    reaches_target: bool


def plan(
    account: Account,
    market: Market,
    policy: LiquidationPolicy,
    threshold: float,
    target: float,
    rows: Rows | None = None,
    prices: dict[str, PositionPrices] | None = None,
) -> Closeout:
    """rows and prices: the account's risk_rows and position_prices, if known already."""
    if rows is None:
        rows = risk_rows(account, market)
    before = total(account, rows, market)
    if prices is None:
        prices = position_prices(account, market, threshold, rows)
    ranked = _ranked(account, market, policy, rows, prices, before, account.portfolio)
    if account.portfolio and not ranked:
        # A hedge: no position frees the grid's margin alone. Closed one after another in
        # the standard order instead (its own maintenance per unit of loss), the first
        # legs whole, until what is closed together reaches the target.
        ranked = _ranked(account, market, policy, rows, prices, before, False)
    closes: list[Close] = []
    after = before
    base: Booked | None = None  # the whole closes so far, booked
    for _, _, close in ranked[:MAX_CLOSES]:
        whole = booked(account, market, rows, [close], base)
        if whole.figures.margin_ratio > target:
            closes.append(close)
            base, after = whole, whole.figures
            continue
        qty, after = _fewest_lots(account, market, rows, base, close, after, target, policy.lot)
        closes.append(close._replace(qty=qty))
        return Closeout(closes, before, after, True)
    return Closeout(closes, before, after, after.margin_ratio <= target)


def _ranked(
    account: Account,
    market: Market,
    policy: LiquidationPolicy,
    rows: Rows,
    prices: dict[str, PositionPrices],
    before: MarginFigures,
    on_grid: bool,
) -> list[tuple[float, str, Close]]:
    """Each position's whole close, by relief: the maintenance margin it frees per unit of
    loss, the most first (on_grid: what it frees of the grid's margin, none skipped)."""
    ranked = []
    for symbol, row in rows.items():
        if row.position is None or not row.inputs.qty:
            continue
        if not on_grid and row.risk.maintenance <= 0.0:
            continue
        close = _whole(row, market, policy, prices[symbol])
        freed = row.risk.maintenance
        if on_grid:  # what closing it frees of the grid's margin (a hedge's leg: none)
            alone = booked(account, market, rows, [close]).figures
            freed = before.maintenance_margin - alone.maintenance_margin
            if freed <= 0.0:
                continue
        loss = abs(row.inputs.qty) * row.instrument.size * abs(row.risk.mark - float(close.price))
        relief = math.inf if loss == 0.0 else freed / loss
        ranked.append((-relief, symbol, close))
    ranked.sort(key=lambda item: item[:2])
    return ranked


def _whole(
    row: RiskRow, market: Market, policy: LiquidationPolicy, prices: PositionPrices
) -> Close:
    qty = row.position.qty if row.position is not None else ZERO
    side = "sell" if qty > 0 else "buy"
    against = -1.0 if side == "sell" else 1.0
    price = row.risk.mark * (1.0 + against * policy.penalty_rate)
    bankrupt = prices.bankruptcy
    if policy.pricing == BANKRUPTCY and bankrupt is not None:
        if row.instrument.is_option:  # an index level: the option's value there
            model = market.model_at(row.instrument.symbol, bankrupt)
            price = price if model is None else model.price
        else:
            price = bankrupt
    return Close(row.instrument.symbol, side, abs(qty), order_price(price, side, policy), bankrupt)


def order_price(price: float, side: str, policy: LiquidationPolicy) -> Decimal:
    """price as a Decimal a fill can carry: price_digits significant digits, at most
    MAX_PLACES places, rounded against the account, and at least one unit of the last."""
    exact = Decimal(repr(max(price, 0.0)))
    exponent = (
        max(exact.adjusted() - policy.price_digits + 1, -MAX_PLACES) if exact else -MAX_PLACES
    )
    quantum = Decimal(1).scaleb(exponent)
    rounded = exact.quantize(quantum, rounding=ROUND_FLOOR if side == "sell" else ROUND_CEILING)
    return rounded if rounded > 0 else quantum


def _fewest_lots(
    account: Account,
    market: Market,
    rows: Rows,
    base: Booked | None,
    close: Close,
    so_far: MarginFigures,
    target: float,
    lot: Decimal,
) -> tuple[Decimal, MarginFigures]:
    """The quantity of the fewest lots of close that reach target (the whole does), and
    the account's figures once they (and closes) have filled.

    Solved on a float model of the one row that changes (_fewest_units), then settled on
    the exact path: the fewest n from there whose booking reaches target while n - 1
    lots' does not (usually the model's n: one or two bookings)."""
    whole = close.qty
    most = int((whole / lot).to_integral_value(rounding=ROUND_CEILING))

    def qty(lots: int) -> Decimal:
        return min(lot * lots, whole)

    tried: dict[int, MarginFigures] = {}

    def reaches(lots: int) -> bool:
        if lots <= 0:
            return False  # the account is above target
        if lots not in tried:
            last = close._replace(qty=qty(lots))
            tried[lots] = booked(account, market, rows, [last], base).figures
        return tried[lots].margin_ratio <= target

    if account.portfolio:  # the grid has no slice-wise model: search on the exact path
        return _fewest_lots_on_grid(reaches, tried, qty, so_far, most, target)
    units = _fewest_units(rows[close.symbol], market, close, so_far, target)
    high = int((Decimal(repr(units)) / lot).to_integral_value(rounding=ROUND_CEILING))
    high = min(max(high, 1), most)
    lots = high
    while not reaches(lots):  # ends: the whole (most lots) reaches target
        lots += 1
    while reaches(lots - 1):
        lots -= 1
    return qty(lots), tried[lots]


def _fewest_lots_on_grid(
    reaches: Callable[[int], bool],
    tried: dict[int, MarginFigures],
    qty: Callable[[int], Decimal],
    so_far: MarginFigures,
    most: int,
    target: float,
) -> tuple[Decimal, MarginFigures]:
    """_fewest_lots for a portfolio account: the gap target x equity - maintenance is
    interpolated between no lots (so_far) and the whole (most lots, which reach target)
    for a first guess; the guess and its neighbour usually settle it (two bookings), and
    a bisection between them and the ends settles the rest."""
    reaches(most)
    whole = tried[most]
    start = target * so_far.equity - so_far.maintenance_margin
    end = target * whole.equity - whole.maintenance_margin
    share = start / (start - end) if start < 0.0 < end else 1.0
    guess = min(max(math.ceil(most * share), 1), most)
    low, high = 0, most  # low does not reach, high does
    if reaches(guess):
        high = guess
        if not reaches(guess - 1):
            return qty(high), tried[high]
        high = guess - 1
    else:
        low = guess
        if guess + 1 <= most and reaches(guess + 1):
            return qty(guess + 1), tried[guess + 1]
        low = guess + 1
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if reaches(middle) else (middle, high)
    return qty(high), tried[high]


def _fewest_units(
    row: RiskRow, market: Market, close: Close, so_far: MarginFigures, target: float
) -> float:
    """The fewest units of row closed at close.price that reach target, in floats.

    Closing d units lowers equity by d x what a unit gives up against the mark (g), and
    leaves the row the MM of what remains, linear on each tier's slice: MM = a + b x left.
    So on each slice the condition MM_total <= target x equity (equity > 0) is linear in
    d, and its smallest solution is found exactly; the fewest over the slices (or the
    whole) is the answer. Not monotone in general (an account whose equity is below the
    penalty on the whole position reaches the target on an interval, then at the whole),
    which is why it is solved, not bisected."""
    instrument, mark = row.instrument, row.risk.mark
    held = abs(row.inputs.qty)
    give_up = instrument.size * abs(mark - float(close.price))
    equity = so_far.equity
    others = so_far.maintenance_margin - row.risk.maintenance
    slices: list[tuple[float, float, float, float]] = []  # left from, to; MM = a + b left
    if instrument.is_option:
        slices.append((0.0, math.inf, 0.0, row.risk.maintenance / held))
    elif instrument.size * mark > 0.0:
        unit = instrument.size * mark  # notional per unit left
        tiers = market.tier_tables[instrument.symbol]
        cum = 0.0
        for low, width, rate in zip(tiers.lower, tiers.width, tiers.maintenance, strict=True):
            slices.append((low / unit, (low + width) / unit, cum - rate * low, rate * unit))
            cum += rate * width
    best = held
    for left_from, left_to, a, b in slices:
        d_low, d_high = max(held - left_to, 0.0), min(held - left_from, held)
        if d_low > d_high:
            continue
        # h(d) = target x (equity - d g) - others - a - b (held - d) >= 0
        h0 = target * equity - others - a - b * held
        slope = b - target * give_up
        if slope > 0.0:
            d = max(d_low, -h0 / slope)
        elif h0 + slope * d_low >= 0.0:
            d = d_low
        else:
            continue
        if d <= d_high and equity - d * give_up > 0.0:
            best = min(best, d)
    return best


class Booked(NamedTuple):
    """Closes booked on a scratch copy of an account: the copy, its rows, its figures."""

    account: Account
    rows: Rows
    figures: MarginFigures


def booked(
    account: Account,
    market: Market,
    rows: Rows,
    closes: list[Close],
    base: Booked | None = None,
) -> Booked:
    """closes booked on a scratch copy of account, or of base (earlier closes booked on
    it already: plan adds one close at a time, each booking one fill, not all again).
    The same fills in the same order as booking them all on account: the same result."""
    start, start_rows = (account, rows) if base is None else (base.account, base.rows)
    scratch = object.__new__(Account)  # a shallow copy, without dataclasses.replace's cost
    scratch.__dict__.update(start.__dict__)
    scratch.positions = dict(start.positions)
    changed = {}
    for close in closes:
        position = scratch.positions.get(close.symbol)
        if position is not None:  # its own copy: the fill changes it
            scratch.positions[close.symbol] = Position(
                position.symbol, position.qty, position.cost, position.realized,
                position.funding_index,
            )  # fmt: skip
        instrument = market.instruments[close.symbol]
        fill = FillRecord("", None, account.account_id, close.symbol, close.side, close.qty,
                          close.price, ZERO, 0)  # fmt: skip
        scratch.apply_fill(fill, instrument, market.funding(close.symbol))
        changed[close.symbol] = None
    now = dict(start_rows)
    if changed:
        orders = orders_by_symbol(account) if account.orders else {}
        for symbol in changed:
            now[symbol] = risk_row(scratch, market, symbol, orders.get(symbol, []))
    return Booked(scratch, now, total(scratch, now, market))


def after_closing(
    account: Account, market: Market, rows: Rows, closes: list[Close]
) -> MarginFigures:
    """The account's figures once closes have filled at their prices (on a scratch copy)."""
    return booked(account, market, rows, closes).figures
