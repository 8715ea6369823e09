"""Input records: each JSON value becomes a typed record, or a RecordError naming the fault.

Field names and meanings are SPEC section 2's. Unknown extra fields are
ignored; missing, mistyped, non-finite, absurd or impossible values are not.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, NamedTuple

from marginstream.core.inputs.envelope import NotJson
from marginstream.core.inputs.numbers import ZERO, RecordError, parse_decimal, positive
from marginstream.core.portfolio.params import PortfolioParams, parse_params
from marginstream.core.risk.instruments import Instrument, parse_instrument

MAX_ID_LENGTH = 128
MAX_TS = 10**14  # milliseconds: about the year 5138
MAX_IV = Decimal(10)  # 1000% annualised
MAX_FUNDING_RATE = Decimal(1)

TOPIC_TYPES: dict[str, frozenset[str]] = {
    "instruments": frozenset({"instrument", "portfolio_params"}),
    "orders": frozenset({"order", "cancel", "fill"}),
    "transfers": frozenset({"deposit", "withdrawal", "margin_mode"}),
    "prices": frozenset({"index", "mark", "funding", "settlement"}),
}
ACCOUNT_TOPICS = frozenset({"orders", "transfers"})
MARKET_TOPICS = frozenset({"prices", "instruments"})


# Records are named tuples: immutable, and built for every record read, where a frozen
# dataclass's __init__ costs five times as much.


class OrderRecord(NamedTuple):
    order_id: str
    account: str
    symbol: str
    side: str
    qty: Decimal
    price: Decimal
    reduce_only: bool
    ts: int


class CancelRecord(NamedTuple):
    order_id: str
    account: str
    ts: int


class FillRecord(NamedTuple):
    fill_id: str
    order_id: str | None
    account: str
    symbol: str
    side: str
    qty: Decimal
    price: Decimal
    fee: Decimal
    ts: int


class TransferRecord(NamedTuple):
    kind: str  # "deposit" or "withdrawal"
    transfer_id: str
    account: str
    amount: Decimal
    ts: int


class MarginModeRecord(NamedTuple):
    """An account's choice of margin model: "standard" or "portfolio" (core/portfolio)."""

    transfer_id: str
    account: str
    mode: str
    ts: int


MARGIN_MODES = ("standard", "portfolio")


class IndexRecord(NamedTuple):
    underlying: str
    price: Decimal
    ts: int


class MarkRecord(NamedTuple):
    symbol: str
    price: Decimal | None
    iv: Decimal | None
    ts: int


class FundingRecord(NamedTuple):
    symbol: str
    rate: Decimal
    ts: int


class SettlementRecord(NamedTuple):
    symbol: str
    price: Decimal
    ts: int


class InstrumentRecord(NamedTuple):
    instrument: Instrument
    ts: int | None


class PortfolioParamsRecord(NamedTuple):
    """An underlying's portfolio-margin parameters, keyed by the underlying."""

    underlying: str
    params: PortfolioParams
    ts: int | None


AccountRecord = OrderRecord | CancelRecord | FillRecord | TransferRecord | MarginModeRecord
MarketRecord = (
    IndexRecord
    | MarkRecord
    | FundingRecord
    | SettlementRecord
    | InstrumentRecord
    | PortfolioParamsRecord
)
Record = AccountRecord | MarketRecord


def identifier(value: dict[str, Any], field: str) -> str:
    raw = value.get(field)
    if type(raw) is str and 0 < len(raw) <= MAX_ID_LENGTH:
        return raw
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = str(raw)
    if not isinstance(raw, str) or not raw:
        raise RecordError(f"{field} must be a non-empty string")
    if len(raw) > MAX_ID_LENGTH:
        raise RecordError(f"{field} is longer than {MAX_ID_LENGTH} characters")
    return raw


def timestamp(value: dict[str, Any], field: str = "ts") -> int:
    raw = value.get(field)
    if type(raw) is int and 0 <= raw < MAX_TS:
        return raw
    if isinstance(raw, float) and raw.is_integer():
        raw = int(raw)
    if not isinstance(raw, int) or isinstance(raw, bool):
        raise RecordError(f"{field} must be an integer of milliseconds since the epoch")
    if not 0 <= raw < MAX_TS:
        raise RecordError(f"{field} is out of range: {raw}")
    return raw


_MISSING = object()


def _positive(value: dict[str, Any], field: str) -> Decimal:
    raw = value.get(field, _MISSING)
    if raw is _MISSING:
        raise RecordError(f"{field} is missing")
    return positive(parse_decimal(raw, field), field)


def _side(value: dict[str, Any]) -> str:
    side = value.get("side")
    if side not in ("buy", "sell"):
        raise RecordError(f"side must be buy or sell, got {side!r}")
    return side


def _bounded(value: Decimal, field: str, limit: Decimal) -> Decimal:
    if abs(value) > limit:
        raise RecordError(f"{field} is absurd: {value} (limit {limit})")
    return value


def _order(value: dict[str, Any]) -> OrderRecord:
    reduce_only = value.get("reduce_only", False)
    if not isinstance(reduce_only, bool):
        raise RecordError("reduce_only must be true or false")
    return OrderRecord(
        identifier(value, "order_id"),
        identifier(value, "account"),
        identifier(value, "symbol"),
        _side(value),
        _positive(value, "qty"),
        _positive(value, "price"),
        reduce_only,
        timestamp(value),
    )


def _fill(value: dict[str, Any]) -> FillRecord:
    order_id = value.get("order_id")
    fee = value.get("fee")
    return FillRecord(
        identifier(value, "fill_id"),
        None if order_id is None else identifier(value, "order_id"),
        identifier(value, "account"),
        identifier(value, "symbol"),
        _side(value),
        _positive(value, "qty"),
        _positive(value, "price"),
        ZERO if fee is None else parse_decimal(fee, "fee"),
        timestamp(value),
    )


def _transfer(value: dict[str, Any]) -> TransferRecord:
    return TransferRecord(
        value["type"],
        identifier(value, "transfer_id"),
        identifier(value, "account"),
        _positive(value, "amount"),
        timestamp(value),
    )


def _mark(value: dict[str, Any]) -> MarkRecord:
    price = _positive(value, "price") if value.get("price") is not None else None
    iv = None
    if value.get("iv") is not None:
        iv = _bounded(_positive(value, "iv"), "iv", MAX_IV)
    return MarkRecord(identifier(value, "symbol"), price, iv, timestamp(value))


def _instrument(value: dict[str, Any]) -> InstrumentRecord:
    ts = timestamp(value) if "ts" in value else None
    return InstrumentRecord(parse_instrument(value), ts)


def _margin_mode(value: dict[str, Any]) -> MarginModeRecord:
    mode = value.get("mode")
    if mode not in MARGIN_MODES:
        shown = repr(mode) if len(repr(mode)) <= 40 else repr(mode)[:37] + "..."
        raise RecordError(f"mode must be standard or portfolio, got {shown}")
    return MarginModeRecord(
        identifier(value, "transfer_id"), identifier(value, "account"), mode, timestamp(value)
    )


def _portfolio_params(value: dict[str, Any]) -> PortfolioParamsRecord:
    ts = timestamp(value) if "ts" in value else None
    return PortfolioParamsRecord(identifier(value, "underlying"), parse_params(value), ts)


def _cancel(value: dict[str, Any]) -> CancelRecord:
    return CancelRecord(
        identifier(value, "order_id"), identifier(value, "account"), timestamp(value)
    )


def _index(value: dict[str, Any]) -> IndexRecord:
    return IndexRecord(identifier(value, "underlying"), _positive(value, "price"), timestamp(value))


def _funding(value: dict[str, Any]) -> FundingRecord:
    rate = _bounded(parse_decimal(value.get("rate"), "rate"), "rate", MAX_FUNDING_RATE)
    return FundingRecord(identifier(value, "symbol"), rate, timestamp(value))


def _settlement(value: dict[str, Any]) -> SettlementRecord:
    return SettlementRecord(
        identifier(value, "symbol"), _positive(value, "price"), timestamp(value)
    )


_PARSERS: dict[str, Any] = {
    "order": _order,
    "cancel": _cancel,
    "fill": _fill,
    "deposit": _transfer,
    "withdrawal": _transfer,
    "index": _index,
    "mark": _mark,
    "funding": _funding,
    "settlement": _settlement,
    "instrument": _instrument,
    "margin_mode": _margin_mode,
    "portfolio_params": _portfolio_params,
}


def parse_record(topic: str, value: object) -> Record:
    """The typed record for a value read from topic (a SPEC topic name, without prefix)."""
    if isinstance(value, NotJson):
        raise RecordError(str(value))
    if not isinstance(value, dict):
        raise RecordError(f"a record must be a JSON object, got {type(value).__name__}")
    kind = value.get("type")
    allowed = TOPIC_TYPES.get(topic)
    if allowed is None:
        raise RecordError(f"unknown topic {topic!r}")
    if not isinstance(kind, str) or kind not in allowed:
        expected = ", ".join(sorted(allowed))
        shown = repr(kind) if len(repr(kind)) <= 60 else repr(kind)[:57] + "..."
        raise RecordError(f"type {shown} does not belong on topic {topic} (expected {expected})")
    return _PARSERS[kind](value)
