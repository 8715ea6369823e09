"""Bad input becomes a dead letter with its reason, and changes nothing."""

from __future__ import annotations

import hashlib
from hashlib import sha256

import orjson
import pytest
from aiokafka.partitioner import murmur2 as kafka_murmur2

from marginstream.core import DEAD_LETTERS, EngineConfig, Envelope
from marginstream.core.delivery.guard import GUARD_KEY
from marginstream.core.inputs import intake
from marginstream.core.inputs.deadletters import EXCERPT_BYTES, MAX_KEY_CHARS
from marginstream.core.inputs.keys import account_partition, murmur2
from tests.core.venue import T0, Venue, only

FILL = {
    "type": "fill",
    "fill_id": "f-new",
    "account": "alice",
    "symbol": "BTC-PERP",
    "side": "buy",
    "qty": "1",
    "price": "60000",
    "ts": T0,
}


def _fill(**changes) -> dict:
    value = {**FILL, **changes}
    return {k: v for k, v in value.items() if v is not ...}


@pytest.fixture
def venue() -> Venue:
    venue = Venue()
    venue.perpetual("BTC-PERP")
    venue.mark("BTC-PERP", "60000")
    venue.deposit("alice", "10000", transfer_id="dep-1")
    venue.fill("alice", "BTC-PERP", "buy", "1", "60000", fill_id="f-1")
    return venue


CASES = [
    ("orders", "alice", [1, 2], "a record must be a JSON object, got list"),
    ("orders", "alice", "text", "a record must be a JSON object, got str"),
    ("orders", "alice", {"type": "teleport"}, "type 'teleport' does not belong on topic orders"),
    ("transfers", "alice", _fill(), "type 'fill' does not belong on topic transfers"),
    ("orders", "alice", _fill(qty=...), "qty is missing"),
    ("orders", "alice", _fill(qty="-1"), "qty must be positive, got -1"),
    ("orders", "alice", _fill(qty="0"), "qty must be positive, got 0"),
    ("orders", "alice", _fill(qty="NaN"), "qty must be finite"),
    ("orders", "alice", _fill(qty="Infinity"), "qty must be finite"),
    ("orders", "alice", _fill(price="1e40"), "price is absurdly large"),
    ("orders", "alice", _fill(price=True), "price must be a decimal string, got True"),
    ("orders", "alice", _fill(side="long"), "side must be buy or sell, got 'long'"),
    ("orders", "alice", _fill(ts="yesterday"), "ts must be an integer of milliseconds"),
    ("orders", "alice", _fill(ts=-5), "ts is out of range: -5"),
    ("orders", "alice", _fill(fill_id=""), "fill_id must be a non-empty string"),
    ("orders", "alice", _fill(account=7.5), "account must be a non-empty string"),
    ("orders", "alice", _fill(symbol="DOGE-PERP"), "unknown instrument DOGE-PERP"),
    ("orders", "alice", _fill(fill_id="f-1"), "duplicate fill_id f-1"),
    ("orders", "bob", _fill(account="bob"), "unknown account bob: it has made no deposit"),
    ("orders", "mallory", _fill(), "misrouted: expected key 'alice', got key 'mallory'"),
    (
        "transfers",
        "alice",
        {"type": "deposit", "transfer_id": "dep-1", "account": "alice", "amount": "5", "ts": T0},
        "duplicate transfer_id dep-1",
    ),
    (
        "transfers",
        "alice",
        {"type": "withdrawal", "transfer_id": "dep-1", "account": "alice", "amount": "5", "ts": T0},
        "duplicate transfer_id dep-1",
    ),
    (
        "prices",
        "BTC",
        {"type": "index", "underlying": "BTC", "price": "-3", "ts": T0},
        "price must be positive",
    ),
    (
        "prices",
        "X",
        {"type": "mark", "symbol": "X", "price": "1", "ts": T0},
        "unknown instrument X",
    ),
    (
        "prices",
        "BTC-PERP",
        {"type": "mark", "symbol": "BTC-PERP", "ts": T0},
        "a mark for perpetual BTC-PERP needs a price",
    ),
    (
        "prices",
        "BTC-PERP",
        {"type": "funding", "symbol": "BTC-PERP", "rate": "5", "ts": T0},
        "rate is absurd",
    ),
    (
        "prices",
        "BTC-PERP",
        {"type": "settlement", "symbol": "BTC-PERP", "price": "1", "ts": T0},
        "perpetual BTC-PERP never settles",
    ),
    (
        "instruments",
        "BTC-PERP",
        {
            "type": "instrument",
            "symbol": "BTC-PERP",
            "kind": "future",
            "underlying": "BTC",
            "contract_size": "1",
            "expiry": "2027-01-01T00:00:00Z",
            "margin": {"tiers": [{"up_to": None, "initial": "0.1", "maintenance": "0.05"}]},
        },
        "instrument BTC-PERP: kind cannot change (perpetual -> future)",
    ),
    ("settlements", "X", {"type": "settlement"}, "unknown topic 'settlements'"),
]


@pytest.mark.parametrize(("topic", "key", "value", "reason"), CASES)
def test_bad_input_is_dead_lettered_with_its_reason_and_changes_nothing(
    venue, topic, key, value, reason
):
    before = ledger_and_market(venue)
    outcome = venue.send(topic, value, key=key)
    assert [o.topic for o in outcome.outputs] == [DEAD_LETTERS]
    letter = only(outcome)
    assert letter["reason"].startswith(reason), letter["reason"]
    assert (letter["topic"], letter["key"], letter["partition"]) == (topic, key, 0)
    assert letter["offset"] == venue.offsets[topic] - 1
    assert isinstance(letter["value"], str)  # the original, as text
    # The only part written is the replay guard, which now counts the record as seen.
    assert outcome.changed == {GUARD_KEY}
    assert ledger_and_market(venue) == before


def test_the_original_text_is_kept_when_the_reader_has_it(venue: Venue):
    raw = b'{"type": "fill", "qty": "-1"}'
    outcome = venue.engine.apply(Envelope("orders", 3, 17, "alice", {"type": "fill"}, raw))
    letter = only(outcome)
    assert (letter["value"], letter["partition"], letter["offset"]) == (raw.decode(), 3, 17)
    assert (letter["value_bytes"], letter["value_sha256"]) == (len(raw), sha256(raw).hexdigest())
    assert letter["ts"] is None


@pytest.mark.parametrize(
    "raw",
    [
        b'"' * 900_000,  # once a 1.8 MB dead letter and state record
        b"\xff" * 900_000,  # once 2.7 MB
        b'{"type": "deposit", "account": "alice", "x": "' + "\u00e9".encode() * 40_000 + b'"}',
        b"[" * 40_000 + b"]" * 40_000,
    ],
)
def test_a_record_over_the_size_limit_is_a_bounded_dead_letter(venue: Venue, raw: bytes):
    before = ledger_and_market(venue)
    outcome = venue.engine.apply(intake.envelope("transfers", 0, 900, b"alice", raw))
    letter = only(outcome)
    assert letter["reason"] == f"record of {len(raw) + 5} bytes is over the 65536-byte limit"
    assert len(letter["value"].encode()) <= EXCERPT_BYTES
    assert letter["value"] and raw.decode(errors="replace").startswith(letter["value"])
    assert (letter["value_bytes"], letter["value_sha256"]) == (len(raw), sha256(raw).hexdigest())
    assert len(orjson.dumps(letter)) < 8 * EXCERPT_BYTES
    assert ledger_and_market(venue) == before


def test_the_size_limit_counts_the_key_and_is_configurable(venue: Venue):
    value = orjson.dumps({**DEPOSIT, "amount": "5"})
    assert not only_dead(venue.engine.apply(intake.envelope("transfers", 0, 901, b"alice", value)))
    key = b"k" * 2000
    outcome = venue.engine.apply(intake.envelope("transfers", 0, 902, key, value, limit=2048))
    letter = only(outcome)
    assert letter["reason"].endswith("over the 2048-byte limit")
    assert letter["key"] == "k" * MAX_KEY_CHARS  # the key is cut too


def test_a_reason_quoting_the_record_is_bounded_too(venue: Venue):
    for topic in ("orders", "transfers", "prices", "instruments"):
        letter = only(venue.send(topic, {"type": "Z" * 60_000}, key="alice"))
        assert letter["reason"].startswith("type 'ZZZ") and len(letter["reason"]) <= 512
        assert len(orjson.dumps(letter)) < 4096


def test_a_record_keyed_by_another_account_or_by_none_is_misrouted(venue: Venue):
    before = ledger_and_market(venue)
    raw = orjson.dumps({**DEPOSIT, "amount": "5000"})
    for offset, key in enumerate((None, b"bob", b"alice ", b"\xff"), start=1000):
        letter = only(venue.engine.apply(intake.envelope("transfers", 0, offset, key, raw)))
        assert letter["reason"].startswith("misrouted: expected key 'alice', got key ")
    assert ledger_and_market(venue) == before


def test_a_record_on_another_partition_than_its_keys_is_misrouted_naming_the_right_one():
    venue = Venue(config=EngineConfig(partitions=8))
    home = account_partition("alice", 8)
    deposit = {**DEPOSIT, "amount": "5000"}
    raw = orjson.dumps(deposit)
    elsewhere = (home + 3) % 8
    outcome = venue.engine.apply(intake.envelope("transfers", elsewhere, 0, b"alice", raw))
    assert only(outcome)["reason"] == (
        f"misrouted: expected key 'alice' on partition {home}, "
        f"got key 'alice' on partition {elsewhere}"
    )
    assert venue.engine.accounts == {}
    outcome = venue.engine.apply(intake.envelope("transfers", home, 0, b"alice", raw))
    assert not only_dead(outcome) and venue.engine.accounts["alice"].cash == 5000


def test_keys_follow_kafkas_default_partitioner():
    for n in range(3000):
        data = hashlib.sha256(str(n).encode()).digest()[: n % 40]
        assert murmur2(data) == kafka_murmur2(data)
    assert account_partition("acct-00001", 8) == (kafka_murmur2(b"acct-00001") & 0x7FFFFFFF) % 8


def test_a_rejected_record_read_again_after_the_state_moved_on_changes_nothing():
    """Read again (an operator moved offsets back), a rejected record stays unapplied, even
    though the state now has what it lacked, and publishes nothing: its dead letter was
    committed with the state that counts it as seen."""
    venue = Venue()
    venue.perpetual("BTC-PERP")
    venue.mark("BTC-PERP", "60000")
    early_fill = Envelope("orders", 0, 0, "bob", {**FILL, "account": "bob", "symbol": "ETH-PERP"})
    first = venue.engine.apply(early_fill)
    assert only(first)["reason"] == "unknown account bob: it has made no deposit"
    # Later records make the same fill applicable: bob deposits, ETH-PERP is listed.
    venue.deposit("bob", "100000")
    venue.perpetual("ETH-PERP")
    state = venue.snapshot()
    again = venue.engine.apply(early_fill)
    assert again.replayed and again.outputs == [] and again.changed == set()
    assert venue.snapshot() == state  # still not applied: the reference never applied it


DEPOSIT = {"type": "deposit", "transfer_id": "t-x", "account": "alice", "ts": T0}


def only_dead(outcome) -> list:
    return [o for o in outcome.outputs if o.topic == DEAD_LETTERS]


def ledger_and_market(venue: Venue) -> dict:
    return {k: v for k, v in venue.snapshot().items() if k != GUARD_KEY}
