"""An account's open set of liquidation orders, as it is kept in the account's part.

At most one set is open per account. Its orders are not the account's own open orders
(they reserve nothing: they reduce); a fill naming one of them is booked at the order's
price (desk.py), so the set's "after" figures are what the ledger will hold.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from marginstream.core.inputs.numbers import decimal_text
from marginstream.core.inputs.records import MAX_ID_LENGTH


@dataclass(slots=True)
class LiquidationOrder:
    order_id: str
    symbol: str
    side: str  # "sell" closes a long, "buy" a short
    qty: Decimal  # what remains unfilled
    price: Decimal

    def to_list(self) -> list[str]:
        return [self.symbol, self.side, decimal_text(self.qty), decimal_text(self.price)]

    @classmethod
    def from_list(cls, order_id: str, values: list[str]) -> LiquidationOrder:
        symbol, side, qty, price = values
        return cls(order_id, symbol, side, Decimal(qty), Decimal(price))


@dataclass(slots=True)
class LiquidationSet:
    id: str  # set_id's
    alert_id: str  # the liquidation alert that started the account's liquidation
    issued: int  # event time (ms)
    deadline: int  # event time after which the set is re-issued, if still open
    orders: dict[str, LiquidationOrder] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "alert_id": self.alert_id,
            "issued": self.issued,
            "deadline": self.deadline,
            "orders": {i: o.to_list() for i, o in self.orders.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LiquidationSet:
        orders = {i: LiquidationOrder.from_list(i, v) for i, v in data["orders"].items()}
        return cls(data["id"], data["alert_id"], data["issued"], data["deadline"], orders)


def set_id(account_id: str, alert_seq: int, number: int) -> str:
    """`<account>:liq:<a>.<n>`: the n-th set since the account's liquidation alert number
    a. Counted from the alert, not over the account's life, so that an account's sets
    are named alike by any version that counted its alerts alike (one that issued no sets
    upgraded to this one). An account id too long for that to stay a valid order id (a
    fill must be able to name its orders) is replaced by a digest of it."""
    return f"{id_name(account_id)}:liq:{alert_seq}.{number}"


def id_name(account_id: str) -> str:
    """The account as ids made from it name it: itself, or `sha256-` and 32 hex digits of
    it when it is too long to leave room for the rest (ids are at most MAX_ID_LENGTH)."""
    if len(account_id) + 40 > MAX_ID_LENGTH:
        return "sha256-" + hashlib.sha256(account_id.encode()).hexdigest()[:32]
    return account_id
