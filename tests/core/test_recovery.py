"""A model of the stream shell's failure modes, checked against the core.

The shell writes each record's changed parts, in write order, to one changelog
partition, flushes, then commits the input offset. A crash leaves a prefix of
those writes and a committed offset at or before the first record whose writes
are incomplete. Recovery rebuilds the engine from the prefix and re-reads input
from the committed offset. Whatever the crash point, the final state must equal
the reference (a replay without crash) and every reference output must have been
published, with the same id and content, and nothing else.
"""

from __future__ import annotations

import copy

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marginstream.core import RiskEngine
from tests.core.operations import envelopes, histories, opened_venue
from tests.core.venue import Venue

RECOVERY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _identity(output) -> bytes:
    value = output.value
    ident = value.get("decision_id") or value.get("alert_id")
    if ident is None:  # a dead letter: identified by its source position
        ident = f"{value['topic']}:{value['partition']}/{value['offset']}"
    return orjson.dumps([output.topic, ident])


def _run(history, cut: float, commit_back: float, notify_commits: bool = False):
    setup = opened_venue()
    base_parts = copy.deepcopy(setup.engine.parts())
    records = envelopes(history, setup)

    reference = RiskEngine.from_parts(copy.deepcopy(base_parts))
    expected = {}
    for envelope in records:
        for output in reference.apply(envelope).outputs:
            expected[_identity(output)] = output

    live = RiskEngine.from_parts(copy.deepcopy(base_parts))
    log: list[tuple[int, tuple, object]] = []
    outputs_by_record = []
    for index, envelope in enumerate(records):
        outcome = live.apply(envelope)
        outputs_by_record.append(outcome.outputs)
        for key in outcome.parts_in_write_order():
            log.append((index, key, copy.deepcopy(live.part(key))))

    kept = int(cut * (len(log) + 1))
    prefix = log[:kept]
    first_incomplete = len(records)
    for index, _, _ in log[kept:]:
        first_incomplete = min(first_incomplete, index)
    committed = int(commit_back * first_incomplete)  # anywhere at or before it

    if notify_commits:  # the shell told the engine of each commit up to that point
        live = RiskEngine.from_parts(copy.deepcopy(base_parts))
        log = []
        for index, envelope in enumerate(records):
            for source, offset in _next_offsets(records[: min(index, committed)]).items():
                live.forget_committed(source, offset)
            for key in live.apply(envelope).parts_in_write_order():
                log.append((index, key, copy.deepcopy(live.part(key))))
        prefix = log[:kept]

    state = copy.deepcopy(base_parts)
    for _, key, value in prefix:
        state[key] = copy.deepcopy(value)
    recovered = RiskEngine.from_parts(state)
    published = {}
    for outputs in outputs_by_record[:committed]:  # flushed before the commit
        for output in outputs:
            published[_identity(output)] = output
    for envelope in records[committed:]:
        for output in recovered.apply(envelope).outputs:
            published.setdefault(_identity(output), output)
    return reference, recovered, expected, published


def _next_offsets(records) -> dict[str, int]:
    """Per source, the first offset after these records (what a commit of them records)."""
    return {f"{e.topic}:{e.partition}": e.offset + 1 for e in records}


def _without_memory(parts: dict) -> dict:
    return {k: {**v, "recent": None} if k[0] == "account" else v for k, v in parts.items()}


@RECOVERY
@given(histories, st.floats(0, 1), st.floats(0, 1))
def test_forgetting_committed_outputs_loses_nothing_needed(history, cut, commit_back):
    """The same, with the engine told of commits and forgetting outputs below them."""
    reference, recovered, expected, published = _run(history, cut, commit_back, True)
    assert _without_memory(recovered.parts()) == _without_memory(reference.parts())
    assert published.keys() == expected.keys()
    for ident, output in expected.items():
        assert published[ident] == output, ident


@RECOVERY
@given(histories, st.floats(0, 1), st.floats(0, 1))
def test_any_crash_point_recovers_the_reference_state_and_outputs(history, cut, commit_back):
    reference, recovered, expected, published = _run(history, cut, commit_back)
    assert recovered.parts() == reference.parts()
    assert published.keys() == expected.keys()
    for ident, output in expected.items():
        assert published[ident] == output, ident


def test_a_crash_between_the_market_part_and_the_accounts_it_alerted():
    """The shape the model must handle: market saved, the account it alerted not."""
    venue = Venue()
    venue.perpetual("BTC-PERP")
    venue.mark("BTC-PERP", "60000")
    venue.deposit("alice", "10000")
    venue.fill("alice", "BTC-PERP", "buy", "5", "60000")
    before = copy.deepcopy(venue.engine.parts())
    outcome = venue.mark("BTC-PERP", "58600")  # liquidation alert for alice
    alert = outcome.outputs[0]
    order = outcome.parts_in_write_order()
    assert order == [("instrument", "BTC-PERP"), ("account", "alice")]
    crashed = {**before, order[0]: copy.deepcopy(venue.engine.part(order[0]))}
    recovered = RiskEngine.from_parts(crashed)
    from marginstream.core import Envelope

    again = recovered.apply(
        Envelope("prices", 0, venue.offsets["prices"] - 1, "BTC-PERP",
                 {"type": "mark", "symbol": "BTC-PERP", "price": "58600", "ts": venue.ts})
    )  # fmt: skip
    assert again.replayed
    assert again.outputs == [alert]
    assert recovered.parts() == venue.engine.parts()


def test_an_account_forgets_the_outputs_of_committed_records_when_next_written():
    venue = Venue()
    for n in range(10):
        venue.deposit("alice", "1", transfer_id=f"t{n}")
    recent = venue.engine.accounts["alice"].recent
    assert [offset for _, offset, _ in recent] == list(range(10))
    venue.engine.forget_committed("transfers:0", 8)  # offsets 0..7 will not be read again
    assert len(venue.engine.accounts["alice"].recent) == 10  # nothing written yet
    venue.deposit("alice", "1", transfer_id="t10")
    assert [offset for _, offset, _ in venue.engine.accounts["alice"].recent] == [8, 9, 10]
