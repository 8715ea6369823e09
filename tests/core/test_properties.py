"""Invariants of the core over random histories (hypothesis)."""

from __future__ import annotations

import itertools
from decimal import Decimal as D
from fractions import Fraction

import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from marginstream.core import LIQUIDATIONS
from marginstream.core.books.ledger import Account, OpenOrder
from marginstream.core.inputs.numbers import LEDGER_CONTEXT
from marginstream.core.inputs.records import FillRecord
from marginstream.core.outputs.alerts import RECOVERED
from marginstream.core.risk.figures import assess, figures, risk_rows, total, with_order
from marginstream.core.risk.instruments import Kind, parse_instrument
from marginstream.core.risk.margin import TierTable
from tests.core.operations import ACCOUNTS, envelopes, histories, opened_venue, play
from tests.core.venue import Venue

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def value_at(account: Account, venue: Venue, symbol: str, price: D) -> D:
    """Cash (with funding accrued, not yet settled) plus the position in symbol at price."""
    market = venue.engine.market
    instrument = market.instruments[symbol]
    cash = account.cash
    if instrument.kind is Kind.PERPETUAL:  # a fill settles accrued funding into cash
        cash = LEDGER_CONTEXT.add(cash, account.accrued_funding(instrument, market.funding(symbol)))
    position = account.positions.get(symbol)
    if position is None:
        return cash
    worth = LEDGER_CONTEXT.multiply(position.qty * instrument.contract_size, price)
    if instrument.kind is not Kind.OPTION:
        worth -= position.cost
    return LEDGER_CONTEXT.add(cash, worth)


@PROPERTY
@given(histories)
def test_a_trade_conserves_value_between_its_two_accounts_less_fees(history):
    venue = opened_venue()
    for op in history:
        if op[0] != "trade":
            play(venue, [op])
            continue
        _, buyer, seller, symbol, _, price, buyer_fee, seller_fee = op
        accounts = venue.engine.accounts
        before = [value_at(accounts[a], venue, symbol, price) for a in (buyer, seller)]
        play(venue, [op])
        after = [value_at(accounts[a], venue, symbol, price) for a in (buyer, seller)]
        fees = (buyer_fee or 0) + (seller_fee or 0)
        # Valued at the trade's price, each side only pays its fee: exactly, to the last digit.
        assert after[0] - before[0] == -(buyer_fee or 0)
        assert after[1] - before[1] == -(seller_fee or 0)
        assert sum(after) - sum(before) == -fees
    # Every position has a counterparty: open interest nets to zero, per instrument.
    for symbol in venue.engine.market.instruments:
        held = [
            a.positions[symbol].qty for a in venue.engine.accounts.values() if symbol in a.positions
        ]
        assert sum(held, D(0)) == 0


@PROPERTY
@given(histories)
def test_funding_moves_money_between_accounts_and_creates_none(history):
    venue = opened_venue()
    play(venue, [op for op in history if op[0] in ("trade", "mark", "funding")])
    market = venue.engine.market
    perpetual = market.instruments["BTC-PERP"]
    accrued = sum(
        (
            a.accrued_funding(perpetual, market.funding("BTC-PERP"))
            for a in venue.engine.accounts.values()
        ),
        D(0),
    )
    settled = sum((a.funding for a in venue.engine.accounts.values()), D(0))
    assert accrued + settled == 0


def _is_finite_decimal(value: Fraction) -> bool:
    denominator = value.denominator
    for prime in (2, 5):
        while denominator % prime == 0:
            denominator //= prime
    return denominator == 1


PERP = parse_instrument(
    {
        "symbol": "P",
        "kind": "perpetual",
        "underlying": "BTC",
        "contract_size": "0.5",
        "margin": {"tiers": [{"up_to": None, "initial": "0.1", "maintenance": "0.05"}]},
    }
)


@PROPERTY
@given(
    fills=st.lists(
        st.tuples(
            st.decimals(min_value="0.01", max_value="100", places=2),
            st.decimals(min_value="1", max_value="100000", places=1),
        ),
        min_size=1,
        max_size=6,
    ),
    side=st.sampled_from(["buy", "sell"]),
    part=st.fractions(min_value=Fraction(1, 10), max_value=1),
)
def test_a_position_closed_at_its_entry_price_realises_zero(fills, side, part):
    account = Account("a")
    for n, (qty, price) in enumerate(fills):
        account.apply_fill(
            FillRecord(f"f{n}", None, "a", "P", side, qty, price, D(0), 0), PERP, D(0)
        )
    position = account.positions["P"]
    entry = Fraction(position.cost) / (Fraction(position.qty) * Fraction(PERP.contract_size))
    assume(_is_finite_decimal(entry))  # a price can only be a finite decimal
    closing = (abs(position.qty) * D(part.numerator) / D(part.denominator)).quantize(D("0.01"))
    assume(closing > 0)
    close_side = "sell" if side == "buy" else "buy"
    entry_price = D(entry.numerator) / D(entry.denominator)
    realised = account.apply_fill(
        FillRecord("close", None, "a", "P", close_side, closing, entry_price, D(0), 0), PERP, D(0)
    )
    assert realised == 0
    assert account.cash == 0


@PROPERTY
@given(
    bounds=st.lists(st.integers(1, 10**7), min_size=0, max_size=6, unique=True),
    rates=st.lists(st.integers(0, 1000), min_size=7, max_size=7),
    notionals=st.lists(st.floats(0, 5e7), min_size=2, max_size=2),
)
def test_margin_is_continuous_and_non_decreasing_in_notional(bounds, rates, notionals):
    bounds = sorted(bounds)
    tiers = []
    for n, up_to in enumerate([*bounds, None]):
        initial = D(rates[n]) / 1000
        tiers.append(
            {
                "up_to": None if up_to is None else str(up_to),
                "initial": str(initial),
                "maintenance": str(initial / 2),
            }
        )
    table = TierTable.of(
        parse_instrument(
            {
                "symbol": "T",
                "kind": "perpetual",
                "underlying": "X",
                "contract_size": "1",
                "margin": {"tiers": tiers},
            }
        )
    )
    low, high = sorted(notionals)
    assert table.initial_margin(low) <= table.initial_margin(high)
    assert table.maintenance_margin(low) <= table.maintenance_margin(high)
    for edge in bounds:  # no jump at a tier's edge: at most the top rate x the step
        step = 1e-3
        jump = table.initial_margin(edge + step) - table.initial_margin(edge - step)
        assert 0 <= jump <= 2 * step * 1.0 + 1e-9 * edge


@PROPERTY
@given(histories)
def test_alert_levels_never_repeat_and_every_change_is_alerted(history):
    venue = opened_venue()
    alerts: dict[str, list[dict]] = {a: [] for a in ACCOUNTS}
    thresholds = venue.engine.config.thresholds
    for outcome in play(venue, history):
        for output in outcome.outputs:
            if output.topic == LIQUIDATIONS:
                alerts[output.key].append(output.value)
        # No level change escapes: each account's recorded level is what its figures say.
        for account_id, account in venue.engine.accounts.items():
            ratio = assess(account, venue.engine.market).margin_ratio
            assert thresholds.level(ratio) == account.level, account_id
    for account_alerts in alerts.values():
        types = [a["type"] for a in account_alerts]
        assert all(a != b for a, b in itertools.pairwise(types))
        assert not types or types[0] != RECOVERED
        assert [a["seq"] for a in account_alerts] == list(range(1, len(types) + 1))


@PROPERTY
@given(histories)
def test_replay_is_deterministic_to_the_byte(history):
    def run() -> bytes:
        venue = opened_venue()
        return b"".join(
            orjson.dumps(o._asdict()) for outcome in play(venue, history) for o in outcome.outputs
        )

    assert run() == run()


@PROPERTY
@given(histories)
def test_applying_a_record_twice_changes_nothing_and_publishes_nothing(history):
    venue = opened_venue()
    for envelope in envelopes(history, venue):
        venue.engine.apply(envelope)
        state = venue.snapshot()
        second = venue.engine.apply(envelope)
        assert venue.snapshot() == state
        assert second.replayed and second.outputs == [] and second.changed == set()


@PROPERTY
@given(histories, st.integers(1, 12))
def test_rereading_a_window_applies_nothing(history, window):
    """An at-least-once fan-out, or offsets moved back, re-delivers records: all skipped."""
    venue = opened_venue()
    records = envelopes(history, venue)
    for envelope in records:
        venue.engine.apply(envelope)
    state = venue.snapshot()
    again = [venue.engine.apply(e) for e in records[-window:]]
    assert venue.snapshot() == state
    assert all(o.replayed and o.outputs == [] for o in again)


@PROPERTY
@given(histories)
def test_the_vectorised_view_agrees_with_the_exact_ledger(history):
    venue = opened_venue()
    for outcome in play(venue, history):
        del outcome
        engine = venue.engine
        for account_id, account in engine.accounts.items():
            risk = assess(account, engine.market)
            equity, initial, maintenance = engine.view.figures(account_id)
            scale = 1e-9 * (abs(risk.equity) + risk.initial_margin + 1.0)
            assert equity == pytest.approx(risk.equity, abs=scale)
            assert initial == pytest.approx(risk.initial_margin, abs=scale)
            assert maintenance == pytest.approx(risk.maintenance_margin, abs=scale)


@PROPERTY
@given(histories, st.sampled_from(["buy", "sell"]), st.sampled_from(["1", "0.5", "40"]))
def test_an_order_changes_only_its_own_row_of_the_figures(history, side, qty):
    # Desk.order recomputes only the order's symbol's row; the figures must be those of
    # every row computed afresh with the order open, to the bit.
    venue = opened_venue()
    for outcome in play(venue, history):
        del outcome
    market = venue.engine.market
    for account in venue.engine.accounts.values():
        rows = risk_rows(account, market)
        for symbol in market.instruments:
            order = OpenOrder("probe", symbol, side, D(qty), D("100"), False, 0)
            reused = total(account, with_order(rows, account, market, order), market)
            assert reused == figures(account, market, extra_order=order)
