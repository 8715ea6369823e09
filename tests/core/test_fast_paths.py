"""The per-record fast paths (bench/core.py) give exactly what the general code gives.

Each test compares a fast path with the computation it stands for, written out here as it
was before the fast path: a different value, exponent, float bit or error message fails.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from hypothesis import example, given
from hypothesis import strategies as st

from marginstream.core.books.ledger import OpenOrder
from marginstream.core.inputs.numbers import (
    RecordError,
    _checked,
    _rounding,
    _show,
    decimal_text,
    exact,
    parse_decimal,
    risk_text,
)
from marginstream.core.risk.figures import _order_totals
from marginstream.core.risk.instruments import Instrument, Kind, ShortOptionMargin, Tier
from marginstream.core.risk.pricing import black76, black76_price

RATE = Decimal("0.1")
PERPETUAL = Instrument("P", Kind.PERPETUAL, "U", Decimal("0.01"), tiers=(Tier(None, RATE, RATE),))
OPTION = Instrument(
    "C", Kind.OPTION, "U", Decimal("0.5"), option_type="call", strike=Decimal(100),
    option_margin=ShortOptionMargin(),
)  # fmt: skip


def _outcome(function, *args):
    try:
        return "value", repr(function(*args))
    except RecordError as error:
        return "error", str(error)


def _general_parse(raw: str, field: str) -> Decimal:
    """parse_decimal of a text as every text was read before the plain-text fast path."""
    try:
        value = Decimal(raw.strip())
    except InvalidOperation:
        raise RecordError(f"{field} is not a decimal number: {_show(raw)}") from None
    return _checked(value, raw, field)


short_texts = st.text(alphabet="0123456789.-+eE _nNaIiSf", max_size=14)
decimal_texts = st.decimals(allow_nan=True, allow_infinity=True, places=None).map(str)


numeric_texts = st.from_regex(r"\s?[-+]?\d{0,14}\.?\d{0,14}([eE][-+]?\d{1,3})?\s?", fullmatch=True)


@given(st.one_of(short_texts, decimal_texts, numeric_texts))
@example(".1234567890123")  # 13 places in 14 characters: just past the fast path's bound
@example("1E+20")  # short, but an exponent: absurdly large
@example("-0.000")
def test_parse_decimal_reads_a_text_as_the_general_path_does(raw):
    assert _outcome(parse_decimal, raw, "qty") == _outcome(_general_parse, raw, "qty")


def _general_risk_text(value: float) -> str:
    if value != value:
        return "nan"
    if value in (float("inf"), float("-inf")):
        return "inf" if value > 0 else "-inf"
    if value == 0:
        return "0"
    return decimal_text(Decimal(f"{value:.15g}"))


@given(st.floats())
def test_risk_text_is_the_decimal_text_of_15_significant_digits(value):
    assert risk_text(value) == _general_risk_text(value)


@exact
def _general_order_totals(orders: list[OpenOrder], instrument: Instrument) -> tuple[float, ...]:
    buy = sell = premium = notional = Decimal(0)
    for order in orders:
        if order.reduce_only:
            continue
        notional += order.qty * order.price
        if order.side == "buy":
            buy += order.qty
            premium += order.qty * order.price * instrument.contract_size
        else:
            sell += order.qty
    average = float(notional) / float(buy + sell) if buy + sell else 0.0
    return float(buy), float(sell), float(premium) if instrument.is_option else 0.0, average


amounts = st.decimals(min_value=Decimal("1e-12"), max_value=Decimal("1e14"), places=12).map(
    lambda d: d.normalize() if d.adjusted() < 14 else d
)
orders = st.lists(
    st.builds(
        OpenOrder,
        st.just("o"),
        st.just("P"),
        st.sampled_from(["buy", "sell"]),
        amounts,
        amounts,
        st.booleans(),
        st.just(0),
    ),
    max_size=6,
)


@given(orders, st.sampled_from([PERPETUAL, OPTION]))
def test_order_totals_are_the_exact_sums_as_floats(open_orders, instrument):
    expected = _general_order_totals(open_orders, instrument)
    assert repr(_order_totals(open_orders, instrument)) == repr(expected)


def _general_decimal_text(value: Decimal) -> str:
    if value == 0:
        return "0"
    text = str(value)
    if "E" in text:
        return format(value.normalize(_rounding()), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


@given(st.decimals(allow_nan=False, allow_infinity=False))
@example(Decimal("-0.000"))
@example(Decimal("100"))
@example(Decimal("1E+2"))
@example(Decimal("2.50"))
def test_decimal_text_is_plain_without_trailing_zeros(value):
    assert decimal_text(value) == _general_decimal_text(value)


@given(
    st.floats(1.0, 1e6),
    st.floats(1.0, 1e6),
    st.one_of(st.floats(-0.1, 0.0), st.floats(1e-11, 3.0)),  # inputs' least: 1 ms, iv 1e-12
    st.one_of(st.just(0.0), st.floats(1e-12, 10.0)),
    st.booleans(),
)
@example(60_000.0, 50_000.0, 0.0, 0.5, True)  # at expiry: the intrinsic value
@example(60_000.0, 50_000.0, 0.25, 0.0, False)  # no volatility
def test_black76_price_is_black76s_price_to_the_bit(
    forward: float, strike: float, years: float, vol: float, is_put: bool
):
    """The liquidation prices' root finding prices options with black76_price."""
    assert black76_price(forward, strike, years, vol, is_put) == (
        black76(forward, strike, years, vol, is_put).price
    )
