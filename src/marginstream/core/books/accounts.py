"""A partition's accounts, each decoded from its stored part when first touched.

An account lives only in the store until a record names it, a market move needs it
(the risk view's candidates, a settlement's holders) or a read asks for it. Between two
commits the store holds the last committed state, and an account not touched since the
engine was loaded has not changed since, so decoding it from the store then is exact
(a failed commit drops the whole engine: core/delivery/unit.py).

The set of accounts is the risk view's: every account has its columns there from the
moment it exists (loaded in bulk, or added by its first deposit).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, MutableMapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np
import orjson

from marginstream.core.books.ledger import PORTFOLIO, Account, OpenOrder, Position
from marginstream.core.delivery.parts import (
    FORMAT,
    HEADER_BYTES,
    decode_part,
    part_key,
    version_of,
)
from marginstream.core.delivery.store import PartReader
from marginstream.core.outputs.alerts import LEVELS
from marginstream.core.risk.figures import row_inputs
from marginstream.core.risk.market import Market
from marginstream.core.risk.view import RiskView


class Accounts(MutableMapping[str, Account]):
    """Account id -> Account, decoded on first access from reader (None: all in memory)."""

    def __init__(
        self,
        view: RiskView,
        reader: PartReader | None = None,
        on_decode: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.view = view
        self.reader = reader
        self.on_decode = on_decode
        self.loaded: dict[str, Account] = {}
        self.decodes = 0  # accounts decoded from the store (tests count them)

    def __getitem__(self, account_id: str) -> Account:
        account = self.loaded.get(account_id)
        if account is not None:
            return account
        if self.reader is None or not self.view.knows(account_id):
            raise KeyError(account_id)
        raw = self.reader.get(part_key(("account", account_id)))
        if raw is None:
            raise KeyError(account_id)
        data = decode_part(raw).data
        account = Account.from_dict(data)
        self.decodes += 1
        if self.on_decode is not None:
            self.on_decode(account_id, data)
        self.loaded[account_id] = account
        return account

    def get(self, account_id: str, default: Any = None) -> Any:  # the hot path's lookup
        account = self.loaded.get(account_id)
        if account is not None:
            return account
        try:
            return self[account_id]
        except KeyError:
            return default

    def __setitem__(self, account_id: str, account: Account) -> None:
        self.view.add_account(account_id)
        self.loaded[account_id] = account

    def __delitem__(self, account_id: str) -> None:
        raise TypeError("an account is never deleted")

    def __contains__(self, account_id: object) -> bool:
        return isinstance(account_id, str) and self.view.knows(account_id)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self.view.account_ids()))

    def __len__(self) -> int:
        return len(self.view.account_ids())


@dataclass
class ViewColumns:
    """RiskView.load's arguments, read from raw account parts, and what the parts said."""

    ids: list[str]
    cash: np.ndarray
    level: np.ndarray
    deadline: np.ndarray
    portfolio: np.ndarray  # 1.0 on portfolio margin
    row_account: np.ndarray
    row_instrument: np.ndarray
    inputs: np.ndarray
    version: int  # the highest version of the parts read
    legacy: bool  # a part of an earlier format: read no further (load it whole)

    def load_into(self, view: RiskView) -> None:
        view.load(
            self.ids, self.cash, self.level, self.row_account, self.row_instrument, self.inputs,
            self.deadline, self.portfolio,
        )  # fmt: skip


_LEVEL = {name: float(number) for number, name in enumerate(LEVELS)}
_NEVER = float("inf")  # no open liquidation set
_FLUSH = 1 << 16  # accounts between two conversions of the lists to arrays


class _Builder:
    """The columns as Python lists, turned into arrays every _FLUSH accounts: the list's
    objects are freed and their memory reused, so a million accounts never hold a million
    floats and tuples at once."""

    def __init__(self) -> None:
        self.cash: list[float] = []
        self.level: list[float] = []
        self.deadline: list[float] = []
        self.portfolio: list[float] = []
        self.row_account: list[int] = []
        self.row_instrument: list[int] = []
        self.inputs: list[tuple[float, ...]] = []
        self.done: list[tuple[np.ndarray, ...]] = []

    def flush(self) -> None:
        self.done.append(
            (
                np.array(self.cash, dtype=np.float64),
                np.array(self.level, dtype=np.float64),
                np.array(self.deadline, dtype=np.float64),
                np.array(self.portfolio, dtype=np.float64),
                np.array(self.row_account, dtype=np.int64),
                np.array(self.row_instrument, dtype=np.int64),
                np.array(self.inputs, dtype=np.float64).reshape(len(self.inputs), 7),
            )
        )
        for pending in (
            self.cash,
            self.level,
            self.deadline,
            self.portfolio,
            self.row_account,
            self.row_instrument,
        ):
            pending.clear()
        self.inputs.clear()

    def arrays(self) -> list[np.ndarray]:
        self.flush()
        return [np.concatenate(column) for column in zip(*self.done, strict=True)]


def view_columns(
    parts: Iterable[tuple[bytes, bytes]], market: Market, symbols: list[str]
) -> ViewColumns:
    """The view's columns from the stored account parts (key, value), with no Account.

    The row inputs are row_inputs' floats, to the bit: float(text) is float(Decimal(text)),
    both correctly rounded. A position alone (the common row) is computed here; a row with
    orders goes through row_inputs itself (their totals are exact Decimal sums). A closed
    position (formats 1 and 2 kept some) is no row, as Account.from_dict drops it.
    """
    numbers = {symbol: n for n, symbol in enumerate(symbols)}
    instruments = market.instruments
    ids: list[str] = []
    built = _Builder()
    cash, level, deadline, inputs = built.cash, built.level, built.deadline, built.inputs
    portfolio = built.portfolio
    row_account, row_instrument = built.row_account, built.row_instrument
    version, legacy, loads = 0, False, orjson.loads
    for number, (_, value) in enumerate(parts):
        if value[0] != FORMAT:
            legacy = True
            break
        stored = version_of(value)
        version = stored if stored > version else version
        data = loads(value[HEADER_BYTES:])
        ids.append(data["account"])  # the key's name: part_key(("account", account_id))
        cash.append(float(data["cash"]))
        level.append(_LEVEL[data["level"]])
        liquidation = data.get("liquidation")
        deadline.append(_NEVER if liquidation is None else float(liquidation["deadline"]))
        portfolio.append(1.0 if data.get("margin") == PORTFOLIO else 0.0)
        if len(cash) == _FLUSH:
            built.flush()
        positions, orders = data["positions"], data["orders"]
        if not orders:
            for symbol in sorted(positions) if len(positions) > 1 else positions:
                qty_text, cost_text, _, funding_text = positions[symbol]
                qty = float(qty_text)
                if qty == 0.0 and Decimal(qty_text) == 0:
                    continue
                cost = float(cost_text)
                row_account.append(number)
                row_instrument.append(numbers[symbol])
                size = instruments[symbol].size
                inputs.append((qty, cost, float(funding_text), 0.0, 0.0, 0.0, cost / (qty * size)))
            continue
        grouped: dict[str, list[OpenOrder]] = {}
        for order_id, values in orders.items():
            grouped.setdefault(values[0], []).append(OpenOrder.from_list(order_id, values))
        held = {s: v for s, v in positions.items() if Decimal(v[0]) != 0}
        for symbol in sorted(held.keys() | grouped.keys()):
            values = held.get(symbol)
            position = None if values is None else Position.from_list(symbol, values)
            row_account.append(number)
            row_instrument.append(numbers[symbol])
            inputs.append(row_inputs(position, grouped.get(symbol, []), instruments[symbol]))
    cash_column, level_column, deadline_column, portfolio_column, *rows = built.arrays()
    return ViewColumns(
        ids, cash_column, level_column, deadline_column, portfolio_column, *rows, version, legacy
    )
