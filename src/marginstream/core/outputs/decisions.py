"""Pre-trade checks: why an order, cancel or withdrawal must be refused, before margin."""

from __future__ import annotations

from typing import Any

from marginstream.core.books.ledger import Account
from marginstream.core.inputs.numbers import decimal_text, exact, risk_text
from marginstream.core.inputs.records import OrderRecord
from marginstream.core.risk.instruments import Status
from marginstream.core.risk.market import Market


def order_rejection(
    account: Account, order: OrderRecord, market: Market, max_open_orders: int
) -> str | None:
    """The reason to refuse order whatever the margin, or None."""
    if order.order_id in account.orders:
        return f"duplicate order_id {order.order_id}: that order is still open"
    if len(account.orders) >= max_open_orders:
        return f"too many open orders: {len(account.orders)} (limit {max_open_orders})"
    instrument = market.instruments.get(order.symbol)
    if instrument is None:
        return f"unknown instrument {order.symbol}"
    if instrument.expired_at(order.ts):
        return f"instrument {order.symbol} is expired"
    if instrument.status is Status.HALTED:
        return f"instrument {order.symbol} is halted"
    if instrument.is_option and instrument.underlying not in market.index:
        return f"no index price for {instrument.underlying} yet: cannot margin {order.symbol}"
    if order.reduce_only:
        return reduce_only_rejection(account, order)
    return None


@exact
def reduce_only_rejection(account: Account, order: OrderRecord) -> str | None:
    """A reduce-only order must shrink the position, with the reduce-only orders already open."""
    position = account.positions.get(order.symbol)
    held = position.qty if position is not None else 0
    reducing_side = "sell" if held > 0 else "buy"
    if held == 0 or order.side != reducing_side:
        return (
            f"reduce-only {order.side} would not reduce the position in {order.symbol} "
            f"({decimal_text(held)})"
        )
    pending = sum(
        (
            o.qty
            for o in account.orders.values()
            if o.symbol == order.symbol and o.reduce_only and o.side == order.side
        ),
        start=order.qty,
    )
    if pending > abs(held):
        return (
            f"reduce-only {order.side} of {decimal_text(order.qty)} would not reduce: with the "
            f"reduce-only orders already open it exceeds the position ({decimal_text(held)})"
        )
    return None


def decision_value(
    account: Account,
    request: str,
    request_id: str,
    reason: str | None,
    available_before: float,
    available_after: float,
    ts: int,
) -> dict[str, Any]:
    account.decision_seq += 1
    value: dict[str, Any] = {
        "type": "decision",
        "decision_id": f"{account.account_id}:decision:{account.decision_seq}",
        "request": request,
        "request_id": request_id,
        "account": account.account_id,
        "accepted": reason is None,
    }
    if reason is not None:
        value["reason"] = reason
    value["available_before"] = risk_text(available_before)
    value["available_after"] = risk_text(available_after)
    value["ts"] = ts
    return value
