"""Moving state to more partitions (core/delivery/repartition.py): which records the old
layout applies, and where each part goes."""

from __future__ import annotations

import orjson
import pytest

from marginstream.core import EngineConfig, RiskEngine
from marginstream.core.delivery.guard import GUARD_KEY, ReplayGuard
from marginstream.core.delivery.repartition import (
    MoveRefused,
    Spread,
    market_positions,
    old_layout_records,
    placed,
    start_offsets,
)
from marginstream.core.delivery.sources import Source
from marginstream.core.inputs import intake
from marginstream.core.inputs.keys import account_partition
from marginstream.core.liquidation.fund import FUND_KEY
from marginstream.core.shards import Shards

T0 = 1_790_000_000_000


def accounts_where(old: int, new: int, moving: bool, partition: int, n: int = 3) -> list[str]:
    """n account ids on old partition `partition` that do (or do not) move among new."""
    found = []
    for i in range(10_000):
        name = f"a{i}"
        if account_partition(name, old) != partition:
            continue
        if (account_partition(name, new) != partition) == moving:
            found.append(name)
        if len(found) == n:
            return found
    raise AssertionError("not enough accounts")


def test_placed_follows_the_partitioner_and_lets_the_fund_go_anywhere():
    name = "a1"
    home = account_partition(name, 8)
    assert placed(name.encode(), home, 8)
    assert not placed(name.encode(), (home + 1) % 8, 8)
    assert placed(b"insurance-fund", 5, 8) and placed(b"insurance-fund", 0, 4)
    assert not placed(None, 0, 8)


def test_the_old_layout_applies_up_to_the_first_record_only_the_new_one_explains():
    # 4 -> 8 keeps an account of partition 1 there or sends it to 5: nothing arrives on 1,
    # so everything on it past the offsets is the old layout's.
    staying = accounts_where(4, 8, moving=False, partition=1)
    moving = accounts_where(4, 8, moving=True, partition=1)
    keys = [k.encode() for k in [staying[0], moving[0], staying[1], moving[1]]]
    assert old_layout_records(keys, 1, 4, 8) == 4
    # 4 -> 6: partition 1 among 6 gets accounts that were elsewhere among 4.
    newcomer = next(
        a for a in (f"c{i}" for i in range(10_000))
        if account_partition(a, 6) == 1 and account_partition(a, 4) != 1
    )  # fmt: skip
    old_only = next(
        a for a in (f"d{i}" for i in range(10_000))
        if account_partition(a, 4) == 1 and account_partition(a, 6) != 1
    )  # fmt: skip
    keys = [old_only.encode(), b"garbage-key", newcomer.encode(), old_only.encode()]
    # garbage is placed under neither (a dead letter either way): the old layout takes it
    assert old_layout_records(keys, 1, 4, 6) == 2


def test_market_positions_are_the_furthest_any_partition_applied():
    guards = [
        ReplayGuard({Source("prices", 0): 10, Source("orders", 0): 99}),
        ReplayGuard({Source("prices", 0): 12, Source("instruments", 0): 3}),
        ReplayGuard(),
    ]
    assert market_positions(guards) == {Source("prices", 0): 12, Source("instruments", 0): 3}


def _engines(old: int) -> Shards:
    """An old deployment's partitions, as replay runs them: an instrument, a mark, and
    deposits for accounts on every partition; capital for the fund on partition 1."""
    shards = Shards(EngineConfig(partitions=old), old)
    records = [
        ("instruments", 0, "BTC-PERP", {"type": "instrument", "symbol": "BTC-PERP",
         "kind": "perpetual", "underlying": "BTC", "contract_size": "1", "status": "active",
         "margin": {"tiers": [{"up_to": None, "initial": "0.02", "maintenance": "0.01"}]}}),
        ("prices", 0, "BTC-PERP", {"type": "mark", "symbol": "BTC-PERP", "price": "100",
                                   "ts": T0}),
        ("transfers", 1, "insurance-fund", {"type": "deposit", "transfer_id": "cap",
         "account": "insurance-fund", "amount": "500", "ts": T0}),
    ]  # fmt: skip
    for i in range(40):
        account = f"a{i}"
        records.append(("transfers", account_partition(account, old), account,
                        {"type": "deposit", "transfer_id": f"t{i}", "account": account,
                         "amount": str(100 + i), "ts": T0 + i}))  # fmt: skip
    offsets: dict[tuple[str, int], int] = {}
    for topic, partition, key, value in records:
        offset = offsets[topic, partition] = offsets.get((topic, partition), -1) + 1
        shards.apply(intake.envelope(topic, partition, offset, key.encode(), orjson.dumps(value)))
    return shards


def test_spread_puts_each_account_on_its_new_partition_and_keeps_fund_slices():
    old, new = 4, 8
    shards = _engines(old)
    spread = Spread(old, new)
    placed_parts: dict[int, dict] = {q: {} for q in range(new)}
    for number, engine in enumerate(shards.engines):
        for q, key, part in spread.take(number, engine.parts()):
            placed_parts[q][key] = part
    for q, key, part in spread.shared():
        placed_parts[q][key] = part
    for q in range(new):
        moved = RiskEngine.from_parts(placed_parts[q], EngineConfig(partitions=new))
        for account in moved.accounts:
            assert account_partition(account, new) == q
        assert moved.market.parts() == shards.engines[0].market.parts()
        guard = moved.guard.seen
        assert guard[Source("prices", 0)] == 0 and guard[Source("instruments", 0)] == 0
        own = {s for s in guard if s.topic == "transfers"}
        assert own == ({Source("transfers", q)} if q < old and Source("transfers", q) in
                       shards.engines[q].guard.seen else set())  # fmt: skip
        assert (FUND_KEY in placed_parts[q]) == (q == 1)
    every = {a for q in range(new) for (kind, a) in placed_parts[q] if kind == "account"}
    assert every == {f"a{i}" for i in range(40)}
    assert sum(1 for q in range(new) if GUARD_KEY in placed_parts[q]) == new


def test_partitions_with_different_markets_are_refused():
    shards = _engines(2)
    spread = Spread(2, 4)
    list(spread.take(0, shards.engines[0].parts()))
    parts = shards.engines[1].parts()
    parts[("index", "ETH")] = {"price": "1"}
    with pytest.raises(MoveRefused, match="different market state"):
        list(spread.take(1, parts))
    with pytest.raises(MoveRefused, match="must be above 4"):
        Spread(4, 4)


def test_start_offsets_follow_what_the_old_layout_applied():
    assert start_offsets([10, 0, 7], [2, 0, 0], 6) == [12, 0, 7, 0, 0, 0]
