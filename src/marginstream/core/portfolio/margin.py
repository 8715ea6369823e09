"""An account's portfolio margin, from its risk rows: the single-account path.

Per underlying, over the account's positions on it (in symbol order):
- worst_case = max(0, -min over scenarios of sum(qty x exposure vector));
- roll_shock = sum(|qty| x size x mark x roll rate) over futures and perpetuals (roll rate:
  max(annualised_move_risk x years to expiry, min_annualised_move); perpetuals the minimum);
- contingency = sum over (expiry, strike) of max(-net qty x size, 0) x index x
  short_option_contingency (calls and puts at one strike netted);
- its initial margin is the sum of the three, its maintenance mm_factor x that.
Open orders weigh on the initial margin only: the worse of the book with every buy
filled and the book with every sell filled, plus the premium open option buys reserve.
The account's figures are the sums over its underlyings, in underlying order. A future
or perpetual with neither a mark nor an index (scenarios.py: not priced) is left off the
grid and keeps its standard margin, added to its underlying's.

many.py computes the same for many accounts at once, every operation in the same order,
so the two agree to the bit (tests/core/test_portfolio.py checks it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from marginstream.core.portfolio.scenarios import Exposure, exposure
from marginstream.core.risk.market import Market

if TYPE_CHECKING:  # risk/figures.py uses this module: its rows are only read here
    from marginstream.core.risk.figures import RiskRow, Rows


class Grid(NamedTuple):
    """One underlying's book on the grid: its three charges, and the worst scenario."""

    worst_case: float
    roll_shock: float
    contingency: float
    worst: int  # the scenario number of the lowest P&L

    @property
    def initial(self) -> float:
        return self.worst_case + self.roll_shock + self.contingency


class UnderlyingMargin(NamedTuple):
    underlying: str
    grid: Grid  # the positions' (what maintenance is)
    initial: float  # with the open orders' worse side and reserved premium
    maintenance: float


class PortfolioMargin(NamedTuple):
    initial: float
    maintenance: float
    underlyings: tuple[UnderlyingMargin, ...]


def grid(entries: list[tuple[float, Exposure]]) -> Grid:
    """The charges of (qty, exposure) pairs of one underlying, in their order."""
    pnl: np.ndarray | None = None
    roll = 0.0
    nets: dict[tuple[int, float], float] = {}
    charge = 0.0
    for qty, found in entries:
        if qty == 0.0:
            continue
        term = qty * found.vector
        pnl = term if pnl is None else pnl + term
        roll = roll + abs(qty) * found.roll
        if found.option is not None:
            nets[found.option] = nets.get(found.option, 0.0) + qty * found.size
            charge = found.charge
    if pnl is None:
        return Grid(0.0, 0.0, 0.0, 0)
    worst = int(np.argmin(pnl))
    contingency = 0.0
    for key in sorted(nets):
        contingency = contingency + max(-nets[key], 0.0) * charge
    return Grid(max(0.0, -float(pnl[worst])), roll, contingency, worst)


def by_underlying(rows: Rows) -> dict[str, list[RiskRow]]:
    """The rows grouped by underlying, underlyings sorted, each in symbol order."""
    grouped: dict[str, list[RiskRow]] = {}
    for row in rows.values():
        grouped.setdefault(row.instrument.underlying, []).append(row)
    return {u: grouped[u] for u in sorted(grouped)}


def portfolio_margin(rows: Rows, market: Market) -> PortfolioMargin:
    initial = maintenance = 0.0
    found = []
    for underlying, group in by_underlying(rows).items():
        exposures = [exposure(market, row.instrument.symbol) for row in group]
        pairs = [(r, e) for r, e in zip(group, exposures, strict=True) if e.priced]
        held = grid([(r.inputs.qty, e) for r, e in pairs])
        mm = market.params_for(underlying).mm_factor * held.initial
        im = held.initial
        if any(r.inputs.buy or r.inputs.sell for r, _ in pairs):
            bought = grid([(r.inputs.qty + r.inputs.buy, e) for r, e in pairs]).initial
            sold = grid([(r.inputs.qty - r.inputs.sell, e) for r, e in pairs]).initial
            im = max(bought, sold)
        premium = unpriced_initial = unpriced_maintenance = 0.0
        for row, exposed in zip(group, exposures, strict=True):
            premium = premium + row.inputs.premium
            if not exposed.priced:  # off the grid: its standard margin
                unpriced_initial = unpriced_initial + row.risk.initial
                unpriced_maintenance = unpriced_maintenance + row.risk.maintenance
        im = im + premium + unpriced_initial
        mm = mm + unpriced_maintenance
        initial = initial + im
        maintenance = maintenance + mm
        found.append(UnderlyingMargin(underlying, held, im, mm))
    return PortfolioMargin(initial, maintenance, tuple(found))
