"""Market-wide state: instruments, index prices, marks, implied volatilities, funding.

Marks of futures and perpetuals, and an option's explicit mark, are exact
Decimals (funding is paid on them). An option's model mark is a Black-76
float, a risk figure only. Settlement and funding amounts come from exact
inputs, never from a model price.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from marginstream.core.instruments import Instrument, Kind, Status
from marginstream.core.margin import ShortOptionRates, TierTable
from marginstream.core.numbers import RecordError, exact
from marginstream.core.pricing import OptionValue, black76, years_to_expiry
from marginstream.core.records import FundingRecord, IndexRecord, MarkRecord, SettlementRecord


@dataclass
class Market:
    instruments: dict[str, Instrument] = field(default_factory=dict)
    index: dict[str, Decimal] = field(default_factory=dict)
    marks: dict[str, Decimal] = field(default_factory=dict)
    implied_vol: dict[str, Decimal] = field(default_factory=dict)
    model: dict[str, OptionValue] = field(default_factory=dict)
    # Options whose explicit mark overrides the model until the next index move.
    explicit: set[str] = field(default_factory=set)
    # Cumulative funding per unit notional-at-mark: sum of mark x rate over funding events.
    funding_index: dict[str, Decimal] = field(default_factory=dict)
    settlement: dict[str, Decimal] = field(default_factory=dict)
    index_ts: dict[str, int] = field(default_factory=dict)
    # "topic:partition" -> offset of the last market record applied from that source.
    applied: dict[str, int] = field(default_factory=dict)
    # The accounts each recent market record alerted: [source, offset, [account, ...]].
    alerted: list[list[Any]] = field(default_factory=list)
    # Derived from instruments (never persisted): float risk parameters and option chains.
    tier_tables: dict[str, TierTable] = field(default_factory=dict)
    option_rates: dict[str, ShortOptionRates] = field(default_factory=dict)
    options_on: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))

    # -- reading ----------------------------------------------------------------

    def instrument(self, symbol: str) -> Instrument:
        found = self.instruments.get(symbol)
        if found is None:
            raise RecordError(f"unknown instrument {symbol}")
        return found

    def risk_mark(self, symbol: str) -> float | None:
        """The price positions are valued at, or None before the instrument's first mark."""
        if symbol in self.explicit or self.instruments[symbol].kind is not Kind.OPTION:
            mark = self.marks.get(symbol)
            return None if mark is None else float(mark)
        model = self.model.get(symbol)
        if model is not None:
            return model.price
        mark = self.marks.get(symbol)  # an explicit mark no index move has replaced yet
        return None if mark is None else float(mark)

    def risk_index(self, underlying: str) -> float | None:
        index = self.index.get(underlying)
        return None if index is None else float(index)

    def greeks(self, symbol: str) -> OptionValue | None:
        return self.model.get(symbol)

    def funding(self, symbol: str) -> Decimal:
        return self.funding_index.get(symbol, Decimal(0))

    # -- applying market records (each returns the symbols whose risk inputs moved) ----

    def apply_instrument(self, instrument: Instrument) -> set[str]:
        previous = self.instruments.get(instrument.symbol)
        if previous is not None:
            if instrument.symbol in self.settlement:
                raise RecordError(
                    f"instrument {instrument.symbol} was settled; a new listing needs a new symbol"
                )
            instrument = previous.replaced_by(instrument)
        self._define(instrument)
        if instrument.is_option:
            self._reprice(instrument, self.index_ts.get(instrument.underlying))
        return {instrument.symbol}

    def apply_index(self, record: IndexRecord) -> set[str]:
        self.index[record.underlying] = record.price
        self.index_ts[record.underlying] = record.ts
        moved = set()
        for symbol in sorted(self.options_on.get(record.underlying, ())):
            instrument = self.instruments[symbol]
            if instrument.status is not Status.EXPIRED and self._reprice(instrument, record.ts):
                self.explicit.discard(symbol)
            moved.add(symbol)
        return moved

    def apply_mark(self, record: MarkRecord) -> set[str]:
        instrument = self.instrument(record.symbol)
        if instrument.status is Status.EXPIRED:
            raise RecordError(f"instrument {record.symbol} is expired")
        if not instrument.is_option:
            if record.price is None:
                raise RecordError(
                    f"a mark for {instrument.kind.value} {record.symbol} needs a price"
                )
            self.marks[record.symbol] = record.price
            return {record.symbol}
        if record.price is None and record.iv is None:
            raise RecordError(f"a mark for option {record.symbol} needs a price or an iv")
        if record.iv is not None:
            self.implied_vol[record.symbol] = record.iv
            self._reprice(instrument, record.ts)
        if record.price is None:
            self.explicit.discard(record.symbol)
        else:
            self.marks[record.symbol] = record.price
            self.explicit.add(record.symbol)
        return {record.symbol}

    @exact
    def apply_funding(self, record: FundingRecord) -> set[str]:
        instrument = self.instrument(record.symbol)
        if instrument.kind is not Kind.PERPETUAL:
            raise RecordError(
                f"funding applies to perpetuals; {record.symbol} is a {instrument.kind}"
            )
        mark = self.marks.get(record.symbol)
        if mark is None:
            raise RecordError(f"no mark for {record.symbol} yet: funding is paid on the mark")
        self.funding_index[record.symbol] = self.funding(record.symbol) + mark * record.rate
        return {record.symbol}

    def apply_settlement(self, record: SettlementRecord) -> Instrument:
        instrument = self.instrument(record.symbol)
        if instrument.kind is Kind.PERPETUAL:
            raise RecordError(f"perpetual {record.symbol} never settles")
        if record.symbol in self.settlement:
            raise RecordError(f"{record.symbol} was already settled")
        self.settlement[record.symbol] = record.price
        self.marks[record.symbol] = record.price
        self.explicit.add(record.symbol)
        self.model.pop(record.symbol, None)
        settled = instrument.settled()
        self._define(settled)
        return settled

    # -- internals ------------------------------------------------------------------

    def _define(self, instrument: Instrument) -> None:
        self.instruments[instrument.symbol] = instrument
        if instrument.is_option:
            self.options_on[instrument.underlying].add(instrument.symbol)
            self.option_rates[instrument.symbol] = ShortOptionRates.of(instrument)
        else:
            self.tier_tables[instrument.symbol] = TierTable.of(instrument)

    def _reprice(self, instrument: Instrument, ts: int | None) -> bool:
        """Black-76 from the index and the option's last iv; False when either is missing."""
        index = self.index.get(instrument.underlying)
        vol = self.implied_vol.get(instrument.symbol)
        if index is None or vol is None or ts is None:
            return False
        assert instrument.strike is not None and instrument.expiry_ms is not None
        self.model[instrument.symbol] = black76(
            float(index),
            float(instrument.strike),
            years_to_expiry(instrument.expiry_ms, ts),
            float(vol),
            instrument.is_put,
        )
        return True
