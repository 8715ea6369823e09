"""Instrument definitions and their risk parameters, validated with precise reasons."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from marginstream.core.inputs.numbers import (
    RecordError,
    decimal_text,
    non_negative,
    parse_decimal,
    positive,
)

MAX_SYMBOL_LENGTH = 64
MAX_TIERS = 32


class Kind(StrEnum):
    PERPETUAL = "perpetual"
    FUTURE = "future"
    OPTION = "option"


class Status(StrEnum):
    ACTIVE = "active"
    HALTED = "halted"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class Tier:
    """One slice of notional, (previous up_to, up_to], and the rates it pays."""

    up_to: Decimal | None
    initial: Decimal
    maintenance: Decimal


@dataclass(frozen=True, slots=True)
class ShortOptionMargin:
    """Per-contract constants: IM = max(a*index - OTM, b*index) + mark; MM = c*index + mark."""

    initial: Decimal = Decimal("0.15")
    floor: Decimal = Decimal("0.10")
    maintenance: Decimal = Decimal("0.075")


@dataclass(frozen=True, slots=True)
class Instrument:
    symbol: str
    kind: Kind
    underlying: str
    contract_size: Decimal
    status: Status = Status.ACTIVE
    expiry_ms: int | None = None
    option_type: str | None = None
    strike: Decimal | None = None
    tiers: tuple[Tier, ...] = ()
    option_margin: ShortOptionMargin | None = None
    # Derived, for the risk figures read several times per record.
    size: float = field(init=False, repr=False, compare=False)  # contract_size as a float
    is_option: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", float(self.contract_size))
        object.__setattr__(self, "is_option", self.kind is Kind.OPTION)

    @property
    def is_put(self) -> bool:
        return self.option_type == "put"

    def expired_at(self, ts: int) -> bool:
        return self.status is Status.EXPIRED or (
            self.expiry_ms is not None and ts >= self.expiry_ms
        )

    def settled(self) -> Instrument:
        return replace(self, status=Status.EXPIRED)

    def replaced_by(self, new: Instrument) -> Instrument:
        """Accept a new definition of this symbol unless it changes what positions mean."""
        for name in ("kind", "underlying", "contract_size", "option_type"):
            old_value, new_value = getattr(self, name), getattr(new, name)
            if old_value != new_value:
                raise RecordError(
                    f"instrument {self.symbol}: {name} cannot change "
                    f"({_text(old_value)} -> {_text(new_value)}); positions are kept"
                )
        return new

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "type": "instrument",
            "symbol": self.symbol,
            "kind": self.kind.value,
            "underlying": self.underlying,
            "contract_size": decimal_text(self.contract_size),
            "status": self.status.value,
        }
        if self.expiry_ms is not None:
            record["expiry"] = self.expiry_ms
        if self.is_option:
            assert self.strike is not None and self.option_margin is not None
            record["option_type"] = self.option_type
            record["strike"] = decimal_text(self.strike)
            margin = self.option_margin
            record["margin"] = {
                "short_initial": decimal_text(margin.initial),
                "short_initial_floor": decimal_text(margin.floor),
                "short_maintenance": decimal_text(margin.maintenance),
            }
        else:
            record["margin"] = {
                "tiers": [
                    {
                        "up_to": None if t.up_to is None else decimal_text(t.up_to),
                        "initial": decimal_text(t.initial),
                        "maintenance": decimal_text(t.maintenance),
                    }
                    for t in self.tiers
                ]
            }
        return record


def _text(value: object) -> str:
    return decimal_text(value) if isinstance(value, Decimal) else str(value)


def _string(value: dict[str, Any], field: str, limit: int = MAX_SYMBOL_LENGTH) -> str:
    raw = value.get(field)
    if not isinstance(raw, str) or not raw.strip():
        raise RecordError(f"{field} must be a non-empty string")
    if len(raw) > limit:
        raise RecordError(f"{field} is longer than {limit} characters")
    return raw


def _rate(raw: object, field: str) -> Decimal:
    rate = non_negative(parse_decimal(raw, field), field)
    if rate > 1:
        raise RecordError(f"{field} must be at most 1, got {decimal_text(rate)}")
    return rate


MAX_EXPIRY_MS = 10**14  # as records' ts: about the year 5138


def parse_expiry(raw: object) -> int:
    """ISO-8601 UTC (or epoch milliseconds, as stored) to epoch milliseconds.

    One range for both, so that whatever a record brought in, its stored form reads back
    (an expiry of 1970-01-01 once passed here as text and failed as its stored 0).
    """
    if isinstance(raw, int) and not isinstance(raw, bool):
        ms = raw
    elif isinstance(raw, str):
        try:
            moment = datetime.fromisoformat(raw.strip())
        except ValueError:
            raise RecordError(f"expiry is not an ISO-8601 time: {raw[:60]!r}") from None
        if moment.tzinfo is None or moment.utcoffset() != UTC.utcoffset(None):
            raise RecordError(f"expiry must be in UTC (end with Z or +00:00): {raw[:60]!r}")
        ms = int(moment.timestamp() * 1000)
    else:
        raise RecordError("expiry must be an ISO-8601 UTC time, e.g. 2026-12-25T08:00:00Z")
    if not 0 <= ms < MAX_EXPIRY_MS:
        raise RecordError(f"expiry is out of range (1970 to 5138): {str(raw)[:60]!r}")
    return ms


def _tiers(margin: dict[str, Any]) -> tuple[Tier, ...]:
    raw = margin.get("tiers")
    if not isinstance(raw, list) or not raw:
        raise RecordError("margin.tiers must be a non-empty list")
    if len(raw) > MAX_TIERS:
        raise RecordError(f"margin.tiers has more than {MAX_TIERS} tiers")
    tiers: list[Tier] = []
    previous = Decimal(0)
    for number, item in enumerate(raw, start=1):
        where = f"margin.tiers[{number}]"
        if not isinstance(item, dict):
            raise RecordError(f"{where} must be an object")
        last = number == len(raw)
        up_to_raw = item.get("up_to")
        if up_to_raw is None:
            if not last:
                raise RecordError(f"{where}.up_to is null but only the last tier may be unbounded")
            up_to = None
        else:
            if last:
                raise RecordError(f"{where}.up_to must be null: the last tier has no bound")
            up_to = positive(parse_decimal(up_to_raw, f"{where}.up_to"), f"{where}.up_to")
            if up_to <= previous:
                raise RecordError(f"{where}.up_to must be above the previous tier's")
            previous = up_to
        initial = _rate(item.get("initial"), f"{where}.initial")
        maintenance = _rate(item.get("maintenance"), f"{where}.maintenance")
        if maintenance > initial:
            raise RecordError(f"{where}: maintenance rate is above the initial rate")
        tiers.append(Tier(up_to, initial, maintenance))
    return tuple(tiers)


def _option_margin(margin: dict[str, Any]) -> ShortOptionMargin:
    default = ShortOptionMargin()
    initial = _rate(margin.get("short_initial", default.initial), "margin.short_initial")
    floor = _rate(margin.get("short_initial_floor", default.floor), "margin.short_initial_floor")
    maintenance = _rate(
        margin.get("short_maintenance", default.maintenance), "margin.short_maintenance"
    )
    if floor > initial:
        raise RecordError("margin.short_initial_floor is above margin.short_initial")
    return ShortOptionMargin(initial, floor, maintenance)


def parse_instrument(value: dict[str, Any]) -> Instrument:
    symbol = _string(value, "symbol")
    try:
        kind = Kind(value.get("kind"))
    except ValueError:
        kind_raw = value.get("kind")
        raise RecordError(f"kind must be perpetual, future or option, got {kind_raw!r}") from None
    status_raw = value.get("status", Status.ACTIVE.value)
    try:
        status = Status(status_raw)
    except ValueError:
        raise RecordError(f"status must be active, halted or expired, got {status_raw!r}") from None
    margin = value.get("margin", {} if kind is Kind.OPTION else None)
    if not isinstance(margin, dict):
        raise RecordError("margin must be an object with the instrument's risk parameters")
    fields: dict[str, Any] = {
        "symbol": symbol,
        "kind": kind,
        "underlying": _string(value, "underlying"),
        "contract_size": positive(
            parse_decimal(value.get("contract_size"), "contract_size"), "contract_size"
        ),
        "status": status,
    }
    if kind is Kind.PERPETUAL:
        fields["tiers"] = _tiers(margin)
        return Instrument(**fields)
    fields["expiry_ms"] = parse_expiry(value.get("expiry"))
    if kind is Kind.FUTURE:
        fields["tiers"] = _tiers(margin)
        return Instrument(**fields)
    option_type = value.get("option_type")
    if option_type not in ("call", "put"):
        raise RecordError(f"option_type must be call or put, got {option_type!r}")
    fields["option_type"] = option_type
    fields["strike"] = positive(parse_decimal(value.get("strike"), "strike"), "strike")
    fields["option_margin"] = _option_margin(margin)
    return Instrument(**fields)
