"""The insurance fund's slice of one partition: its balance and its recent history.

The fund is kept in slices, one per account partition, each a state part of its
partition ("fund/insurance"), committed with the records that moved it: exactly once,
and replayable, like an account. A slice covers the deficits of its own partition's
accounts and receives their liquidation surpluses and the capital deposited on that
partition (a `deposit` to the reserved account FUND_ACCOUNT). GET /insurance-fund/ sums
the slices. A deficit larger than its slice is not covered from another slice: that
would need a transaction across partitions; it goes to auto-deleveraging (adl.py).

Money is exact (Decimal). The history keeps the last HISTORY entries; the deposit ids
seen, the last DEPOSIT_IDS (a repeated deposit id is a duplicate, as for any account).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from marginstream.core.inputs.numbers import LEDGER_CONTEXT, ZERO, decimal_text

FUND_ACCOUNT = "insurance-fund"
FUND_KEY = ("fund", "insurance")
HISTORY = 200
DEPOSIT_IDS = 500

# Entries: capital deposited; a liquidation fill better than its order's price (surplus);
# one worse (shortfall) and a bankrupt account's deficit, both paid out as far as it can.
DEPOSIT, SURPLUS, SHORTFALL, DEFICIT = "deposit", "surplus", "shortfall", "deficit"


@dataclass
class InsuranceFund:
    balance: Decimal = ZERO
    uncovered: Decimal = ZERO  # deficits past the balance, handed to auto-deleveraging
    seq: int = 0  # entries ever made
    history: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=HISTORY))
    deposit_ids: deque[str] = field(default_factory=lambda: deque(maxlen=DEPOSIT_IDS))
    dirty: bool = False

    def deposit(self, amount: Decimal, transfer_id: str, ts: int) -> None:
        self.deposit_ids.append(transfer_id)
        self._enter(DEPOSIT, amount, ts, None, transfer_id)

    def receive(self, amount: Decimal, account: str, ref: str, ts: int) -> None:
        """A liquidation fill's surplus over its order's price (amount > 0)."""
        self._enter(SURPLUS, amount, ts, account, ref)

    def cover(self, loss: Decimal, kind: str, account: str, ref: str, ts: int) -> Decimal:
        """Pay what the balance can of loss (a shortfall or a deficit); returns the rest,
        uncovered. The balance never goes below zero."""
        covered = min(loss, self.balance) if self.balance > 0 else ZERO
        rest = LEDGER_CONTEXT.subtract(loss, covered)
        self.uncovered = LEDGER_CONTEXT.add(self.uncovered, rest)
        self._enter(kind, -covered, ts, account, ref, uncovered=rest)
        return rest

    def _enter(
        self, kind: str, amount: Decimal, ts: int, account: str | None, ref: str, **extra: Any
    ) -> None:
        self.balance = LEDGER_CONTEXT.add(self.balance, amount)
        self.seq += 1
        entry = {
            "seq": self.seq, "ts": ts, "kind": kind, "account": account, "ref": ref,
            "amount": decimal_text(amount), "balance": decimal_text(self.balance),
        }  # fmt: skip
        entry.update((k, decimal_text(v)) for k, v in extra.items())
        self.history.append(entry)
        self.dirty = True

    def part(self) -> dict[str, Any]:
        return {
            "balance": decimal_text(self.balance),
            "uncovered": decimal_text(self.uncovered),
            "seq": self.seq,
            "history": list(self.history),
            "deposit_ids": list(self.deposit_ids),
        }

    @classmethod
    def from_part(cls, data: dict[str, Any] | None) -> InsuranceFund:
        fund = cls()
        if data is not None:
            fund.balance, fund.uncovered = Decimal(data["balance"]), Decimal(data["uncovered"])
            fund.seq = data["seq"]
            fund.history.extend(data["history"])
            fund.deposit_ids.extend(data["deposit_ids"])
        return fund

    def summary(self) -> dict[str, Any]:
        """What GET /insurance-fund/ shows of this slice."""
        return {
            "balance": decimal_text(self.balance),
            "uncovered": decimal_text(self.uncovered),
            "entries": self.seq,
            "history": list(self.history),
        }
