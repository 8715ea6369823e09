"""An account's risk figures: equity, initial and maintenance margin, available, ratio, Greeks.

This is the authoritative, per-account path: decisions and alerts are taken
on its figures. `row_inputs` turns the exact ledger into the floats both this
path and the vectorised view (view.py) compute on, and `row_risk` is the
formula both apply, so the two can only differ in the order of the final sums.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from typing import NamedTuple

from marginstream.core.books.ledger import Account, OpenOrder, Position
from marginstream.core.inputs.numbers import LEDGER_CONTEXT, ZERO, exact
from marginstream.core.portfolio.margin import PortfolioMargin, portfolio_margin
from marginstream.core.risk.instruments import Instrument, Kind
from marginstream.core.risk.margin import short_option_margin
from marginstream.core.risk.market import Market

# Named tuples built several times per record are made with tuple.__new__: their own
# __new__ is a Python function, which costs twice the tuple.
_new = tuple.__new__
_NONE: list[OpenOrder] = []  # a row without open orders (never changed)


class RowInputs(NamedTuple):
    """One (account, instrument) pair as floats: the position and its open orders.

    (This and the two row types below are named tuples: built several times per record,
    where a frozen dataclass's __init__ costs twice as much.)
    """

    qty: float
    cost: float
    funding_index: float  # perpetuals: the index the position last settled funding at
    buy: float  # open buy quantity, reduce-only orders excluded
    sell: float  # open sell quantity, reduce-only orders excluded
    premium: float  # options: premium reserved by open buy orders
    fallback_price: float  # valuation before the first mark: entry, else the orders' average price


class RowRisk(NamedTuple):
    value: float  # futures: unrealised PnL + accrued funding; options: qty x size x mark
    unrealized: float
    initial: float  # the position's and its orders' initial margin (worse side)
    maintenance: float
    mark: float


@dataclass(frozen=True, slots=True)
class Greeks:
    delta: float = 0.0
    gamma: float = 0.0
    vega: float = 0.0
    theta: float = 0.0

    def __add__(self, other: Greeks) -> Greeks:
        return Greeks(
            self.delta + other.delta,
            self.gamma + other.gamma,
            self.vega + other.vega,
            self.theta + other.theta,
        )


@dataclass(frozen=True, slots=True)
class PositionRisk:
    symbol: str
    position: Position
    entry_price: Decimal | None
    risk: RowRisk


class MarginFigures(NamedTuple):
    """What a decision or a level check needs: equity, initial and maintenance margin."""

    equity: float
    initial_margin: float
    maintenance_margin: float

    @property
    def available(self) -> float:
        return self.equity - self.initial_margin

    @property
    def margin_ratio(self) -> float:
        return margin_ratio(self.maintenance_margin, self.equity)


@dataclass(frozen=True, slots=True)
class AccountRisk:
    cash: Decimal  # exact: settled cash plus funding accrued but not yet settled
    equity: float
    initial_margin: float
    maintenance_margin: float
    available: float
    margin_ratio: float
    positions: tuple[PositionRisk, ...]
    greeks: Greeks
    greeks_by_underlying: dict[str, Greeks]
    portfolio: PortfolioMargin | None = None  # its components, on portfolio margin


def margin_ratio(maintenance: float, equity: float) -> float:
    """MM / equity; infinite when equity <= 0 with margin to maintain; 0 with none to maintain."""
    if maintenance <= 0.0:
        return 0.0
    return math.inf if equity <= 0.0 else maintenance / equity


def row_inputs(
    position: Position | None, orders: list[OpenOrder], instrument: Instrument
) -> RowInputs:
    qty = cost = funding_index = 0.0
    buy = sell = premium = fallback = 0.0
    if orders:
        buy, sell, premium, fallback = _order_totals(orders, instrument)
    if position is not None:
        qty, cost = float(position.qty), float(position.cost)
        settled = position.funding_index  # ZERO itself until funding is first paid: 0.0
        funding_index = 0.0 if settled is ZERO else float(settled)
        if position.qty:
            fallback = cost / (qty * instrument.size)
    if not instrument.is_option:
        premium = 0.0
    return _new(RowInputs, (qty, cost, funding_index, buy, sell, premium, fallback))


def _order_totals(orders: list[OpenOrder], instrument: Instrument) -> tuple[float, ...]:
    """(buy qty, sell qty, buy premium, average price) of the orders that reserve margin.

    Sums are exact: each operation is LEDGER_CONTEXT's own (what @exact would run, without
    switching contexts). Only options reserve premium (row_inputs drops it for others).
    """
    add, multiply = LEDGER_CONTEXT.add, LEDGER_CONTEXT.multiply
    option = instrument.is_option
    buy = sell = premium = notional = ZERO
    for order in orders:
        if order.reduce_only:
            continue
        amount = multiply(order.qty, order.price)
        notional = add(notional, amount)
        if order.side == "buy":
            buy = add(buy, order.qty)
            if option:
                premium = add(premium, multiply(amount, instrument.contract_size))
        else:
            sell = add(sell, order.qty)
    # buy + sell is one of them when the other is untouched ZERO: the same value, so the
    # same float, without an addition and a second conversion.
    buy_qty = 0.0 if buy is ZERO else float(buy)
    sell_qty = 0.0 if sell is ZERO else float(sell)
    if sell is ZERO:
        both = buy_qty
    elif buy is ZERO:
        both = sell_qty
    else:
        both = float(add(buy, sell))
    average = float(notional) / both if both else 0.0
    return buy_qty, sell_qty, float(premium) if option else 0.0, average


def row_risk(row: RowInputs, instrument: Instrument, market: Market) -> RowRisk:
    """The formulas of SPEC section 3 for one row; view.py applies them to arrays."""
    size = instrument.size
    mark, funding = market.risk_floats(instrument.symbol)
    price = mark if mark is not None else row.fallback_price
    q = row.qty
    if not instrument.is_option:
        tiers = market.tier_tables[instrument.symbol]
        unrealized = q * size * price - row.cost if mark is not None else 0.0
        accrual = 0.0
        if instrument.kind is Kind.PERPETUAL:
            accrual = -q * size * (funding - row.funding_index)
        notional = abs(q) * size * price
        buy, sell = row.buy, row.sell
        if buy or sell:  # the worse side of the open orders
            initial = max(
                tiers.initial_margin(abs(q + buy) * size * price),
                tiers.initial_margin(abs(q - sell) * size * price),
            )
        else:  # the same figure, computed once
            initial = tiers.initial_margin(notional)
        maintenance = tiers.maintenance_margin(notional)
        return _new(RowRisk, (unrealized + accrual, unrealized, initial, maintenance, price))
    assert instrument.strike is not None
    strike = float(instrument.strike)
    index = market.risk_index(instrument.underlying)
    spot = index if index is not None else strike
    per_initial, per_maintenance = short_option_margin(
        spot, strike, price, instrument.is_put, market.option_rates[instrument.symbol]
    )
    short = max(-q, 0.0)
    position_initial = short * size * per_initial
    maintenance = short * size * per_maintenance
    new_short = max(row.sell - q, 0.0)
    sell_reservation = (new_short - short) * size * per_initial
    initial = position_initial + max(row.premium, sell_reservation)
    value = q * size * price
    return _new(RowRisk, (value, value - row.cost, initial, maintenance, price))


def row_greeks(row: RowInputs, instrument: Instrument, market: Market) -> Greeks:
    units = row.qty * float(instrument.contract_size)
    if instrument.kind is not Kind.OPTION:
        return Greeks(delta=units)
    model = market.model(instrument.symbol)
    if model is None:
        return Greeks()
    return Greeks(units * model.delta, units * model.gamma, units * model.vega, units * model.theta)


def orders_by_symbol(
    account: Account, extra: OpenOrder | None = None
) -> dict[str, list[OpenOrder]]:
    grouped: dict[str, list[OpenOrder]] = {}
    for order in account.orders.values():
        grouped.setdefault(order.symbol, []).append(order)
    if extra is not None:
        grouped.setdefault(extra.symbol, []).append(extra)
    return grouped


def risk_symbols(account: Account, orders: dict[str, list[OpenOrder]]) -> list[str]:
    """The symbols that carry risk for the account, in a stable order."""
    held = [s for s, p in account.positions.items() if p.qty]
    return sorted(held if not orders else orders.keys() | held)


class RiskRow(NamedTuple):
    """One risk-carrying (account, instrument) pair: its inputs and its figures."""

    instrument: Instrument
    position: Position | None
    inputs: RowInputs
    risk: RowRisk


Rows = dict[str, RiskRow]  # by symbol, in symbol order (so sums are reproducible)


def risk_row(account: Account, market: Market, symbol: str, orders: list[OpenOrder]) -> RiskRow:
    instrument = market.instruments[symbol]
    position = account.positions.get(symbol)
    inputs = row_inputs(position, orders, instrument)
    return _new(RiskRow, (instrument, position, inputs, row_risk(inputs, instrument, market)))


def risk_rows(account: Account, market: Market, extra_order: OpenOrder | None = None) -> Rows:
    """Each risk-carrying row of the account (optionally as if extra_order were also open)."""
    orders = orders_by_symbol(account, extra_order) if account.orders or extra_order else {}
    return {
        symbol: risk_row(account, market, symbol, orders.get(symbol, _NONE))
        for symbol in risk_symbols(account, orders)
    }


def with_order(rows: Rows, account: Account, market: Market, order: OpenOrder) -> Rows:
    """risk_rows(account, market, extra_order=order), from the account's rows: only the
    order's symbol has a new row."""
    symbol = order.symbol
    orders = [o for o in account.orders.values() if o.symbol == symbol]
    orders.append(order)
    changed = {**rows, symbol: risk_row(account, market, symbol, orders)}
    return changed if symbol in rows else dict(sorted(changed.items()))


def total(
    account: Account, rows: Rows, market: Market, grid: PortfolioMargin | None = None
) -> MarginFigures:
    """The account's equity and margins: its rows' sums, on standard margin; on portfolio
    margin, the same equity and the grid's margins (core/portfolio/margin.py; grid: the
    caller's portfolio_margin(rows, market), found already)."""
    equity = float(account.cash)
    initial = maintenance = 0.0
    for row in rows.values():
        risk = row.risk
        equity += risk.value
        initial += risk.initial
        maintenance += risk.maintenance
    if account.portfolio:
        initial, maintenance, _ = portfolio_margin(rows, market) if grid is None else grid
    return _new(MarginFigures, (equity, initial, maintenance))


def figures(
    account: Account, market: Market, extra_order: OpenOrder | None = None
) -> MarginFigures:
    """Equity and margins (optionally as if extra_order were also open), and nothing else."""
    return total(account, risk_rows(account, market, extra_order), market)


@exact
def cash_with_funding(account: Account, market: Market) -> Decimal:
    """Cash plus the funding accrued on perpetuals but not yet settled, exactly."""
    cash = account.cash
    for symbol, position in account.positions.items():
        instrument = market.instruments[symbol]
        if instrument.kind is Kind.PERPETUAL and position.qty != 0:
            cash += account.accrued_funding(instrument, market.funding(symbol))
    return cash


def position_risk(row: RiskRow) -> PositionRisk:
    """An open position's line of risk: its row's figures and its entry price."""
    position = row.position
    assert position is not None
    entry = position.entry_price(row.instrument.contract_size)
    return PositionRisk(row.instrument.symbol, position, entry, row.risk)


def open_positions(rows: Rows) -> tuple[PositionRisk, ...]:
    """The open positions among rows, as assess lists them (what an alert shows: an
    alert needs neither the Greeks nor the exact cash assess also computes)."""
    return tuple(
        position_risk(row)
        for row in rows.values()
        if row.position is not None and row.position.qty != 0
    )


def assess(
    account: Account,
    market: Market,
    extra_order: OpenOrder | None = None,
    rows: Rows | None = None,
) -> AccountRisk:
    """Every risk figure of the account: those of `figures`, plus positions and Greeks.
    rows: the account's risk_rows (with extra_order), when the caller has them already."""
    equity = float(account.cash)
    initial = maintenance = 0.0
    greeks = Greeks()
    by_underlying: dict[str, Greeks] = {}
    positions: list[PositionRisk] = []
    if rows is None:
        rows = risk_rows(account, market, extra_order)
    for row in rows.values():
        instrument, position, risk = row.instrument, row.position, row.risk
        equity += risk.value
        initial += risk.initial
        maintenance += risk.maintenance
        if position is not None and position.qty != 0:
            sensitivity = row_greeks(row.inputs, instrument, market)
            greeks += sensitivity
            underlying = instrument.underlying
            by_underlying[underlying] = by_underlying.get(underlying, Greeks()) + sensitivity
            positions.append(position_risk(row))
    portfolio = None
    if account.portfolio:
        portfolio = portfolio_margin(rows, market)
        initial, maintenance = portfolio.initial, portfolio.maintenance
    return AccountRisk(
        cash=cash_with_funding(account, market),
        equity=equity,
        initial_margin=initial,
        maintenance_margin=maintenance,
        available=equity - initial,
        margin_ratio=margin_ratio(maintenance, equity),
        positions=tuple(positions),
        greeks=greeks,
        greeks_by_underlying=by_underlying,
        portfolio=portfolio,
    )
