"""The portfolio-margin parameters of one underlying, as a `portfolio_params` record sets them.

Defaults are Deribit's published BTC values (its `private/pme/simulate` example), plus
an extended table after CME SPAN's convention (moves about twice the range, counted at
35%) and Deribit's legacy short-option contingency. Risk parameters are floats: they
only ever scale risk figures, never a ledger amount.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from typing import Any

from marginstream.core.inputs.numbers import RecordError, parse_decimal

MAX_BUCKETS = 20  # points a side: the grid is (2 x buckets + 1) x 3 scenarios
MAX_EXTENDED = 8


@dataclass(frozen=True, slots=True)
class PortfolioParams:
    price_range: float = 0.16
    buckets: int = 4
    vol_range_up: float = 0.5
    vol_range_down: float = 0.25
    min_vol_for_shock_up: float = 0.5
    short_term_vega_power: float = 0.30
    long_term_vega_power: float = 0.13
    min_annualised_move: float = 0.01
    annualised_move_risk: float = 0.075
    extended_moves: tuple[float, ...] = (-0.33, 0.33)
    extended_weight: float = 0.35
    short_option_contingency: float = 0.01
    mm_factor: float = 0.8

    def moves(self) -> tuple[float, ...]:
        """The grid's price points, from -range to +range: (k / buckets) x range."""
        return _moves(self.price_range, self.buckets)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["extended_moves"] = list(self.extended_moves)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PortfolioParams:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if "extended_moves" in values:
            values["extended_moves"] = tuple(values["extended_moves"])
        return cls(**values)


@lru_cache(maxsize=256)
def _moves(price_range: float, buckets: int) -> tuple[float, ...]:
    return tuple(price_range * k / buckets for k in range(-buckets, buckets + 1))


DEFAULT = PortfolioParams()

# (name, lowest, highest): each parameter's sane range; a record outside it is refused.
_BOUNDS: tuple[tuple[str, float, float], ...] = (
    ("price_range", 1e-4, 0.95),
    ("vol_range_up", 0.0, 10.0),
    ("vol_range_down", 0.0, 0.99),
    ("min_vol_for_shock_up", 0.0, 10.0),
    ("short_term_vega_power", 0.0, 2.0),
    ("long_term_vega_power", 0.0, 2.0),
    ("min_annualised_move", 0.0, 1.0),
    ("annualised_move_risk", 0.0, 1.0),
    ("extended_weight", 0.0, 1.0),
    ("short_option_contingency", 0.0, 1.0),
    ("mm_factor", 0.01, 1.0),
)


def _number(value: dict[str, Any], name: str, low: float, high: float) -> float:
    number = float(parse_decimal(value[name], name))
    if not (math.isfinite(number) and low <= number <= high):
        raise RecordError(f"{name} must be from {low} to {high}, got {value[name]!r}")
    return number


def parse_params(value: dict[str, Any]) -> PortfolioParams:
    """The parameters a `portfolio_params` record gives: any left out keeps its default."""
    given: dict[str, Any] = {}
    for name, low, high in _BOUNDS:
        if value.get(name) is not None:
            given[name] = _number(value, name, low, high)
    if value.get("buckets") is not None:
        buckets = value["buckets"]
        if isinstance(buckets, str):  # numbers may be decimal strings: "4"
            number = parse_decimal(buckets, "buckets")
            buckets = int(number) if number == number.to_integral_value() else buckets
        if type(buckets) is not int or not 1 <= buckets <= MAX_BUCKETS:
            raise RecordError(f"buckets must be an integer from 1 to {MAX_BUCKETS}")
        given["buckets"] = buckets
    if value.get("extended_moves") is not None:
        moves = value["extended_moves"]
        if not isinstance(moves, list) or len(moves) > MAX_EXTENDED:
            raise RecordError(f"extended_moves must be a list of at most {MAX_EXTENDED} moves")
        given["extended_moves"] = tuple(
            _number({"extended_moves": m}, "extended_moves", -0.99, 10.0) for m in moves
        )
    return PortfolioParams(**given)
