"""A market record's closing work, left owed (RiskEngine.steps with owe=True) and done
later (settle, or at the start of the next record), publishes exactly what doing it at
once publishes, in the same order, and survives a reload of the state in between."""

from __future__ import annotations

import random
from typing import Any

from marginstream.core import EngineConfig, Envelope, RiskEngine
from marginstream.core.engine import OWED_KEY, drive
from tests.core.venue import T0, Venue

TIERS = [{"up_to": None, "initial": "0.02", "maintenance": "0.01"}]


def book(seed: int) -> tuple[Venue, list[tuple[str, dict[str, Any]]]]:
    """A perpetual and a put, 60 accounts at random leverage; then the market records of
    a crash, a partial recovery, a time past the sets' deadline, and a deposit."""
    rng = random.Random(seed)
    venue = Venue(config=EngineConfig())
    venue.perpetual(tiers=TIERS)
    venue.option("BTC-50000-P", "50000", "put")
    venue.index("60000")
    venue.mark("BTC-PERP", "60000")
    venue.mark("BTC-50000-P", iv="0.6")
    venue.deposit("mm", "100000000")
    for n in range(60):
        account = f"a{n}"
        venue.deposit(account, str(rng.randrange(2_000, 20_000)))
        venue.trade(account, "mm", "BTC-PERP", str(rng.choice(["0.5", "1", "2"])), "60000")
        if n % 3 == 0:
            venue.trade("mm", account, "BTC-50000-P", "1", "1500")
    later = [
        ("prices", {"type": "index", "underlying": "BTC", "price": "52000", "ts": T0 + 10**6}),
        ("prices", {"type": "mark", "symbol": "BTC-PERP", "price": "52000", "ts": T0 + 10**6}),
        ("prices", {"type": "mark", "symbol": "BTC-PERP", "price": "56000", "ts": T0 + 2 * 10**6}),
        ("prices", {"type": "index", "underlying": "BTC", "price": "51000", "ts": T0 + 3 * 10**6}),
        (
            "transfers",
            {
                "type": "deposit",
                "transfer_id": "late",
                "account": "a3",
                "amount": "5000",
                "ts": T0 + 3 * 10**6 + 1,
            },
        ),
    ]
    return venue, later


def key_of(topic: str, value: dict[str, Any]) -> str:
    return value.get("account") or value.get("symbol") or value["underlying"]


def test_owed_work_publishes_what_doing_it_at_once_publishes() -> None:
    venue, later = book(3)
    parts = venue.engine.parts()
    at_once = RiskEngine.from_parts(parts)
    owing = RiskEngine.from_parts(parts)
    expected, found = [], []
    owed_seen = 0
    for offset, (topic, value) in enumerate(later, start=1000):
        envelope = Envelope(topic, 0, offset, key_of(topic, value), value)
        expected += [(o.topic, o.value) for o in at_once.apply(envelope).outputs]
        outcome = drive(owing.steps(envelope, owe=True))
        found += [(o.topic, o.value) for o in outcome.outputs]
        if owing.owed is not None:
            owed_seen += 1
            assert OWED_KEY in outcome.changed
            assert owing.part(OWED_KEY) == owing.owed
            if offset % 2:  # reloaded from its parts in between: the work is in them
                owing = RiskEngine.from_parts(owing.parts())
                assert owing.owed is not None
            settled = drive(owing.settle())
            assert OWED_KEY in settled.changed and owing.part(OWED_KEY) == {}
            found += [(o.topic, o.value) for o in settled.outputs]
    assert owed_seen >= 2
    kinds = [value["type"] for _, value in expected]
    assert "liquidation_order" in kinds and "liquidation_cancel" in kinds
    assert found == expected
    assert owing.parts() == at_once.parts()


def test_the_next_record_does_the_owed_work_first() -> None:
    venue, later = book(4)
    parts = venue.engine.parts()
    at_once, owing = RiskEngine.from_parts(parts), RiskEngine.from_parts(parts)
    expected, found = [], []
    for offset, (topic, value) in enumerate(later, start=1000):
        envelope = Envelope(topic, 0, offset, key_of(topic, value), value)
        expected += [(o.topic, o.value) for o in at_once.apply(envelope).outputs]
        found += [(o.topic, o.value) for o in drive(owing.steps(envelope, owe=True)).outputs]
    found += [(o.topic, o.value) for o in drive(owing.settle()).outputs]
    assert found == expected
    assert owing.owed is None and owing.parts() == at_once.parts()
