"""Market-wide state: instruments, index prices, marks, implied volatilities, funding.

Marks of futures and perpetuals, and an option's explicit mark, are exact
Decimals (funding is paid on them). An option's model mark is a Black-76
float, a risk figure only, and is never stored: it is derived from stored
inputs (the index, the option's last iv, and which of the two came last, by
the market's own record sequence), so a market rebuilt from its stored parts
prices every option to the same bit. Stored parts are small and per key (one
per instrument, one per index), so a commit rewrites only what moved.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from marginstream.core.delivery.parts import StateKey
from marginstream.core.inputs.numbers import ZERO, RecordError, decimal_text, exact, risk_text
from marginstream.core.inputs.records import (
    FundingRecord,
    IndexRecord,
    MarkRecord,
    PortfolioParamsRecord,
    SettlementRecord,
)
from marginstream.core.portfolio.params import DEFAULT, PortfolioParams
from marginstream.core.risk.instruments import Instrument, Kind, Status, parse_instrument
from marginstream.core.risk.margin import ShortOptionRates, TierTable
from marginstream.core.risk.pricing import OptionValue, black76, years_to_expiry

PORTFOLIO_KIND = "portfolio"  # an underlying's portfolio-margin parameters
MARKET_KINDS = ("instrument", "index", PORTFOLIO_KIND)  # the market's part kinds


@dataclass(slots=True)
class Quote:
    """What the market last said about one instrument."""

    mark: Decimal | None = None  # the last explicit mark price
    mark_seq: int = 0  # the market sequence number of that mark
    iv: Decimal | None = None
    iv_seq: int = 0
    iv_ts: int = 0
    funding: Decimal = ZERO  # perpetuals: cumulative sum of mark x rate
    settlement: Decimal | None = None
    seq: int = 0  # the market sequence number of the last record that changed this part

    def to_dict(self) -> dict[str, Any]:
        return {
            "mark": None if self.mark is None else decimal_text(self.mark),
            "mark_seq": self.mark_seq,
            "iv": None if self.iv is None else decimal_text(self.iv),
            "iv_seq": self.iv_seq,
            "iv_ts": self.iv_ts,
            "funding": decimal_text(self.funding),
            "settlement": None if self.settlement is None else decimal_text(self.settlement),
            "seq": self.seq,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Quote:
        def number(name: str) -> Decimal | None:
            return None if data[name] is None else Decimal(data[name])

        return cls(
            number("mark"), data["mark_seq"], number("iv"), data["iv_seq"], data["iv_ts"],
            Decimal(data["funding"]), number("settlement"), data["seq"],
        )  # fmt: skip


@dataclass(slots=True)
class IndexPrice:
    price: Decimal
    ts: int
    seq: int


@dataclass
class Market:
    instruments: dict[str, Instrument] = field(default_factory=dict)
    quotes: dict[str, Quote] = field(default_factory=dict)
    index: dict[str, IndexPrice] = field(default_factory=dict)
    # Portfolio-margin parameters by underlying (core/portfolio), and the market sequence
    # number of the record that set them; an underlying without a record has the defaults.
    portfolio: dict[str, PortfolioParams] = field(default_factory=dict)
    portfolio_seq: dict[str, int] = field(default_factory=dict)
    # Market records applied, in processing order; rebuilt as the largest stored seq.
    seq: int = 0
    # Derived, never stored.
    tier_tables: dict[str, TierTable] = field(default_factory=dict)
    option_rates: dict[str, ShortOptionRates] = field(default_factory=dict)
    options_on: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    dirty: set[StateKey] = field(default_factory=set)
    _models: dict[str, OptionValue | None] = field(default_factory=dict)
    # symbol -> (what it was computed from, its Exposure): core/portfolio/scenarios.py
    exposures: dict[str, tuple[tuple[int, ...], Any]] = field(default_factory=dict)
    # (the market seq they hold for, (symbol, scale) -> Exposure at a scaled index)
    shifted_exposures: tuple[int, dict[tuple[str, float], Any]] = (-1, {})
    # symbol -> (seq, risk mark, funding index) as floats, valid while seq is the market's.
    _floats: dict[str, tuple[int, float | None, float]] = field(default_factory=dict)
    _clock: tuple[int, int] = (-1, 0)  # (seq, clock()), valid while seq is the market's

    # -- reading ----------------------------------------------------------------

    def instrument(self, symbol: str) -> Instrument:
        found = self.instruments.get(symbol)
        if found is None:
            raise RecordError(f"unknown instrument {symbol}")
        return found

    def risk_mark(self, symbol: str) -> float | None:
        """The price positions are valued at, or None before the instrument's first mark."""
        return self._risk_floats(symbol)[1]

    def risk_funding(self, symbol: str) -> float:
        """The cumulative funding index as a float (a risk figure)."""
        return self._risk_floats(symbol)[2]

    def risk_floats(self, symbol: str) -> tuple[float | None, float]:
        """(risk_mark, risk_funding) in one look-up, for the per-row risk."""
        cached = self._floats.get(symbol)
        if cached is None or cached[0] != self.seq:
            cached = self._risk_floats(symbol)
        return cached[1], cached[2]

    def _risk_floats(self, symbol: str) -> tuple[int, float | None, float]:
        # Decimal to float costs a string conversion; each record's risk reads these many
        # times. Every market change ticks seq first, which retires all of them.
        cached = self._floats.get(symbol)
        if cached is None or cached[0] != self.seq:
            funding = float(self.quotes[symbol].funding)
            cached = self._floats[symbol] = (self.seq, self._mark_float(symbol), funding)
        return cached

    def _mark_float(self, symbol: str) -> float | None:
        quote = self.quotes[symbol]
        if quote.settlement is not None:
            return float(quote.settlement)
        if self.instruments[symbol].kind is Kind.OPTION and not self._explicit(symbol, quote):
            model = self.model(symbol)
            if model is not None:
                return model.price
        return None if quote.mark is None else float(quote.mark)

    def sums_mark(self, symbol: str) -> Decimal | None:
        """The price the state tree's sums value a position at (core/commitments/leaf.py),
        exactly: the settlement price, else the venue's mark, else an option's model mark
        as the decimal text the engine publishes for it (risk_text, 15 significant
        digits: a float goes into the sums only through that text); None before any."""
        quote = self.quotes[symbol]
        if quote.settlement is not None:
            return quote.settlement
        if self.instruments[symbol].kind is Kind.OPTION and not self._explicit(symbol, quote):
            model = self.model(symbol)
            if model is not None:
                return Decimal(risk_text(model.price))
        return quote.mark

    def risk_index(self, underlying: str) -> float | None:
        index = self.index.get(underlying)
        return None if index is None else float(index.price)

    def model(self, symbol: str) -> OptionValue | None:
        """Black-76 from the index and the option's last iv, at the time of the later of the two."""
        if symbol not in self._models:
            self._models[symbol] = self._price(symbol)
        return self._models[symbol]

    def params_for(self, underlying: str) -> PortfolioParams:
        """The underlying's portfolio-margin parameters (the defaults without a record)."""
        return self.portfolio.get(underlying, DEFAULT)

    def funding(self, symbol: str) -> Decimal:
        return self.quotes[symbol].funding

    def settlement(self, symbol: str) -> Decimal | None:
        return self.quotes[symbol].settlement

    # -- applying market records (each returns the symbols whose risk inputs moved) ----

    def apply_instrument(self, instrument: Instrument) -> set[str]:
        previous = self.instruments.get(instrument.symbol)
        if previous is not None:
            if self.quotes[instrument.symbol].settlement is not None:
                raise RecordError(
                    f"instrument {instrument.symbol} was settled; a new listing needs a new symbol"
                )
            instrument = previous.replaced_by(instrument)
        self._tick()
        self._define(instrument)
        self._changed(instrument.symbol)
        return {instrument.symbol}

    def clock(self) -> int:
        """The venue's event time as its market data tells it: the newest index time (0
        before any). What drops used ids (core/books/seenids.py), which an account's own
        records must not move."""
        if not self.index:
            return 0
        seq, clock = self._clock
        if seq != self.seq:  # every market change ticks seq first
            clock = max(index.ts for index in self.index.values())
            self._clock = (self.seq, clock)
        return clock

    def apply_index(self, record: IndexRecord) -> set[str]:
        self._tick()
        self.index[record.underlying] = IndexPrice(record.price, record.ts, self.seq)
        self.dirty.add(("index", record.underlying))
        moved = self.options_on.get(record.underlying, set())
        for symbol in moved:
            self._models.pop(symbol, None)
        return set(moved)

    def apply_mark(self, record: MarkRecord) -> set[str]:
        instrument = self.instrument(record.symbol)
        if instrument.status is Status.EXPIRED:
            raise RecordError(f"instrument {record.symbol} is expired")
        if not instrument.is_option and record.price is None:
            raise RecordError(f"a mark for {instrument.kind.value} {record.symbol} needs a price")
        if record.price is None and record.iv is None:
            raise RecordError(f"a mark for option {record.symbol} needs a price or an iv")
        self._tick()
        quote = self.quotes[record.symbol]
        if record.price is not None:
            quote.mark, quote.mark_seq = record.price, self.seq
        if instrument.is_option and record.iv is not None:
            quote.iv, quote.iv_seq, quote.iv_ts = record.iv, self.seq, record.ts
            self._models.pop(record.symbol, None)
        self._changed(record.symbol)
        return {record.symbol}

    @exact
    def apply_funding(self, record: FundingRecord) -> set[str]:
        instrument = self.instrument(record.symbol)
        if instrument.kind is not Kind.PERPETUAL:
            raise RecordError(
                f"funding applies to perpetuals; {record.symbol} is a {instrument.kind}"
            )
        quote = self.quotes[record.symbol]
        if quote.mark is None:
            raise RecordError(f"no mark for {record.symbol} yet: funding is paid on the mark")
        self._tick()
        quote.funding += quote.mark * record.rate
        self._changed(record.symbol)
        return {record.symbol}

    def apply_portfolio_params(self, record: PortfolioParamsRecord) -> set[str]:
        """New parameters for an underlying: every instrument on it is re-margined."""
        self._tick()
        self.portfolio[record.underlying] = record.params
        self.portfolio_seq[record.underlying] = self.seq
        self.dirty.add((PORTFOLIO_KIND, record.underlying))
        return {s for s, i in self.instruments.items() if i.underlying == record.underlying}

    def apply_settlement(self, record: SettlementRecord) -> Instrument:
        instrument = self.instrument(record.symbol)
        if instrument.kind is Kind.PERPETUAL:
            raise RecordError(f"perpetual {record.symbol} never settles")
        if self.quotes[record.symbol].settlement is not None:
            raise RecordError(f"{record.symbol} was already settled")
        self._tick()
        self.quotes[record.symbol].settlement = record.price
        settled = instrument.settled()
        self._define(settled)
        self._changed(record.symbol)
        return settled

    def take_dirty(self) -> set[StateKey]:
        dirty, self.dirty = self.dirty, set()
        return dirty

    # -- stored parts -----------------------------------------------------------------

    def part(self, key: StateKey) -> dict[str, Any] | None:
        """The stored form of one part (None: the part no longer exists)."""
        kind, name = key
        if kind == "instrument":
            return {
                "instrument": self.instruments[name].to_dict(),
                "quote": self.quotes[name].to_dict(),
            }
        if kind == PORTFOLIO_KIND:
            return {"params": self.portfolio[name].to_dict(), "seq": self.portfolio_seq[name]}
        index = self.index[name]
        return {"price": decimal_text(index.price), "ts": index.ts, "seq": index.seq}

    def parts(self) -> dict[StateKey, dict[str, Any] | None]:
        keys = [("instrument", s) for s in self.instruments]
        keys += [("index", u) for u in self.index]
        keys += [(PORTFOLIO_KIND, u) for u in self.portfolio]
        return {key: self.part(key) for key in keys}

    @classmethod
    def from_parts(cls, parts: dict[StateKey, dict[str, Any]]) -> Market:
        market = cls()
        for (kind, name), data in sorted(parts.items()):
            if kind == "instrument":
                market._define(parse_instrument(data["instrument"]))
                quote = market.quotes[name] = Quote.from_dict(data["quote"])
                market.seq = max(market.seq, quote.seq)
            elif kind == PORTFOLIO_KIND:
                market.portfolio[name] = PortfolioParams.from_dict(data["params"])
                market.portfolio_seq[name] = data["seq"]
                market.seq = max(market.seq, data["seq"])
            else:
                index = IndexPrice(Decimal(data["price"]), data["ts"], data["seq"])
                market.index[name] = index
                market.seq = max(market.seq, index.seq)
        market.dirty.clear()
        return market

    # -- internals ------------------------------------------------------------------

    def _tick(self) -> None:
        """Called by every change to the market, before the change (nothing reads between)."""
        self.seq += 1

    def _changed(self, symbol: str) -> None:
        """An instrument's part changed: stamp it with the market's sequence number (the
        largest stamp is how a market rebuilt from its parts knows its own)."""
        self.quotes[symbol].seq = self.seq
        self.dirty.add(("instrument", symbol))

    def _define(self, instrument: Instrument) -> None:
        self.instruments[instrument.symbol] = instrument
        self.quotes.setdefault(instrument.symbol, Quote())
        self._models.pop(instrument.symbol, None)
        if instrument.is_option:
            self.options_on[instrument.underlying].add(instrument.symbol)
            self.option_rates[instrument.symbol] = ShortOptionRates.of(instrument)
        else:
            self.tier_tables[instrument.symbol] = TierTable.of(instrument)

    def _explicit(self, symbol: str, quote: Quote) -> bool:
        """An explicit mark overrides the model until the next index move or iv-only mark."""
        if quote.mark is None:
            return False
        index = self.index.get(self.instruments[symbol].underlying)
        return quote.mark_seq > (index.seq if index else 0) and quote.mark_seq >= quote.iv_seq

    def _price(self, symbol: str) -> OptionValue | None:
        index = self.index.get(self.instruments[symbol].underlying)
        return None if index is None else self._priced_at(symbol, float(index.price))

    def model_at(self, symbol: str, forward: float) -> OptionValue | None:
        """The option's model value were its index at forward (the liquidation prices'
        what-if); None where its mark is not the model's (an explicit mark, no iv)."""
        quote = self.quotes[symbol]
        if self._explicit(symbol, quote):
            return None
        return self._priced_at(symbol, forward)

    def model_inputs(self, symbol: str) -> tuple[float, float] | None:
        """(years to expiry, volatility) the option's model mark is priced with, or None
        where its mark is not the model's (model_at's cheap form: pricing.black76_price)."""
        if self._explicit(symbol, self.quotes[symbol]):
            return None
        return self._inputs(symbol)

    def pricing_inputs(self, symbol: str) -> tuple[float, float] | None:
        """(years, volatility) the model would price the option with, whatever its mark
        (the portfolio grid revalues every option, core/portfolio/scenarios.py)."""
        return self._inputs(symbol)

    def _inputs(self, symbol: str) -> tuple[float, float] | None:
        """(years, volatility) of the model: from the later of the index and the iv."""
        instrument = self.instruments[symbol]
        quote = self.quotes[symbol]
        index = self.index.get(instrument.underlying)
        if index is None or quote.iv is None or quote.settlement is not None:
            return None
        assert instrument.expiry_ms is not None
        ts = quote.iv_ts if quote.iv_seq > index.seq else index.ts
        return years_to_expiry(instrument.expiry_ms, ts), float(quote.iv)

    def _priced_at(self, symbol: str, forward: float) -> OptionValue | None:
        inputs = self._inputs(symbol)
        if inputs is None:
            return None
        instrument = self.instruments[symbol]
        assert instrument.strike is not None
        years, vol = inputs
        return black76(forward, float(instrument.strike), years, vol, instrument.is_put)
