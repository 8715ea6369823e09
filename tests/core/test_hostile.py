"""Any bytes, any JSON, on any input topic: applied or dead-lettered, never an exception.

SPEC section 4: bad input never stops a worker. The worker and `marginstream replay` run
the same intake and engine, so these properties cover both.
"""

from __future__ import annotations

import itertools
import math
from datetime import UTC

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marginstream.cli.replay import replay_lines
from marginstream.core import DEAD_LETTERS, EngineConfig, RiskEngine
from marginstream.core.delivery.parts import encode_part, part_key
from marginstream.core.delivery.store import MemoryPartStore
from marginstream.core.delivery.unit import load
from marginstream.core.inputs import intake
from marginstream.core.inputs.deadletters import EXCERPT_BYTES
from tests.core.venue import T0, Venue

OFFSETS = itertools.count(10_000)  # past the venue's own records: never seen before
HOSTILE = settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
TOPICS = st.sampled_from(["orders", "transfers", "prices", "instruments", "nonsense"])

numbers = st.one_of(
    st.sampled_from([
        "1E+999999999", "-1E+999999999", "1E-999999999", "NaN", "-Infinity", "sNaN", "1e15",
        "999999999999999.999999999999", "0.0000000000001", "-0", "1_000", " 1 ", "0x10", "",
    ]),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
)  # fmt: skip
dates = st.one_of(
    st.sampled_from(["1970-01-01T00:00:00Z", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z",
                     "1969-12-31T23:59:59.999Z", "2026-12-25T08:00:00+01:00", 0, -1]),
    st.datetimes(timezones=st.just(UTC)).map(lambda moment: moment.isoformat()),
)  # fmt: skip
json_values = st.recursive(
    st.none() | st.booleans() | numbers | dates | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)

TEMPLATES = {
    "orders": [
        {"type": "order", "order_id": "o", "account": "alice", "symbol": "BTC-PERP",
         "side": "buy", "qty": "1", "price": "60000", "ts": T0 + 10},
        {"type": "fill", "fill_id": "f", "order_id": "o", "account": "alice",
         "symbol": "BTC-C", "side": "sell", "qty": "1", "price": "300", "fee": "1", "ts": T0 + 10},
        {"type": "cancel", "order_id": "o", "account": "alice", "ts": T0 + 10},
    ],
    "transfers": [
        {"type": "withdrawal", "transfer_id": "w", "account": "alice", "amount": "5", "ts": T0},
        {"type": "deposit", "transfer_id": "d", "account": "alice", "amount": "5", "ts": T0},
    ],
    "prices": [
        {"type": "index", "underlying": "BTC", "price": "61000", "ts": T0 + 10},
        {"type": "mark", "symbol": "BTC-C", "price": "300", "iv": "0.6", "ts": T0 + 10},
        {"type": "funding", "symbol": "BTC-PERP", "rate": "0.001", "ts": T0 + 10},
        {"type": "settlement", "symbol": "BTC-FUT", "price": "60500", "ts": T0 + 10},
    ],
    "instruments": [
        {"type": "instrument", "symbol": "BTC-C", "kind": "option", "underlying": "BTC",
         "contract_size": "1", "option_type": "call", "strike": "60000",
         "expiry": "2027-01-01T00:00:00Z", "status": "active",
         "margin": {"tiers": [{"up_to": None, "initial": "0.1", "maintenance": "0.05"}]}},
    ],
}  # fmt: skip


def trading_venue() -> RiskEngine:
    venue = Venue(config=EngineConfig(partitions=None))
    venue.perpetual("BTC-PERP")
    venue.future("BTC-FUT")
    venue.index("60000")
    venue.mark("BTC-PERP", "60000")
    venue.mark("BTC-FUT", "60000")
    venue.deposit("alice", "100000")
    venue.fill("alice", "BTC-PERP", "buy", "1", "60000")
    venue.order("alice", "BTC-PERP", "sell", "1", "61000")
    return venue.engine


def apply_safely(engine: RiskEngine, topic: str, key: bytes | None, raw: bytes | None) -> None:
    outcome = engine.apply(intake.envelope(topic, 0, next(OFFSETS), key, raw))
    for output in outcome.outputs:
        orjson.dumps(output.value)  # every output can be published
        if output.topic == DEAD_LETTERS:
            assert len(output.value["value"].encode()) <= EXCERPT_BYTES
            assert 0 < len(output.value["reason"]) <= 512
    reads_back(engine)


def reads_back(engine: RiskEngine) -> None:
    """Whatever a record brought in, the partition opens again from what it stored (an
    expiry of 1970 once did not: every partition failed to open, on every restart)."""
    store = MemoryPartStore()
    store.write([(part_key(k), encode_part(1, v)) for k, v in engine.parts().items()], 0)
    assert load(store, engine.config).engine.parts() == engine.parts()


@HOSTILE
@given(TOPICS, st.one_of(st.none(), st.binary(max_size=200)), st.binary(max_size=2000))
def test_any_bytes_on_any_topic(topic, key, raw):
    apply_safely(trading_venue(), topic, key, raw)


@HOSTILE
@given(st.data())
def test_any_json_in_any_field_of_a_real_record(data):
    engine = trading_venue()
    for _ in range(3):
        topic = data.draw(st.sampled_from(sorted(TEMPLATES)))
        value = dict(data.draw(st.sampled_from(TEMPLATES[topic])))
        for field in data.draw(st.lists(st.sampled_from(sorted(value)), max_size=3)):
            value[field] = data.draw(json_values)
        if data.draw(st.booleans()):
            value[data.draw(st.text(max_size=5))] = data.draw(json_values)
        raw = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS) if _finite(value) else b"{"
        key = value.get("account") if topic in ("orders", "transfers") else None
        key_bytes = key.encode() if isinstance(key, str) else None
        apply_safely(engine, topic, key_bytes, raw)


EDGES = [
    "1E+999999999", "-1E+999999999", "1E-999999999", "NaN", "-Infinity", "sNaN", "1e15",
    "999999999999999.999999999999", "0.0000000000001", "-0", "0", "-1", "", " ", "x" * 200,
    0, -1, 1.5, 2**63, -(2**63), 1e308, None, True, [], {}, [1], {"a": 1},
    "1970-01-01T00:00:00Z", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z",
    "2026-12-25T08:00:00+01:00", "2026-02-30T00:00:00Z",
]  # fmt: skip


@pytest.mark.parametrize("topic", sorted(TEMPLATES))
def test_every_edge_value_in_every_field_of_every_record(topic):
    """Each field of each kind of record, set to each edge value in turn: applied or
    dead-lettered, and the state reads back from what it stored."""
    for template in TEMPLATES[topic]:
        for field in sorted(template):
            for edge in EDGES:
                value = {**template, field: edge}
                key = value.get("account") if topic in ("orders", "transfers") else None
                key_bytes = key.encode() if isinstance(key, str) else None
                apply_safely(trading_venue(), topic, key_bytes, orjson.dumps(value))


@HOSTILE
@given(st.lists(st.text(max_size=300), max_size=6))
def test_replay_never_raises_on_any_lines(lines):
    engine = RiskEngine()
    for output in replay_lines(engine, [*lines, '{"topic": "orders", "value": 1}']):
        orjson.dumps(output.value)


def _finite(value: object) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True
