"""Instrument definitions: what is accepted, and the reason for each refusal."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from marginstream.core.inputs.numbers import RecordError
from marginstream.core.risk.instruments import Kind, Status, parse_instrument
from tests.core.venue import SPEC_TIERS

PERP = {
    "type": "instrument",
    "symbol": "BTC-PERP",
    "kind": "perpetual",
    "underlying": "BTC",
    "contract_size": "1",
    "status": "active",
    "margin": {"tiers": SPEC_TIERS},
}
OPTION = {
    "type": "instrument",
    "symbol": "BTC-C",
    "kind": "option",
    "underlying": "BTC",
    "contract_size": "1",
    "expiry": "2026-12-25T08:00:00Z",
    "option_type": "call",
    "strike": "70000",
}


def test_a_perpetual_with_spec_tiers():
    instrument = parse_instrument(PERP)
    assert instrument.kind is Kind.PERPETUAL and instrument.status is Status.ACTIVE
    assert [t.up_to for t in instrument.tiers] == [D(250000), D(1000000), None]
    assert parse_instrument(instrument.to_dict()) == instrument


def test_an_option_takes_the_default_short_option_constants():
    instrument = parse_instrument(OPTION)
    assert instrument.expiry_ms == 1_798_185_600_000  # 2026-12-25T08:00:00Z
    margin = instrument.option_margin
    assert (margin.initial, margin.floor, margin.maintenance) == (D("0.15"), D("0.10"), D("0.075"))
    assert parse_instrument(instrument.to_dict()) == instrument


def _with(base: dict, **changes) -> dict:
    value = {**base, **changes}
    return {k: v for k, v in value.items() if v is not ...}


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (_with(PERP, symbol=""), "symbol must be a non-empty string"),
        (_with(PERP, kind="swap"), "kind must be perpetual, future or option, got 'swap'"),
        (_with(PERP, status="open"), "status must be active, halted or expired"),
        (_with(PERP, contract_size="0"), "contract_size must be positive"),
        (_with(PERP, underlying=...), "underlying must be a non-empty string"),
        (_with(PERP, margin=...), "margin must be an object"),
        (_with(PERP, margin={"tiers": []}), "margin.tiers must be a non-empty list"),
        (
            _with(
                PERP, margin={"tiers": [{"up_to": "5", "initial": "0.1", "maintenance": "0.05"}]}
            ),
            "margin.tiers[1].up_to must be null: the last tier has no bound",
        ),
        (
            _with(
                PERP,
                margin={
                    "tiers": [
                        {"up_to": "5", "initial": "0.1", "maintenance": "0.05"},
                        {"up_to": "5", "initial": "0.1", "maintenance": "0.05"},
                        {"up_to": None, "initial": "0.1", "maintenance": "0.05"},
                    ]
                },
            ),
            "margin.tiers[2].up_to must be above the previous tier's",
        ),
        (
            _with(
                PERP, margin={"tiers": [{"up_to": None, "initial": "0.01", "maintenance": "0.02"}]}
            ),
            "margin.tiers[1]: maintenance rate is above the initial rate",
        ),
        (
            _with(PERP, margin={"tiers": [{"up_to": None, "initial": "2", "maintenance": "0.5"}]}),
            "margin.tiers[1].initial must be at most 1",
        ),
        (_with(OPTION, expiry=...), "expiry must be an ISO-8601 UTC time"),
        (_with(OPTION, expiry="2026-12-25T08:00:00"), "expiry must be in UTC"),
        (_with(OPTION, expiry="Christmas"), "expiry is not an ISO-8601 time"),
        (_with(OPTION, expiry="1969-12-31T23:59:59Z"), "expiry is out of range"),
        (_with(OPTION, expiry=-1), "expiry is out of range"),
        (_with(OPTION, expiry="9999-12-31T00:00:00Z"), "expiry is out of range"),
        (_with(OPTION, option_type="straddle"), "option_type must be call or put"),
        (_with(OPTION, strike="-5"), "strike must be positive"),
        (
            _with(OPTION, margin={"short_initial": "0.05", "short_initial_floor": "0.1"}),
            "margin.short_initial_floor is above margin.short_initial",
        ),
    ],
)
def test_refusals_name_the_fault(value, reason):
    with pytest.raises(RecordError) as caught:
        parse_instrument(value)
    assert str(caught.value).startswith(reason)


@pytest.mark.parametrize("expiry", ["1970-01-01T00:00:00Z", 0, "5000-01-01T00:00:00Z"])
def test_every_expiry_accepted_reads_back_from_its_stored_form(expiry):
    """1970-01-01 was accepted as text, stored as 0, and refused when read back: every
    partition failed to open, on every restart."""
    instrument = parse_instrument(_with(OPTION, expiry=expiry))
    assert parse_instrument(instrument.to_dict()) == instrument


def test_a_new_definition_may_change_tiers_status_and_strike_but_not_the_contract():
    old = parse_instrument(OPTION)
    new = parse_instrument(_with(OPTION, strike="71000", status="halted"))
    assert old.replaced_by(new) == new
    with pytest.raises(RecordError, match=r"contract_size cannot change \(1 -> 2\)"):
        old.replaced_by(parse_instrument(_with(OPTION, contract_size="2")))
    with pytest.raises(RecordError, match="option_type cannot change"):
        old.replaced_by(parse_instrument(_with(OPTION, option_type="put")))
