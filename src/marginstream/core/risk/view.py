"""The vectorised risk view: every (account, instrument) row as NumPy arrays.

A move of an index or a mark re-margins every holder in one pass: the rows of
the moved instruments are recomputed with array arithmetic (the formulas of
risk.row_risk, operation for operation), then summed per account with
bincount. The view only *proposes*: accounts whose level it sees changing, or
whose ratio sits within a hair of a threshold, are confirmed by the exact
per-account path before any alert. It is kept in step with the ledger by the
engine after every change. A lazily loaded engine builds it from the raw account
parts in bulk (load), or takes it from a snapshot its store holds (delivery/viewsnapshot.py):
no Python object per account, only the NumPy columns and the account ids.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable

import numpy as np

from marginstream.core.books.ledger import Account, OpenOrder
from marginstream.core.outputs.alerts import LEVELS, Thresholds
from marginstream.core.portfolio import many
from marginstream.core.risk.figures import RowInputs, Rows, orders_by_symbol, risk_row
from marginstream.core.risk.instruments import Kind
from marginstream.core.risk.market import Market

_NEAR = 1e-9  # relative distance to a threshold below which the exact path decides
_LIQUIDATING = LEVELS.index("liquidation")
# deadline: of the open liquidation set, or inf; portfolio: 1.0 on portfolio margin
_ACCOUNT_FIELDS = ("cash", "level", "deadline", "portfolio")
_ROW_FIELDS = ("qty", "cost", "funding_index", "buy", "sell", "premium", "fallback_price")
_INSTRUMENT_FIELDS = (
    "size",
    "mark",
    "funding",
    "strike",
    "spot",
    "initial",
    "floor",
    "maintenance",
)


class _Columns:
    """Named float64 columns that grow together."""

    def __init__(self, names: Iterable[str], capacity: int = 64) -> None:
        self.arrays = {name: np.zeros(capacity) for name in names}
        self.size = 0

    def add(self) -> int:
        capacity = len(next(iter(self.arrays.values())))
        if self.size == capacity:
            for name, array in self.arrays.items():
                grown = np.zeros(capacity * 2)
                grown[:capacity] = array
                self.arrays[name] = grown
        self.size += 1
        return self.size - 1

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]


class RiskView:
    def __init__(self, thresholds: Thresholds, market: Market | None = None) -> None:
        """market: the engine's, which portfolio accounts' margins are figured from
        (core/portfolio/many.py); without one, every account's are its rows' sums."""
        self.thresholds = thresholds
        self.market = market
        self._account_ids: list[str] = []
        self._account_number: dict[str, int] = {}
        self._accounts = _Columns(_ACCOUNT_FIELDS)
        self._symbols: list[str] = []
        self._instrument_number: dict[str, int] = {}
        self._instruments = _Columns(_INSTRUMENT_FIELDS)
        self._kind = np.zeros(64, dtype=np.int8)  # 0 future, 1 perpetual, 2 option
        self._put = np.zeros(64, dtype=bool)
        self._tiers = 1
        self._tier_low = np.zeros((64, 1))
        self._tier_width = np.zeros((64, 1))
        self._tier_initial = np.zeros((64, 1))
        self._tier_maintenance = np.zeros((64, 1))
        # Rows loaded in bulk are grouped by account: its first row and its count; rows
        # added later are found through _row_number. Both without an object per row.
        self._bulk_accounts = 0
        self._bulk_first = np.zeros(0, dtype=np.int64)
        self._bulk_count = np.zeros(0, dtype=np.int64)
        self._bulk_rows_of: dict[int, np.ndarray] = {}
        self._row_number: dict[tuple[int, int], int] = {}
        self._rows = _Columns((*_ROW_FIELDS, "value", "initial", "maintenance"))
        self._row_account = np.zeros(64, dtype=np.int64)
        self._row_instrument = np.zeros(64, dtype=np.int64)
        self._rows_of: dict[int, list[int]] = {}
        self._row_arrays: dict[
            int, np.ndarray
        ] = {}  # _rows_of as arrays, rebuilt when rows are added

    # -- keeping in step ----------------------------------------------------------

    def define(self, symbol: str, market: Market) -> None:
        """(Re)load an instrument's parameters and prices, and recompute its rows."""
        number = self._instrument_number.get(symbol)
        if number is None:
            number = self._instruments.add()
            self._instrument_number[symbol] = number
            self._symbols.append(symbol)
            self._rows_of[number] = []
            self._grow_instrument_arrays()
        instrument = market.instruments[symbol]
        columns = self._instruments
        columns["size"][number] = float(instrument.contract_size)
        self._kind[number] = {Kind.FUTURE: 0, Kind.PERPETUAL: 1, Kind.OPTION: 2}[instrument.kind]
        self._put[number] = instrument.is_put
        self._tier_initial[number] = self._tier_maintenance[number] = 0.0
        self._tier_low[number] = self._tier_width[number] = 0.0
        if instrument.is_option:
            rates = market.option_rates[symbol]
            columns["strike"][number] = float(instrument.strike or 0)
            columns["initial"][number] = rates.initial
            columns["floor"][number] = rates.floor
            columns["maintenance"][number] = rates.maintenance
        else:
            table = market.tier_tables[symbol]
            self._ensure_tiers(len(table.lower))
            count = len(table.lower)
            self._tier_low[number, :count] = table.lower
            self._tier_width[number, :count] = table.width
            self._tier_initial[number, :count] = table.initial
            self._tier_maintenance[number, :count] = table.maintenance
        self.refresh([symbol], market)

    def refresh(self, symbols: Iterable[str], market: Market) -> None:
        """Reload the prices of symbols (mark, index, funding) and recompute their rows."""
        columns = self._instruments
        symbols = list(symbols)
        for symbol in symbols:
            number = self._instrument_number[symbol]
            instrument = market.instruments[symbol]
            mark = market.risk_mark(symbol)
            columns["mark"][number] = np.nan if mark is None else mark
            columns["funding"][number] = market.risk_funding(symbol)
            if instrument.is_option:
                index = market.risk_index(instrument.underlying)
                columns["spot"][number] = columns["strike"][number] if index is None else index
        rows = self._rows_for(symbols)
        if rows.size:
            self._compute(rows)

    def sync(
        self,
        account: Account,
        symbols: Iterable[str],
        market: Market,
        known: Rows | None = None,
    ) -> None:
        """Copy the account's cash and its rows for symbols from the exact ledger.

        One account's few rows are computed with the scalar row_risk (the same
        formulas, operation for operation): NumPy's per-call overhead would cost
        more than the arithmetic. Rows the caller has just computed from the account
        as it is now (`known`) are taken as they are.
        """
        number = self._account(account.account_id)
        accounts = self._accounts.arrays
        accounts["cash"][number] = float(account.cash)
        accounts["level"][number] = LEVELS.index(account.level)
        open_set = account.liquidation
        accounts["deadline"][number] = math.inf if open_set is None else open_set.deadline
        accounts["portfolio"][number] = 1.0 if account.portfolio else 0.0
        orders: dict[str, list[OpenOrder]] | None = None
        for symbol in symbols:
            row = self._row(number, self._instrument_number[symbol])
            computed = known.get(symbol) if known is not None else None
            if computed is None:
                if orders is None:
                    orders = orders_by_symbol(account)
                computed = risk_row(account, market, symbol, orders.get(symbol, []))
            self._write_row(row, computed.inputs)
            columns = self._rows.arrays  # after _row, which may have grown them
            risk = computed.risk
            columns["value"][row] = risk.value
            columns["initial"][row] = risk.initial
            columns["maintenance"][row] = risk.maintenance

    def load(
        self,
        account_ids: list[str],
        cash: np.ndarray,
        level: np.ndarray,
        row_account: np.ndarray,
        row_instrument: np.ndarray,
        inputs: np.ndarray,
        deadline: np.ndarray | None = None,
        portfolio: np.ndarray | None = None,
    ) -> None:
        """Every account at once, into a view with instruments but no accounts yet.

        Rows come grouped by account (row_account non-decreasing); inputs has a column per
        _ROW_FIELDS. Their figures are computed with refresh's arithmetic, which is sync's
        to the bit (margin.py; tests/core/test_lazy_state.py compares the two).
        """
        assert self._accounts.size == 0 and self._rows.size == 0
        count, rows = len(account_ids), len(row_account)
        self._account_ids = account_ids
        self._account_number = dict(zip(account_ids, range(count), strict=True))
        self._accounts = _Columns(_ACCOUNT_FIELDS, max(count, 64))
        self._accounts.size = count
        self._accounts["cash"][:count] = cash
        self._accounts["level"][:count] = level
        self._accounts["deadline"][:count] = math.inf if deadline is None else deadline
        self._accounts["portfolio"][:count] = 0.0 if portfolio is None else portfolio
        self._rows = _Columns((*_ROW_FIELDS, "value", "initial", "maintenance"), max(rows, 64))
        self._rows.size = rows
        for i, name in enumerate(_ROW_FIELDS):
            self._rows[name][:rows] = inputs[:, i]
        capacity = len(self._rows["qty"])
        self._row_account = np.zeros(capacity, dtype=np.int64)
        self._row_instrument = np.zeros(capacity, dtype=np.int64)
        self._row_account[:rows] = row_account
        self._row_instrument[:rows] = row_instrument
        self._bulk_accounts = count
        self._bulk_count = np.bincount(row_account, minlength=count).astype(np.int64)
        self._bulk_first = np.zeros(count, dtype=np.int64)
        np.cumsum(self._bulk_count[:-1], out=self._bulk_first[1:])
        order = np.argsort(row_instrument, kind="stable")
        bounds = np.searchsorted(row_instrument[order], np.arange(len(self._symbols) + 1))
        self._bulk_rows_of = {
            number: order[bounds[number] : bounds[number + 1]]
            for number in range(len(self._symbols))
        }
        self._row_arrays.clear()
        self._compute(np.arange(rows, dtype=np.int64))

    def set_level(self, account_id: str, level: str) -> None:
        self._accounts["level"][self._account(account_id)] = LEVELS.index(level)

    def set_deadline(self, account_id: str, deadline: int | None) -> None:
        """The event time the account's open liquidation set is due again (None: none)."""
        self._accounts["deadline"][self._account(account_id)] = (
            math.inf if deadline is None else deadline
        )

    def out_of_line(self, clock: int | None) -> list[str]:
        """Accounts whose closing set is out of line with their level, sorted: in
        liquidation with none open, or out of it with one open; and, at a time `clock`
        (None: no time), those whose open set is past its deadline."""
        return sorted(self._account_ids[a] for a in np.flatnonzero(self._out_of_line(clock)))

    def any_out_of_line(self, clock: int | None) -> bool:
        """Is out_of_line(clock) not empty? (Without listing and sorting its accounts.)"""
        return bool(self._out_of_line(clock).any())

    def _out_of_line(self, clock: int | None) -> np.ndarray:
        count = self._accounts.size
        deadline, level = self._accounts["deadline"][:count], self._accounts["level"][:count]
        wrong = (level == _LIQUIDATING) != (deadline != math.inf)
        if clock is not None:
            wrong |= deadline <= clock
        return wrong

    # -- accounts and the columns as a whole ---------------------------------------

    def account_ids(self) -> list[str]:
        """Every account of the view, in the order it was added: the engine's account ids."""
        return self._account_ids

    def account_count(self) -> int:
        return self._accounts.size

    def account_column(self, name: str) -> np.ndarray:
        """One of the account columns (cash, level, deadline, portfolio) by account
        number, read-only: what the operator's overview counts (core/outputs/overview.py)."""
        column = self._accounts[name][: self._accounts.size].view()
        column.flags.writeable = False
        return column

    def knows(self, account_id: str) -> bool:
        return account_id in self._account_number

    def add_account(self, account_id: str) -> None:
        self._account(account_id)

    def exported(self) -> dict[str, np.ndarray]:
        """The account and row columns, rows grouped by account: what load() takes back."""
        n, count = self._rows.size, self._accounts.size
        order = np.argsort(self._row_account[:n], kind="stable")
        return {
            "cash": self._accounts["cash"][:count].copy(),
            "level": self._accounts["level"][:count].copy(),
            "deadline": self._accounts["deadline"][:count].copy(),
            "portfolio": self._accounts["portfolio"][:count].copy(),
            "row_account": self._row_account[:n][order],
            "row_instrument": self._row_instrument[:n][order],
            "inputs": np.stack([self._rows[name][:n][order] for name in _ROW_FIELDS], axis=1),
            "risk": np.stack(
                [self._rows[name][:n][order] for name in ("value", "initial", "maintenance")],
                axis=1,
            ),
        }

    def symbols(self) -> list[str]:
        """The instruments by number: rows name them by it."""
        return list(self._symbols)

    # -- proposing ----------------------------------------------------------------

    def holders(self, symbols: Iterable[str]) -> list[str]:
        """Accounts with a position or open orders in any of symbols."""
        rows = self._rows_for(symbols)
        if rows.size == 0:
            return []
        columns = self._rows
        live = (
            (columns["qty"][rows] != 0) | (columns["buy"][rows] != 0) | (columns["sell"][rows] != 0)
        )
        accounts = np.unique(self._row_account[rows[live]])
        return [self._account_ids[a] for a in accounts]

    def candidates(self, symbols: Iterable[str]) -> list[str]:
        """Holders of symbols whose level may have changed: the exact path must look at them."""
        accounts = self.holder_numbers(symbols)
        if accounts.size == 0:
            return []
        ratio = self.margin_ratios(accounts)
        level = np.where(
            ratio >= self.thresholds.liquidation,
            2,
            np.where(ratio >= self.thresholds.margin_call, 1, 0),
        )
        near = np.zeros(accounts.size, dtype=bool)
        for threshold in (self.thresholds.margin_call, self.thresholds.liquidation):
            near |= np.abs(ratio - threshold) <= _NEAR * threshold
        changed = (level != self._accounts["level"][accounts]) | near
        return [self._account_ids[a] for a in accounts[changed]]

    def open_positions(
        self, symbol: str, equity: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """Every open position in symbol, as columns: account (number), qty, cost,
        unrealized (0 before the first mark), notional, and its account's equity (from
        `equity`, every account's, when the caller has it: totals once for all symbols)."""
        rows = self._rows_for([symbol])
        rows = rows[self._rows["qty"][rows] != 0.0]
        number = self._instrument_number.get(symbol)
        accounts = self._row_account[rows]
        qty, cost = self._rows["qty"][rows], self._rows["cost"][rows]
        size = self._instruments["size"][number] if number is not None else 0.0
        mark = self._instruments["mark"][number] if number is not None else np.nan
        price = np.where(np.isnan(mark), self._rows["fallback_price"][rows], mark)
        value = qty * size * price
        unrealized = np.where(np.isnan(mark), 0.0, value - cost)
        if not rows.size:
            held = np.zeros(0)
        else:
            held = self.totals(accounts)[0] if equity is None else equity[accounts]
        return {
            "account": accounts, "qty": qty, "cost": cost, "unrealized": unrealized,
            "notional": np.abs(value), "equity": held,
        }  # fmt: skip

    def account_id(self, number: int) -> str:
        return self._account_ids[number]

    def first(self, numbers: np.ndarray, keys: np.ndarray, limit: int) -> np.ndarray:
        """Indexes of the `limit` entries of numbers (account numbers) lowest by (keys,
        account id), in that order. Only the accounts tied at the cut are compared by id,
        and only the `limit` kept are sorted: in a crash thousands share a key (a ratio of
        inf, a closing deadline, an ADL score of 0)."""
        index = np.arange(numbers.size)
        if numbers.size > limit:
            kth = np.partition(keys, limit - 1)[limit - 1]
            below, tied = index[keys < kth], index[keys == kth]
            ids = self._account_ids
            tied_ids = [ids[n] for n in numbers[tied].tolist()]
            kept = heapq.nsmallest(limit - below.size, range(tied.size), key=tied_ids.__getitem__)
            index = np.concatenate([below, tied[kept]])
        ids = [self._account_ids[n] for n in numbers[index].tolist()]
        key_list = keys[index].tolist()
        return index[sorted(range(index.size), key=lambda i: (key_list[i], ids[i]))]

    def holder_numbers(self, symbols: Iterable[str]) -> np.ndarray:
        """Numbers of the accounts with a row (position or orders, now or before) in symbols."""
        rows = self._rows_for(symbols)
        mask = np.zeros(self._accounts.size, dtype=bool)
        mask[self._row_account[rows]] = True
        return np.flatnonzero(mask)

    def totals(self, accounts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(equity, initial margin, maintenance margin) of the given account numbers: the
        rows' sums, and for portfolio accounts the grid's margins, all of them at once
        (core/portfolio/many.py, to the bit what the exact path finds for each)."""
        n = self._rows.size
        owners = self._row_account[:n]
        width = self._accounts.size
        columns = self._rows
        value = np.bincount(owners, weights=columns["value"][:n], minlength=width)
        initial = np.bincount(owners, weights=columns["initial"][:n], minlength=width)
        maintenance = np.bincount(owners, weights=columns["maintenance"][:n], minlength=width)
        equity = self._accounts["cash"][accounts] + value[accounts]
        initial, maintenance = initial[accounts], maintenance[accounts]
        portfolio = self._accounts["portfolio"][accounts] != 0.0
        if self.market is not None and portfolio.any():
            rows = many.Rows(
                owners, self._row_instrument[:n], columns["qty"][:n], columns["buy"][:n],
                columns["sell"][:n], columns["premium"][:n], columns["initial"][:n],
                columns["maintenance"][:n],
            )  # fmt: skip
            initial[portfolio], maintenance[portfolio] = many.many_margins(
                self.market, self._symbols, rows, accounts[portfolio], width
            )
        return equity, initial, maintenance

    def margin_ratios(self, accounts: np.ndarray) -> np.ndarray:
        equity, _, maintenance = self.totals(accounts)
        return margin_ratios(equity, maintenance)

    def figures(self, account_id: str) -> tuple[float, float, float]:
        """(equity, initial margin, maintenance margin) of one account, as the view sees it."""
        equity, initial, maintenance = self.totals(np.array([self._account(account_id)]))
        return float(equity[0]), float(initial[0]), float(maintenance[0])

    # -- internals ------------------------------------------------------------------

    def _account(self, account_id: str) -> int:
        number = self._account_number.get(account_id)
        if number is None:
            number = self._accounts.add()
            self._accounts["deadline"][number] = math.inf
            self._account_number[account_id] = number
            self._account_ids.append(account_id)
        return number

    def _row(self, account: int, instrument: int) -> int:
        if account < self._bulk_accounts:
            first = int(self._bulk_first[account])
            for row in range(first, first + int(self._bulk_count[account])):
                if self._row_instrument[row] == instrument:
                    return row
        row = self._row_number.get((account, instrument))
        if row is None:
            row = self._rows.add()
            self._row_number[(account, instrument)] = row
            if row >= len(self._row_account):
                self._row_account = np.resize(self._row_account, len(self._rows["qty"]))
                self._row_instrument = np.resize(self._row_instrument, len(self._rows["qty"]))
            self._row_account[row] = account
            self._row_instrument[row] = instrument
            self._rows_of[instrument].append(row)
            self._row_arrays.pop(instrument, None)
        return row

    def _write_row(self, row: int, inputs: RowInputs) -> None:
        columns = self._rows.arrays
        for name, figure in zip(_ROW_FIELDS, inputs, strict=True):  # RowInputs' order
            columns[name][row] = figure

    def _rows_for(self, symbols: Iterable[str]) -> np.ndarray:
        parts = []
        for symbol in symbols:
            number = self._instrument_number.get(symbol)
            if number is not None:
                cached = self._row_arrays.get(number)
                if cached is None:
                    cached = np.array(self._rows_of[number], np.int64)
                    bulk = self._bulk_rows_of.get(number)
                    if bulk is not None and bulk.size:
                        cached = np.concatenate((bulk, cached))
                    self._row_arrays[number] = cached
                parts.append(cached)
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def _grow_instrument_arrays(self) -> None:
        capacity = len(self._instruments["size"])
        if len(self._kind) < capacity:
            self._kind = np.resize(self._kind, capacity)
            self._put = np.resize(self._put, capacity)
            for name in ("_tier_low", "_tier_width", "_tier_initial", "_tier_maintenance"):
                old = getattr(self, name)
                grown = np.zeros((capacity, old.shape[1]))
                grown[: old.shape[0]] = old
                setattr(self, name, grown)

    def _ensure_tiers(self, count: int) -> None:
        if count <= self._tiers:
            return
        for name in ("_tier_low", "_tier_width", "_tier_initial", "_tier_maintenance"):
            old = getattr(self, name)
            grown = np.zeros((old.shape[0], count))
            grown[:, : old.shape[1]] = old
            setattr(self, name, grown)
        self._tiers = count

    def _sliced(
        self, notional: np.ndarray, instruments: np.ndarray, rates: np.ndarray
    ) -> np.ndarray:
        total = np.zeros(notional.shape)
        for tier in range(self._tiers):
            low = self._tier_low[instruments, tier]
            width = self._tier_width[instruments, tier]
            total += rates[instruments, tier] * np.minimum(np.maximum(notional - low, 0.0), width)
        return total

    def _compute(self, rows: np.ndarray) -> None:
        """risk.row_risk for every row in rows, operation for operation."""
        r, c = self._rows, self._instruments
        inst = self._row_instrument[rows]
        q, cost = r["qty"][rows], r["cost"][rows]
        buy, sell, premium = r["buy"][rows], r["sell"][rows], r["premium"][rows]
        size, mark = c["size"][inst], c["mark"][inst]
        marked = ~np.isnan(mark)
        price = np.where(marked, mark, r["fallback_price"][rows])
        kind = self._kind[inst]
        with np.errstate(invalid="ignore"):
            unrealized = np.where(marked, q * size * price - cost, 0.0)
        accrual = np.where(
            kind == 1, -q * size * (c["funding"][inst] - r["funding_index"][rows]), 0.0
        )
        notional = np.abs(q) * size * price
        future_initial = np.maximum(
            self._sliced(np.abs(q + buy) * size * price, inst, self._tier_initial),
            self._sliced(np.abs(q - sell) * size * price, inst, self._tier_initial),
        )
        future_maintenance = self._sliced(notional, inst, self._tier_maintenance)

        spot, strike, put = c["spot"][inst], c["strike"][inst], self._put[inst]
        otm = np.where(put, np.maximum(spot - strike, 0.0), np.maximum(strike - spot, 0.0))
        per_initial = np.maximum(c["initial"][inst] * spot - otm, c["floor"][inst] * spot) + price
        per_maintenance = c["maintenance"][inst] * spot + price
        per_initial = np.where(put, np.minimum(per_initial, strike), per_initial)
        per_maintenance = np.where(put, np.minimum(per_maintenance, strike), per_maintenance)
        short = np.maximum(-q, 0.0)
        new_short = np.maximum(sell - q, 0.0)
        option_initial = short * size * per_initial + np.maximum(
            premium, (new_short - short) * size * per_initial
        )
        option = kind == 2
        r["value"][rows] = np.where(option, q * size * price, unrealized + accrual)
        r["initial"][rows] = np.where(option, option_initial, future_initial)
        r["maintenance"][rows] = np.where(
            option, short * size * per_maintenance, future_maintenance
        )


def margin_ratios(equity: np.ndarray, maintenance: np.ndarray) -> np.ndarray:
    """risk.margin_ratio of each (equity, maintenance) pair."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(equity <= 0.0, np.inf, maintenance / equity)
    return np.where(maintenance <= 0.0, 0.0, ratio)
