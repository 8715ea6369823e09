"""Exact numbers: parsing SPEC's decimal fields, and printing ledger and risk figures."""

from __future__ import annotations

from decimal import Decimal, Inexact, getcontext, localcontext

import pytest
from hypothesis import given
from hypothesis import strategies as st

from marginstream.core.inputs.numbers import (
    LEDGER_CONTEXT,
    RecordError,
    decimal_text,
    divide_rounded,
    exact,
    parse_decimal,
    risk_text,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("65000.5", Decimal("65000.5")),
        (" 1.25 ", Decimal("1.25")),
        (65000, Decimal(65000)),
        (0.1, Decimal("0.1")),  # a JSON number is read through its shortest decimal form
        (1e-05, Decimal("0.00001")),
        ("1e3", Decimal(1000)),
        ("-0", Decimal(0)),
        ("0.000000000001", Decimal("1e-12")),  # 12 places: the limit
        ("1.500000000000000", Decimal("1.5")),  # trailing zeros beyond 12 places are harmless
    ],
)
def test_parse_decimal_reads_exactly(raw, expected):
    value = parse_decimal(raw, "price")
    assert value == expected
    assert str(value) != "-0"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (True, "price must be a decimal string, got True"),
        (None, "price must be a decimal string, got None"),
        ([1], "price must be a decimal string, got list"),
        ("abc", "price is not a decimal number: 'abc'"),
        ("NaN", "price must be finite, got 'NaN'"),
        ("Infinity", "price must be finite, got 'Infinity'"),
        (float("inf"), "price must be finite, got inf"),
        ("1e40", "price is absurdly large: '1e40' (limit 1000000000000000)"),
        ("-1e15", "price is absurdly large"),
        ("0.0000000000001", "price has more than 12 decimal places"),
    ],
)
def test_parse_decimal_refuses_with_a_reason(raw, reason):
    with pytest.raises(RecordError) as caught:
        parse_decimal(raw, "price")
    assert str(caught.value).startswith(reason)


def test_decimal_text_never_uses_an_exponent_or_minus_zero():
    assert decimal_text(Decimal("1E+3")) == "1000"
    assert decimal_text(Decimal("65000.500")) == "65000.5"
    assert decimal_text(Decimal("-0.00")) == "0"
    assert decimal_text(Decimal("1E-18")) == "0.000000000000000001"


@given(st.decimals(allow_nan=False, allow_infinity=False))
def test_decimal_text_is_the_normalised_fixed_point_text(value):
    # decimal_text skips normalize() where str() is already plain; the text must not change.
    normalised = value.normalize(LEDGER_CONTEXT.copy())
    assert decimal_text(value) == ("0" if value == 0 else format(normalised, "f"))


def test_risk_text_keeps_fifteen_significant_digits():
    assert risk_text(0.1 + 0.2) == "0.3"  # 0.30000000000000004 at 15 digits
    assert risk_text(1 / 3) == "0.333333333333333"
    assert risk_text(2.5e-7) == "0.00000025"
    assert risk_text(float("inf")) == "inf"
    assert risk_text(-0.0) == "0"


def test_divide_rounded_is_exact_when_it_can_be_and_half_even_otherwise():
    assert divide_rounded(Decimal(330), Decimal(3)) == Decimal(110)
    # 100 / 3 = 33.333...: rounded at 1e-18, half-even
    assert divide_rounded(Decimal(100), Decimal(3)) == Decimal("33.333333333333333333")
    assert divide_rounded(Decimal(200), Decimal(3)) == Decimal("66.666666666666666667")


def test_the_ledger_context_refuses_to_round_silently():
    @exact
    def third() -> Decimal:
        return Decimal(1) / Decimal(3)

    for _ in range(2):  # the second time, the Inexact flag is already set: still raises
        with pytest.raises(Inexact):
            third()
    assert getcontext().prec == 28  # the caller's context is back

    @exact
    def product() -> Decimal:
        return Decimal("123456789012345.123456789012") * Decimal("987654321098765.987654321098")

    @exact
    def twice() -> Decimal:  # a ledger operation calling another: both under the ledger's
        return product() + product()

    exact_twice = 2 * 123456789012345123456789012 * 987654321098765987654321098
    assert twice() == Decimal(exact_twice).scaleb(-24, LEDGER_CONTEXT)
    assert getcontext().prec == 28
    # A product of bounded inputs is exact under the ledger context; Python's default
    # context (28 digits) would round this one.
    a, b = Decimal("123456789012345.123456789012"), Decimal("987654321098765.987654321098")
    with localcontext(LEDGER_CONTEXT):
        product = a * b
        scaled = product.scaleb(24)
    assert scaled == Decimal(123456789012345123456789012 * 987654321098765987654321098)
    assert len(product.as_tuple().digits) > 28


def test_rounding_leaves_no_trace_for_the_next_operation():
    """An earlier rounding must not make a later exact division look inexact.

    Found by the crash test: a shared context kept the Inexact flag of a rejected
    13-place quantity, and from then on every exact entry price was rounded.
    """
    with pytest.raises(RecordError):
        parse_decimal("0.0000000000001", "qty")  # rounds while checking its places
    decimal_text(Decimal("1") / Decimal("3"))  # normalises a 28-digit value
    assert divide_rounded(Decimal("272.548571428571428571"), Decimal("0.5")) == Decimal(
        "545.097142857142857142"
    )  # exact in 18 places: nothing rounded


def test_a_quotient_keeps_at_most_18_places_even_when_exact():
    """Exact quotients with more places are rounded too, or the places of a cost would
    grow with each partial close (tests/core/test_ledger.py has the market maker)."""
    assert divide_rounded(Decimal("272.548571428571428571"), Decimal("0.16")) == Decimal(
        "1703.428571428571428569"
    )  # 1703.42857142857142856875, half-even at 18 places
    assert divide_rounded(Decimal(1), Decimal(16)) == Decimal("0.0625")
