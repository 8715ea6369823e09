"""Portfolio margins of many accounts at once, to the bit what margin.py finds for each.

Why: an index move re-margins every portfolio account holding the underlying. Per
underlying, each instrument's exposure (scenarios.py) is a row of a matrix R; the
accounts' grids are P @ R, accumulated with np.add.at over the rows sorted by account
and symbol: add.at adds in the order of its indices, so each account's sums are made in
margin.py's order, and every other step is element-wise (IEEE-exact as in Python).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from marginstream.core.portfolio.scenarios import Exposure, exposure
from marginstream.core.risk.market import Market


class Rows(NamedTuple):
    """Risk rows as columns (the risk view's): their account and instrument numbers."""

    account: np.ndarray
    instrument: np.ndarray
    qty: np.ndarray
    buy: np.ndarray
    sell: np.ndarray
    premium: np.ndarray
    initial: np.ndarray  # the row's standard margins: what an instrument off the grid keeps
    maintenance: np.ndarray


def many_margins(
    market: Market, symbols: list[str], rows: Rows, accounts: np.ndarray, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """(initial, maintenance) of each account number in accounts, from the rows of those
    accounts (any others are ignored); symbols names the instrument numbers, width is the
    count of account numbers."""
    wanted = np.zeros(width, dtype=bool)
    wanted[accounts] = True
    chosen = np.flatnonzero(wanted[rows.account])
    initial, maintenance = np.zeros(width), np.zeros(width)
    if chosen.size == 0:
        return initial[accounts], maintenance[accounts]
    instruments = market.instruments
    underlying_of = [instruments[s].underlying for s in symbols]
    rank = np.empty(len(symbols), dtype=np.int64)  # each instrument's place in symbol order
    rank[sorted(range(len(symbols)), key=symbols.__getitem__)] = np.arange(len(symbols))
    used = np.unique(rows.instrument[chosen])
    for underlying in sorted({underlying_of[i] for i in used}):
        numbers = [int(i) for i in used if underlying_of[i] == underlying]
        mine = chosen[np.isin(rows.instrument[chosen], numbers)]
        mine = mine[np.lexsort((rank[rows.instrument[mine]], rows.account[mine]))]
        im, mm, owners = _underlying(market, underlying, symbols, numbers, rows, mine)
        initial[owners] = initial[owners] + im
        maintenance[owners] = maintenance[owners] + mm
    return initial[accounts], maintenance[accounts]


class Table(NamedTuple):
    """Exposures (scenarios.py) as columns, indexed by a local number."""

    vectors: np.ndarray
    roll: np.ndarray
    size: np.ndarray
    option: np.ndarray  # bool
    expiry: np.ndarray
    strike: np.ndarray
    charge: np.ndarray
    priced: np.ndarray  # bool

    @classmethod
    def of(cls, found: list[Exposure]) -> Table:
        options = [e.option for e in found]
        return cls(
            np.stack([e.vector for e in found]),
            np.array([e.roll for e in found]),
            np.array([e.size for e in found]),
            np.array([o is not None for o in options]),
            np.array([o[0] if o else 0 for o in options], dtype=np.int64),
            np.array([o[1] if o else 0.0 for o in options]),
            np.array([e.charge for e in found]),
            np.array([e.priced for e in found]),
        )


def _underlying(
    market: Market,
    underlying: str,
    symbols: list[str],
    numbers: list[int],
    rows: Rows,
    mine: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(initial, maintenance, account numbers) of the accounts among rows mine (sorted by
    account, then symbol) on one underlying."""
    table = Table.of([exposure(market, symbols[n]) for n in numbers])
    local = np.zeros(max(numbers) + 1, dtype=np.int64)
    local[numbers] = np.arange(len(numbers))
    inst = local[rows.instrument[mine]]
    owners, group = np.unique(rows.account[mine], return_inverse=True)
    count = owners.size
    priced = table.priced[inst]
    qty = np.where(priced, rows.qty[mine], 0.0)  # 0: no row on the grid
    held = grid_initial(table, inst, group, count, qty)
    buy = np.where(priced, rows.buy[mine], 0.0)
    sell = np.where(priced, rows.sell[mine], 0.0)
    im = held
    if buy.any() or sell.any():
        im = np.maximum(
            grid_initial(table, inst, group, count, qty + buy),
            grid_initial(table, inst, group, count, qty - sell),
        )
    premium, off_initial, off_maintenance = np.zeros(count), np.zeros(count), np.zeros(count)
    np.add.at(premium, group, rows.premium[mine])
    np.add.at(off_initial, group, np.where(priced, 0.0, rows.initial[mine]))
    np.add.at(off_maintenance, group, np.where(priced, 0.0, rows.maintenance[mine]))
    mm = market.params_for(underlying).mm_factor * held
    return im + premium + off_initial, mm + off_maintenance, owners


def grid_initial(
    table: Table, inst: np.ndarray, group: np.ndarray, count: int, qty: np.ndarray
) -> np.ndarray:
    """margin.grid(...).initial of each of count groups: rows (inst: a table row, group,
    qty) in the order margin.grid takes them within each group."""
    live = qty != 0.0
    inst, group, qty = inst[live], group[live], qty[live]
    pnl = np.zeros((count, table.vectors.shape[1]))
    np.add.at(pnl, group, qty[:, None] * table.vectors[inst])
    roll = np.zeros(count)
    np.add.at(roll, group, np.abs(qty) * table.roll[inst])
    contingency = np.zeros(count)
    option = table.option[inst]
    if option.any():
        held = inst[option]
        keys = np.stack(
            (group[option].astype(np.float64), table.expiry[held], table.strike[held]), axis=1
        )
        unique, where = np.unique(keys, axis=0, return_inverse=True)
        where = where.ravel()
        nets = np.zeros(len(unique))
        np.add.at(nets, where, qty[option] * table.size[held])
        charge = np.zeros(len(unique))
        charge[where] = table.charge[held]  # one underlying, one scale: one charge a group
        terms = np.maximum(-nets, 0.0) * charge
        np.add.at(contingency, unique[:, 0].astype(np.int64), terms)
    worst = np.maximum(0.0, -pnl.min(axis=1))
    return worst + roll + contingency
