"""Exact numbers for the ledger, and the one place risk floats become text.

The ledger runs under LEDGER_CONTEXT, which traps Inexact: any rounding the
ledger did not ask for raises instead of drifting silently. Inputs are bounded
(magnitude, decimal places) so that every product the ledger forms fits the
context's precision. The single deliberate rounding, the cost removed from a
partially closed position, goes through `divide_rounded`, which keeps it to 18 places.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from decimal import (
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
    getcontext,
    setcontext,
)
from functools import wraps
from typing import ParamSpec, TypeVar

LEDGER_CONTEXT = Context(
    prec=200,
    rounding=ROUND_HALF_EVEN,
    traps=[InvalidOperation, DivisionByZero, Overflow, Inexact],
)
_ROUNDING = Context(prec=200, rounding=ROUND_HALF_EVEN, traps=[InvalidOperation, Overflow])
# Where a division must round, it rounds half-even to this quantum (1e-18 of a currency unit).
ROUNDING_QUANTUM = Decimal("1e-18")
_QUANTUM_EXPONENT = -18
# Input bounds: anything beyond is an absurd record, not a trade.
MAX_MAGNITUDE = Decimal("1e15")
MAX_PLACES = 12
MAX_ADJUSTED = MAX_MAGNITUDE.adjusted()
_PLAIN_LENGTH = MAX_PLACES + 1  # "." and 12 digits
ZERO = Decimal(0)

P = ParamSpec("P")
R = TypeVar("R")


class RecordError(ValueError):
    """A record that cannot be applied; the message is the dead letter's reason."""


# The context ledger operations run in. Set as it is, not copied (localcontext would copy
# it at every call, most of the cost of a small operation): its flags gather and nothing
# reads them; its traps raise on each operation's own condition, whatever the flags say.
_LEDGER_RUNNING = LEDGER_CONTEXT.copy()


def exact(function: Callable[P, R]) -> Callable[P, R]:
    """Run a ledger operation under LEDGER_CONTEXT (so unasked-for rounding raises)."""

    @wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        outer = getcontext()
        if outer is _LEDGER_RUNNING:  # called from another ledger operation
            return function(*args, **kwargs)
        setcontext(_LEDGER_RUNNING)
        try:
            return function(*args, **kwargs)
        finally:
            setcontext(outer)

    return wrapper


def _rounding() -> Context:
    """A fresh rounding context: its flags say what *this* operation did, nothing earlier."""
    return _ROUNDING.copy()


def divide_rounded(numerator: Decimal, denominator: Decimal) -> Decimal:
    """numerator / denominator, half-even at ROUNDING_QUANTUM when it has more places.

    Exact quotients are rounded too: 1/16 is exact, and so is every later division of a
    cost by such a quantity, each adding places, until a figure fills the context's
    precision and the next addition traps Inexact (an outside test's market maker did in
    6,721 fills). At most 18 places, every ledger figure keeps a bounded size.
    """
    context = _rounding()
    quotient = context.divide(numerator, denominator)
    exponent = quotient.as_tuple().exponent
    if context.flags[Inexact] or (isinstance(exponent, int) and exponent < _QUANTUM_EXPONENT):
        quotient = quotient.quantize(ROUNDING_QUANTUM, context=context)
    return quotient


def parse_decimal(raw: object, field: str) -> Decimal:
    """A money, price, quantity or rate field: a decimal string, or a JSON number read exactly.

    JSON floats are read through their shortest decimal form (repr), so 0.1 is 0.1.
    """
    if type(raw) is str and len(raw) <= _PLAIN_LENGTH:
        # The common case, checked at a third of the cost: a text of at most 13 characters
        # and no exponent has at most 12 places and a magnitude below 1e13.
        try:
            value = Decimal(raw.strip())
        except InvalidOperation:
            raise RecordError(f"{field} is not a decimal number: {_show(raw)}") from None
        if value.is_finite() and "e" not in raw and "E" not in raw:
            return value + ZERO if value == 0 else value  # -0 becomes 0
        return _checked(value, raw, field)
    if isinstance(raw, bool) or raw is None:
        raise RecordError(f"{field} must be a decimal string, got {_show(raw)}")
    if isinstance(raw, Decimal):
        value = raw
    elif isinstance(raw, int):
        value = Decimal(raw)
    elif isinstance(raw, float):
        if not math.isfinite(raw):
            raise RecordError(f"{field} must be finite, got {raw}")
        value = Decimal(repr(raw))
    elif isinstance(raw, str):
        try:
            value = Decimal(raw.strip())
        except InvalidOperation:
            raise RecordError(f"{field} is not a decimal number: {_show(raw)}") from None
    else:
        raise RecordError(f"{field} must be a decimal string, got {type(raw).__name__}")
    return _checked(value, raw, field)


def _checked(value: Decimal, raw: object, field: str) -> Decimal:
    """value, read from raw, if it is finite and within the input bounds."""
    if not value.is_finite():
        raise RecordError(f"{field} must be finite, got {_show(raw)}")
    # adjusted() and copy_abs() use no context: 1E+999999999 cannot overflow them.
    if value and (value.adjusted() > MAX_ADJUSTED or value.copy_abs() >= MAX_MAGNITUDE):
        raise RecordError(f"{field} is absurdly large: {_show(raw)} (limit {MAX_MAGNITUDE:f})")
    exponent = value.as_tuple().exponent
    if (
        isinstance(exponent, int)
        and exponent < -MAX_PLACES
        and value != value.quantize(Decimal(1).scaleb(-MAX_PLACES), context=_rounding())
    ):
        raise RecordError(f"{field} has more than {MAX_PLACES} decimal places: {_show(raw)}")
    return value + ZERO if value == 0 else value  # -0 becomes 0


def positive(value: Decimal, field: str) -> Decimal:
    if value <= 0:
        raise RecordError(f"{field} must be positive, got {decimal_text(value)}")
    return value


def non_negative(value: Decimal, field: str) -> Decimal:
    if value < 0:
        raise RecordError(f"{field} must not be negative, got {decimal_text(value)}")
    return value


def decimal_text(value: Decimal) -> str:
    """A ledger figure as SPEC's decimal string: no exponent, no trailing zeros, no '-0'."""
    if not value:
        return "0"
    text = str(value)  # plain unless its exponent is large: then normalise and format
    if "E" in text:
        return format(value.normalize(_rounding()), "f")
    if text[-1] != "0":  # no trailing zero to strip (str() never ends a Decimal with ".")
        return text
    return text.rstrip("0").rstrip(".") if "." in text else text


def risk_text(value: float) -> str:
    """A binary-float risk figure as a decimal string: 15 significant digits, never an exponent."""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value == 0:
        return "0"
    text = f"{value:.15g}"
    # Without an exponent, .15g's text is already SPEC's (no trailing zeros, no "-0"),
    # and decimal_text would give it back as it is.
    return text if "e" not in text else decimal_text(Decimal(text))


def _show(raw: object) -> str:
    text = repr(raw)
    return text if len(text) <= 60 else text[:57] + "..."
