"""The exact ledger of one account: cash, positions, open orders, fees, funding.

Every amount is a Decimal under LEDGER_CONTEXT. A position keeps its cost
(the signed sum of qty x contract_size x price over its open part) rather
than an average price, so that opening never rounds; closing part of a
position removes a proportional share of the cost, the one division, rounded
half-even at 1e-18 and only when inexact. Realised PnL is defined as proceeds
minus removed cost, so the account's value at the fill price is unchanged by
its own fill whatever that rounding did: nothing drifts.

Futures and perpetuals move cash only by realised PnL, funding and fees;
options move cash by the premium at each trade.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from marginstream.core.inputs.numbers import (
    LEDGER_CONTEXT,
    ZERO,
    decimal_text,
    divide_rounded,
    exact,
)
from marginstream.core.inputs.records import FillRecord, OrderRecord
from marginstream.core.liquidation.book import LiquidationSet
from marginstream.core.risk.instruments import Instrument, Kind

HEALTHY = "healthy"
STANDARD = "standard"
PORTFOLIO = "portfolio"


@dataclass(slots=True)
class Position:
    symbol: str
    qty: Decimal = ZERO
    cost: Decimal = ZERO
    realized: Decimal = ZERO
    # Perpetuals: the market's cumulative funding index when this position last settled funding.
    funding_index: Decimal = ZERO

    def entry_price(self, contract_size: Decimal) -> Decimal | None:
        if self.qty == 0:
            return None
        return divide_rounded(self.cost, LEDGER_CONTEXT.multiply(self.qty, contract_size))

    def to_list(self) -> list[str]:
        text = decimal_text
        return [text(self.qty), text(self.cost), text(self.realized), text(self.funding_index)]

    @classmethod
    def from_list(cls, symbol: str, values: list[str]) -> Position:
        qty, cost, realized, funding_index = (Decimal(v) for v in values)
        return cls(symbol, qty, cost, realized, funding_index)


@dataclass(slots=True)
class OpenOrder:
    order_id: str
    symbol: str
    side: str
    qty: Decimal  # what remains unfilled
    price: Decimal
    reduce_only: bool
    ts: int

    def to_list(self) -> list[Any]:
        return [
            self.symbol,
            self.side,
            decimal_text(self.qty),
            decimal_text(self.price),
            self.reduce_only,
            self.ts,
        ]

    @classmethod
    def from_list(cls, order_id: str, values: list[Any]) -> OpenOrder:
        symbol, side, qty, price, reduce_only, ts = values
        return cls(order_id, symbol, side, Decimal(qty), Decimal(price), reduce_only, ts)


@dataclass
class Account:
    account_id: str
    cash: Decimal = ZERO
    positions: dict[str, Position] = field(default_factory=dict)
    orders: dict[str, OpenOrder] = field(default_factory=dict)
    fees: Decimal = ZERO  # paid, net of rebates
    funding: Decimal = ZERO  # settled into cash: > 0 received, < 0 paid
    closed_realized: Decimal = ZERO  # realised PnL of the positions closed and dropped
    level: str = HEALTHY
    alert_seq: int = 0
    decision_seq: int = 0
    liquidation_seq: int = 0  # liquidation sets issued since its last liquidation alert
    liquidation: LiquidationSet | None = None  # the open set, at most one
    # Its leaf in its partition's state tree: the partition's count of accounts when it
    # first saw this one (core/commitments). None only in a part of format 3 or earlier.
    leaf: int | None = None
    # The margin model it chose (a margin_mode record): STANDARD or PORTFOLIO (core/portfolio).
    margin: str = STANDARD

    @property
    def portfolio(self) -> bool:
        return self.margin == PORTFOLIO

    # -- cash ----------------------------------------------------------------------

    # One operation each: the context's own method is what @exact would run, at a fifth
    # of the cost of switching contexts around it.
    def deposit(self, amount: Decimal) -> None:
        self.cash = LEDGER_CONTEXT.add(self.cash, amount)

    def withdraw(self, amount: Decimal) -> None:
        self.cash = LEDGER_CONTEXT.subtract(self.cash, amount)

    @exact
    def settle_funding(
        self, position: Position, funding_index: Decimal, contract_size: Decimal
    ) -> None:
        """Pay a perpetual position's funding accrued since it last settled (longs pay when > 0)."""
        payment = -position.qty * contract_size * (funding_index - position.funding_index)
        self.cash += payment
        self.funding += payment
        position.funding_index = funding_index

    @exact
    def accrued_funding(self, instrument: Instrument, funding_index: Decimal) -> Decimal:
        position = self.positions.get(instrument.symbol)
        if position is None or position.qty == 0:
            return ZERO
        return -position.qty * instrument.contract_size * (funding_index - position.funding_index)

    # -- trades --------------------------------------------------------------------

    @exact
    def apply_fill(
        self, fill: FillRecord, instrument: Instrument, funding_index: Decimal
    ) -> Decimal:
        """Book a fill; returns the PnL it realised. Fills are facts: no margin check here."""
        size = instrument.contract_size
        position = self.positions.get(fill.symbol)
        if position is None:
            position = self.positions[fill.symbol] = Position(
                fill.symbol, funding_index=funding_index
            )
        elif instrument.kind is Kind.PERPETUAL:
            self.settle_funding(position, funding_index, size)
        delta = fill.qty if fill.side == "buy" else -fill.qty
        realized = ZERO
        if position.qty == 0 or (position.qty > 0) == (delta > 0):
            position.cost += delta * size * fill.price
            position.qty += delta
        else:
            closing = min(fill.qty, abs(position.qty))
            direction = 1 if position.qty > 0 else -1
            removed = (
                position.cost
                if closing == abs(position.qty)
                else divide_rounded(position.cost * closing, abs(position.qty))
            )
            realized = direction * closing * size * fill.price - removed
            position.cost -= removed
            position.qty -= direction * closing
            opening = fill.qty - closing
            if opening:  # the fill went through zero: the rest opens the other way
                position.qty = opening if delta > 0 else -opening
                position.cost = position.qty * size * fill.price
            position.realized += realized
            if instrument.kind is not Kind.OPTION:
                self.cash += realized
        if instrument.kind is Kind.OPTION:
            self.cash -= delta * size * fill.price  # the premium changes hands
        self.cash -= fill.fee
        self.fees += fill.fee
        if fill.order_id is not None:
            self._fill_order(fill)
        self._drop_if_closed(position)
        return realized

    @exact
    def _drop_if_closed(self, position: Position) -> None:
        """A closed position leaves the account (its realised PnL joins `closed_realized`):
        kept, the account's record grew with every instrument it ever traded, past what
        Kafka accepts (an outside test: 12k option listings)."""
        if position.qty == 0:
            self.closed_realized += position.realized
            del self.positions[position.symbol]

    def _fill_order(self, fill: FillRecord) -> None:
        order = self.orders.get(fill.order_id or "")
        if order is None or order.symbol != fill.symbol or order.side != fill.side:
            return  # a fill of an order we never accepted is still a fact; the order is unknown
        order.qty -= min(order.qty, fill.qty)
        if order.qty == 0:
            del self.orders[order.order_id]

    @exact
    def settle(self, instrument: Instrument, price: Decimal) -> Decimal:
        """Close the position at expiry: futures at price, options at intrinsic value."""
        for order_id in [o.order_id for o in self.orders.values() if o.symbol == instrument.symbol]:
            del self.orders[order_id]
        position = self.positions.get(instrument.symbol)
        if position is None or position.qty == 0:
            return ZERO
        size = instrument.contract_size
        if instrument.is_option:
            assert instrument.strike is not None
            payoff = (
                (instrument.strike - price) if instrument.is_put else (price - instrument.strike)
            )
            value = position.qty * size * max(payoff, ZERO)
            self.cash += value
            realized = value - position.cost
        else:
            realized = position.qty * size * price - position.cost
            self.cash += realized
        position.realized += realized
        position.qty = position.cost = ZERO
        self._drop_if_closed(position)
        return realized

    # -- orders --------------------------------------------------------------------

    def add_order(self, order: OrderRecord) -> None:
        self.orders[order.order_id] = OpenOrder(
            order.order_id,
            order.symbol,
            order.side,
            order.qty,
            order.price,
            order.reduce_only,
            order.ts,
        )

    # -- persistence ---------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "account": self.account_id,
            "cash": decimal_text(self.cash),
            "positions": {s: p.to_list() for s, p in self.positions.items()},
            "orders": {i: o.to_list() for i, o in self.orders.items()} if self.orders else {},
            "fees": decimal_text(self.fees),
            "funding": decimal_text(self.funding),
            "closed_realized": decimal_text(self.closed_realized),
            "level": self.level,
            "alert_seq": self.alert_seq,
            "decision_seq": self.decision_seq,
            # Only once liquidated: the parts of every other account stay as they were.
            **({"liquidation_seq": self.liquidation_seq} if self.liquidation_seq else {}),
            **({"liquidation": self.liquidation.to_dict()} if self.liquidation else {}),
            **({"leaf": self.leaf} if self.leaf is not None else {}),
            # Only on portfolio margin: a standard account's part (and leaf) is as it was.
            **({"margin": self.margin} if self.margin != STANDARD else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Account:
        account = cls(
            account_id=data["account"],
            cash=Decimal(data["cash"]),
            positions={s: Position.from_list(s, v) for s, v in data["positions"].items()},
            orders={i: OpenOrder.from_list(i, v) for i, v in data["orders"].items()},
            fees=Decimal(data["fees"]),
            funding=Decimal(data["funding"]),
            closed_realized=Decimal(data.get("closed_realized", "0")),  # format 3 added it
            level=data["level"],
            alert_seq=data["alert_seq"],
            decision_seq=data["decision_seq"],
            liquidation_seq=data.get("liquidation_seq", 0),
            leaf=data.get("leaf"),  # format 4 added it
            margin=data.get("margin", STANDARD),  # absent: standard (and before format 4)
        )
        if "liquidation" in data:
            account.liquidation = LiquidationSet.from_dict(data["liquidation"])
        for position in list(account.positions.values()):  # formats 1 and 2 kept them
            account._drop_if_closed(position)
        return account
