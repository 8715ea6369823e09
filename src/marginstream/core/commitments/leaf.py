"""What a leaf of the state tree commits to: an account's exact state and its equity.

A leaf's bytes are LEAF_FORMAT, then the account's state part as JSON with sorted keys,
without its used fill and transfer ids (those are the duplicate window, not the
account): cash, positions (quantity, cost, realised PnL, funding index), open orders,
fees, funding, level, sequence numbers, an open liquidation set, and the leaf's own
index. Every number in it is a ledger Decimal as decimal_text writes it (no exponent,
no trailing zeros), so equal values have equal bytes, and no float is ever in it. The
entry price is not stored: it is cost / (quantity x contract size), exactly.

Its sums are its equity at the marks of the commit (Market.sums_mark), exactly, then
quantised half-even to SCALE places: liabilities max(equity, 0), deficit max(-equity, 0).
Equity is cash, plus perpetual funding accrued and not settled, plus for futures and
perpetuals quantity x size x mark - cost (0 before a first mark), plus for options
quantity x size x mark (the premium is already in cash; before a mark, the cost).
Reproducible: every input is a stored Decimal or a published decimal string, and the
arithmetic is exact (LEDGER_CONTEXT traps any rounding) up to the one quantisation.

The insurance fund's slice is leaf 0 of every partition: its balance (liabilities, it is
the venue's) and what it could not cover (deficit, handed to auto-deleveraging).
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Any

import orjson

from marginstream.core.books.ledger import Account
from marginstream.core.inputs.numbers import LEDGER_CONTEXT, decimal_text
from marginstream.core.liquidation.fund import InsuranceFund
from marginstream.core.risk.instruments import Kind
from marginstream.core.risk.market import Market

LEAF_FORMAT = 1
SCALE = 8  # the sums' unit is 10^-8 of the settlement currency
FUND_LEAF = 0  # the insurance fund's slice; accounts take 1, 2, ... (core/engine.py)
_QUANTUM = Context(prec=200, rounding=ROUND_HALF_EVEN)
_LEDGER = LEDGER_CONTEXT.copy()  # its flags gather, unread; its traps raise

# An account's equity inputs, kept per leaf so that a market move re-prices a leaf
# without decoding its account: cash, then (symbol, qty, cost, funding index) per position.
Holding = tuple[Decimal, tuple[tuple[str, Decimal, Decimal, Decimal], ...]]


def account_bytes(part: dict[str, Any]) -> bytes:
    """A leaf's bytes from an account's state part (Account.to_dict, maybe with "ids")."""
    data = {k: v for k, v in part.items() if k != "ids"}
    return bytes((LEAF_FORMAT,)) + orjson.dumps(data, option=orjson.OPT_SORT_KEYS)


def fund_bytes(fund: InsuranceFund) -> bytes:
    data = {
        "fund": decimal_text(fund.balance),
        "uncovered": decimal_text(fund.uncovered),
        "seq": fund.seq,
    }
    return bytes((LEAF_FORMAT,)) + orjson.dumps(data, option=orjson.OPT_SORT_KEYS)


def holding(account: Account) -> Holding:
    positions = tuple(
        (p.symbol, p.qty, p.cost, p.funding_index) for p in account.positions.values() if p.qty
    )
    return account.cash, positions


def holding_from_part(part: dict[str, Any]) -> Holding:
    """holding() from a stored account part, without building the Account."""
    positions = []
    for symbol, (qty, cost, _, funding_index) in part["positions"].items():
        if Decimal(qty):
            positions.append((symbol, Decimal(qty), Decimal(cost), Decimal(funding_index)))
    return Decimal(part["cash"]), tuple(positions)


class Marks:
    """Per symbol, what equity() reads of the market, looked up once per commit."""

    def __init__(self, market: Market) -> None:
        self.market = market
        self._found: dict[str, tuple[Kind, Decimal, Decimal | None, Decimal]] = {}

    def __call__(self, symbol: str) -> tuple[Kind, Decimal, Decimal | None, Decimal]:
        found = self._found.get(symbol)
        if found is None:
            market = self.market
            instrument = market.instruments[symbol]
            found = self._found[symbol] = (
                instrument.kind, instrument.contract_size, market.sums_mark(symbol),
                market.funding(symbol),
            )  # fmt: skip
        return found


def equity(held: Holding, marks: Marks) -> Decimal:
    """The exact equity the module docstring defines (each operation under the ledger's
    context, which traps rounding: its own methods, not a context switched per call)."""
    cash, positions = held
    if not positions:
        return cash
    add, subtract, multiply = _LEDGER.add, _LEDGER.subtract, _LEDGER.multiply
    total = cash
    for symbol, qty, cost, funding_index in positions:
        kind, size, mark, funding = marks(symbol)
        units = multiply(qty, size)
        if kind is Kind.OPTION:
            total = add(total, cost if mark is None else multiply(units, mark))
            continue
        if kind is Kind.PERPETUAL:
            total = subtract(total, multiply(units, subtract(funding, funding_index)))
        if mark is not None:
            total = add(total, subtract(multiply(units, mark), cost))
    return total


def units(value: Decimal) -> int:
    """value in units of 10^-SCALE, rounded half-even."""
    return int(value.scaleb(SCALE, _QUANTUM).to_integral_value(ROUND_HALF_EVEN, _QUANTUM))


def sums(value: Decimal) -> tuple[int, int]:
    """(liabilities, deficit) of an equity."""
    quantised = units(value)
    return (quantised, 0) if quantised >= 0 else (0, -quantised)
