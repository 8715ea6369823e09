"""Margin formulas on one position, in binary floats (risk figures, never ledger values).

The vectorised view (view.py) applies the very same operations in the same
order to whole arrays, so that the two paths agree to the last bit wherever
NumPy's element-wise arithmetic is IEEE-exact (it is for +, -, *, /, min, max).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from marginstream.core.risk.instruments import Instrument


@dataclass(frozen=True, slots=True)
class TierTable:
    """A tier schedule as floats: slice i covers notional in (lower[i], lower[i] + width[i]]."""

    lower: tuple[float, ...]
    width: tuple[float, ...]
    initial: tuple[float, ...]
    maintenance: tuple[float, ...]

    @classmethod
    def of(cls, instrument: Instrument) -> TierTable:
        lower, width, initial, maintenance = [], [], [], []
        previous = 0.0
        for tier in instrument.tiers:
            bound = math.inf if tier.up_to is None else float(tier.up_to)
            lower.append(previous)
            width.append(bound - previous)
            initial.append(float(tier.initial))
            maintenance.append(float(tier.maintenance))
            previous = bound
        return cls(tuple(lower), tuple(width), tuple(initial), tuple(maintenance))

    def initial_margin(self, notional: float) -> float:
        if 0.0 < notional <= self.width[0]:  # _sliced's first case, without its call
            return self.initial[0] * notional
        return _sliced(notional, self.lower, self.width, self.initial)

    def maintenance_margin(self, notional: float) -> float:
        if 0.0 < notional <= self.width[0]:
            return self.maintenance[0] * notional
        return _sliced(notional, self.lower, self.width, self.maintenance)


def _sliced(
    notional: float,
    lower: tuple[float, ...],
    width: tuple[float, ...],
    rates: tuple[float, ...],
) -> float:
    """Each slice of notional pays its own tier's rate, so the total is continuous.

    Tiers above the notional add rate * 0.0 = 0.0, which changes no sum: the loop stops
    at the first, and view.py, which adds them all, gets the same bits. Most notionals
    fit in the first slice (from 0): 0.0 + rate * notional is rate * notional.
    """
    if 0.0 < notional <= width[0]:
        return rates[0] * notional
    total = 0.0
    for low, span, rate in zip(lower, width, rates, strict=False):  # TierTable.of: one length
        above = notional - low
        if above <= 0.0:
            break
        total += rate * (span if span < above else above)  # min(above, span), uncalled
    return total


@dataclass(frozen=True, slots=True)
class ShortOptionRates:
    initial: float
    floor: float
    maintenance: float

    @classmethod
    def of(cls, instrument: Instrument) -> ShortOptionRates:
        params = instrument.option_margin
        assert params is not None
        return cls(float(params.initial), float(params.floor), float(params.maintenance))


def short_option_margin(
    index: float, strike: float, mark: float, is_put: bool, rates: ShortOptionRates
) -> tuple[float, float]:
    """(IM, MM) per unit of a short option: max(a*S - OTM, b*S) + mark and c*S + mark.

    For puts both are capped at the strike, the most a short put can lose.
    """
    out_of_the_money = max(index - strike, 0.0) if is_put else max(strike - index, 0.0)
    initial = max(rates.initial * index - out_of_the_money, rates.floor * index) + mark
    maintenance = rates.maintenance * index + mark
    if is_put:
        initial = min(initial, strike)
        maintenance = min(maintenance, strike)
    return initial, maintenance
