"""Replay against live with a retention other than the default: workers with
MARGINSTREAM_DUPLICATE_RETENTION_DAYS=1 end equal to a replay built the same way
(settings.engine_config), on records whose repeats that retention decides differently
from the default 7 days."""

from __future__ import annotations

from typing import Any

from marginstream.core import RiskEngine
from marginstream.feeds.demo import TIERS, record
from marginstream.stream.settings import engine_config
from tests.stream.harness import Deployment, Reference, final_checks

T0 = 1_767_225_600_000  # 2026-01-01, ms
DAY = 86_400_000


def prices(ts: int, index: str) -> list[dict[str, Any]]:
    return [
        record("prices", "BTC", {"type": "index", "underlying": "BTC", "price": index, "ts": ts}),
        record("prices", "BTC-PERP",
               {"type": "mark", "symbol": "BTC-PERP", "price": index, "ts": ts}),
    ]  # fmt: skip


def deposit(account: str, transfer_id: str, amount: str, ts: int) -> dict[str, Any]:
    value = {"type": "deposit", "transfer_id": transfer_id, "account": account,
             "amount": amount, "ts": ts}  # fmt: skip
    return record("transfers", account, value)


def fill(account: str, fill_id: str, side: str, ts: int) -> dict[str, Any]:
    return record("orders", account, {
        "type": "fill", "fill_id": fill_id, "order_id": None, "account": account,
        "symbol": "BTC-PERP", "side": side, "qty": "0.1", "price": "60000", "fee": "1.2",
        "ts": ts,
    })  # fmt: skip


def records() -> list[dict[str, Any]]:
    """A fill id and a transfer id each repeated after half a day (a duplicate under any
    retention of a day or more) and after two days (a duplicate under 7 days, applied
    under 1)."""
    instrument = {"type": "instrument", "symbol": "BTC-PERP", "kind": "perpetual",
                  "underlying": "BTC", "contract_size": "1", "status": "active",
                  "margin": {"tiers": TIERS}}  # fmt: skip
    half, two = T0 + DAY // 2, T0 + 2 * DAY
    return [
        record("instruments", "BTC-PERP", instrument),
        *prices(T0, "60000"),
        deposit("mm", "dep-mm", "100000000", T0 + 1),
        deposit("alice", "dep-a", "100000", T0 + 2),
        deposit("bob", "dep-b", "50000", T0 + 3),
        fill("alice", "f-1", "buy", T0 + 10),
        fill("mm", "f-2", "sell", T0 + 11),
        *prices(half, "60100"),
        deposit("alice", "dep-a", "100000", half + 1),  # within a day: a duplicate
        fill("alice", "f-1", "buy", half + 2),
        *prices(two, "60200"),
        deposit("alice", "dep-a", "100000", two + 1),  # after two days
        fill("alice", "f-1", "buy", two + 2),
        deposit("bob", "dep-b", "50000", two + 3),
        fill("mm", "f-2", "sell", two + 4),
        *prices(two + 10, "60300"),
    ]


def test_replay_and_live_agree_with_a_one_day_retention(kafka_bootstrap, tmp_path):
    events = records()
    one_day = {"duplicate_retention_days": 1.0, "partitions": None}
    reference = Reference.of(events, RiskEngine(engine_config(one_day)))
    default = Reference.of(events, RiskEngine(engine_config({"partitions": None})))
    # The retention decides: the repeats after two days are applied under one day only.
    assert reference.states != default.states
    assert reference.states["alice"]["cash"] != default.states["alice"]["cash"]
    assert reference.states["bob"]["cash"] == "100000"
    assert default.states["bob"]["cash"] == "50000"
    deployment = Deployment(
        kafka_bootstrap, tmp_path, extra_env={"MARGINSTREAM_DUPLICATE_RETENTION_DAYS": "1"}
    )
    try:
        deployment.worker("w1").start().wait_ready()
        deployment.produce(events)
        final_checks(deployment, reference)
    finally:
        deployment.stop_all()
