"""A lazily loaded partition (core/delivery/unit.py load) against the eager one.

Accounts decoded on first touch, the risk view built from raw parts (or its snapshot):
the outputs, the parts written and the view must be those of the state that decodes
every part, and a restart must decode no account that nothing touches.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marginstream.core import EngineConfig, Envelope, RiskEngine
from marginstream.core.books import accounts
from marginstream.core.delivery import viewsnapshot
from marginstream.core.delivery.parts import encode_part, part_key
from marginstream.core.delivery.store import MemoryPartStore
from marginstream.core.delivery.unit import PartitionState, load, load_eager, save_view
from tests.core.operations import envelopes, histories, opened_venue

LAZY = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _store_of(engine: RiskEngine) -> MemoryPartStore:
    store = MemoryPartStore()
    store.write([(part_key(k), encode_part(1, v)) for k, v in engine.parts().items()], 1)
    return store


def _run(work: PartitionState, records: list[Envelope]) -> list:
    return [o for e in records for o in work.apply(e, e.source, e.offset).outputs]


EVICTING = EngineConfig(resident_accounts=0)  # every clean account evicted at every seal


def _commit(work: PartitionState, store: MemoryPartStore) -> list[tuple[bytes, bytes | None]]:
    sealed = work.seal()
    store.write(sealed.parts, store.changelog_offset() + max(1, len(sealed.parts)))
    return sealed.parts


def _same_view(a: RiskEngine, b: RiskEngine) -> None:
    left, right = a.view.exported(), b.view.exported()
    assert a.view.account_ids() == b.view.account_ids()
    for name in left:
        assert np.array_equal(left[name], right[name]), name


@LAZY
@given(histories, st.data())
def test_a_lazy_partition_writes_and_publishes_what_the_eager_one_does(history, data):
    venue = opened_venue()
    records = envelopes(history, venue)
    split = data.draw(st.integers(0, len(records)))
    lazy_store, eager_store = _store_of(venue.engine), _store_of(venue.engine)
    reference = copy.deepcopy(venue.engine)
    expected = [o for e in records for o in reference.apply(e).outputs]
    lazy, eager = load(lazy_store), load_eager(eager_store)
    assert lazy.loaded_from == "parts" and eager.loaded_from == "eager"
    _same_view(lazy.engine, eager.engine)
    outputs = _run(lazy, records[:split])
    assert outputs == _run(eager, records[:split])
    assert _commit(lazy, lazy_store) == _commit(eager, eager_store)
    lazy, eager = load(lazy_store), load_eager(eager_store)  # the restart in the middle
    _same_view(lazy.engine, eager.engine)
    rest = _run(lazy, records[split:])
    assert rest == _run(eager, records[split:])
    assert outputs + rest == expected
    assert _commit(lazy, lazy_store) == _commit(eager, eager_store)
    assert lazy.engine.parts() == eager.engine.parts() == reference.parts()


@LAZY
@given(histories, st.integers(1, 6))
def test_evicting_clean_accounts_at_each_commit_changes_nothing(history, every):
    venue = opened_venue()
    records = envelopes(history, venue)
    lazy_store, eager_store = _store_of(venue.engine), _store_of(venue.engine)
    lazy, eager = load(lazy_store, EVICTING), load_eager(eager_store)
    for start in range(0, len(records), every):
        batch = records[start : start + every]
        assert _run(lazy, batch) == _run(eager, batch)
        written = _commit(lazy, lazy_store)
        assert written == _commit(eager, eager_store)
        changed = {key[len(b"account/") :].decode() for key, _ in written}
        assert set(lazy.engine.accounts.loaded) <= changed  # only what this commit wrote
    assert lazy.engine.parts() == eager.engine.parts()


@LAZY
@given(histories)
def test_the_view_built_from_raw_parts_is_the_view_built_from_accounts(history):
    venue = opened_venue()
    for envelope in envelopes(history, venue):
        venue.engine.apply(envelope)
    store = _store_of(venue.engine)
    _same_view(load(store).engine, load_eager(store).engine)


def _many(accounts: int) -> tuple[MemoryPartStore, list[Envelope]]:
    """A store of accounts, half long and half short a little BTC-PERP, one (x0003) long
    a lot; and two records: a deposit to x0007 and a mark fall that hurts x0003."""
    venue = opened_venue()
    venue.mark("BTC-PERP", "60000")
    for number in range(accounts):
        venue.deposit(f"x{number:04d}", "1000")
    for number in range(0, accounts - 1, 2):
        venue.trade(f"x{number:04d}", f"x{number + 1:04d}", "BTC-PERP", "0.001", "60000")
    venue.fill("x0003", "BTC-PERP", "buy", "0.3", "60000")
    venue.order("x0005", "BTC-FUT", "buy", "0.01", "59000")
    records = [
        Envelope("transfers", 0, 10_000, "x0007", {
            "type": "deposit", "transfer_id": "t-late", "account": "x0007",
            "amount": "5", "ts": venue.next_ts(),
        }),
        Envelope("prices", 0, 10_000, "BTC-PERP", {
            "type": "mark", "symbol": "BTC-PERP", "price": "57000", "ts": venue.next_ts(),
        }),
    ]  # fmt: skip
    return _store_of(venue.engine), records


def test_a_restart_decodes_only_the_accounts_records_touch():
    store, records = _many(300)
    work, eager = load(store), load_eager(store)
    assert len(work.engine.accounts) == 304 and work.engine.accounts.decodes == 0
    assert work.engine.view.exported()["inputs"].shape == (301, 7)
    outputs = _run(work, records)
    assert outputs == _run(eager, records)
    alerted = {o.key for o in outputs if o.topic == "liquidations"}
    assert alerted == {"x0003"}  # the move is confirmed exactly for x0003 alone
    assert set(work.engine.accounts.loaded) == {"x0007", "x0003"}
    assert work.engine.accounts.decodes == 2


def test_a_snapshot_is_used_only_while_it_matches_the_store():
    store, records = _many(50)
    work = load(store)
    assert save_view(work, store)  # a clean close
    again = load(store)
    assert again.loaded_from == "snapshot" and again.version == work.version
    _same_view(again.engine, load_eager(store).engine)
    # Records committed, then killed before any snapshot: the old one is stale.
    _run(again, records[:1])
    assert not save_view(again, store)  # not all in the store yet
    _commit(again, store)
    rebuilt = load(store)
    assert rebuilt.loaded_from == "parts"
    _same_view(rebuilt.engine, load_eager(store).engine)
    assert rebuilt.engine.accounts["x0007"].cash == 1005
    # A snapshot saved after the commit is used, and agrees with the live view.
    assert save_view(again, store)
    fresh = load(store)
    assert fresh.loaded_from == "snapshot"
    assert fresh.engine.view.figures("x0007") == again.engine.view.figures("x0007")
    assert fresh.engine.accounts["x0007"].cash == 1005


def test_a_snapshot_of_other_instruments_or_format_is_refused():
    store, _ = _many(5)
    assert save_view(load(store), store)
    header = viewsnapshot.header_of(store)
    assert header is not None
    offset, symbols = store.changelog_offset(), load(store).engine.view.symbols()
    assert viewsnapshot.usable(header, offset, symbols)
    assert not viewsnapshot.usable(header, offset + 1, symbols)
    assert not viewsnapshot.usable(header, offset, symbols[:-1])
    assert not viewsnapshot.usable({**header, "format": 0}, offset, symbols)


def test_evicted_accounts_keep_their_sealed_used_ids_exactly():
    """Two accounts, 2,000 fills each across chunks sealed and expired, commits every 30
    records, everything evicted at each: the same outputs (repeats refused within the
    retention, accepted after) and parts as an engine that keeps everything decoded."""
    retention = 5_000
    venue = opened_venue(config=EngineConfig(duplicate_retention_ms=retention))
    venue.mark("BTC-PERP", "60000")
    lazy_store, eager_store = _store_of(venue.engine), _store_of(venue.engine)
    config = EngineConfig(duplicate_retention_ms=retention, resident_accounts=0)
    lazy, eager = load(lazy_store, config), load_eager(eager_store, config)
    t0, records = venue.ts, []
    for n in range(4_000):
        ts = t0 + 10 * n
        account = ("a0", "a1")[(n // 50) % 2]  # runs: a commit may change one only
        fill_id = f"f{n}"
        if n % 5 == 0 and n >= 300:  # the same account's, 3 s ago: in a sealed chunk
            fill_id = f"f{n - 300}"
        elif n % 7 == 0 and n >= 1000:  # 10 s ago: past the retention
            fill_id = f"f{n - 1000}"
        if n % 40 == 0:
            index = {"type": "index", "underlying": "BTC", "price": "60000", "ts": ts}
            records.append(Envelope("prices", 0, n, "BTC", index))
        fill = {
            "type": "fill", "fill_id": fill_id, "account": account, "symbol": "BTC-PERP",
            "side": "buy" if n % 4 < 2 else "sell", "qty": "0.001", "price": "60000", "ts": ts,
        }  # fmt: skip
        records.append(Envelope("orders", 0, 100 + n, account, fill))
    dead = 0
    for start in range(0, len(records), 30):
        batch = records[start : start + 30]
        outputs = _run(lazy, batch)
        assert outputs == _run(eager, batch)
        dead += sum(o.topic == "dead-letters" for o in outputs)
        assert _commit(lazy, lazy_store) == _commit(eager, eager_store)
    assert dead > 0 and len(list(lazy_store.keys(b"ids/"))) > 2
    assert lazy.engine.parts() == eager.engine.parts()


def test_a_snapshot_renumbers_instruments_defined_after_the_load():
    """The live view numbers a new instrument last; a loaded one numbers them in order."""
    store, _ = _many(20)
    work = load(store)
    listing = {
        "type": "instrument", "symbol": "AAA-PERP", "kind": "perpetual", "underlying": "BTC",
        "contract_size": "1", "status": "active",
        "margin": {"tiers": [{"up_to": None, "initial": "0.1", "maintenance": "0.05"}]},
    }  # fmt: skip
    mark = {"type": "mark", "symbol": "AAA-PERP", "price": "100", "ts": 1_795_100_000_000}
    fill = {
        "type": "fill", "fill_id": "late", "account": "x0004", "symbol": "AAA-PERP",
        "side": "sell", "qty": "7", "price": "100", "ts": 1_795_100_000_001,
    }  # fmt: skip
    records = [
        Envelope("instruments", 0, 50_000, "AAA-PERP", listing),
        Envelope("prices", 0, 50_000, "AAA-PERP", mark),
        Envelope("orders", 0, 50_000, "x0004", fill),
    ]
    _run(work, records)
    _commit(work, store)
    assert work.engine.view.symbols()[-1] == "AAA-PERP"
    assert save_view(work, store)
    again, rebuilt = load(store), load_eager(store)
    assert again.loaded_from == "snapshot" and again.engine.view.symbols()[0] == "AAA-PERP"
    for account_id in rebuilt.engine.account_ids():
        figures = again.engine.view.figures(account_id)
        assert figures == pytest.approx(rebuilt.engine.view.figures(account_id), rel=1e-12)
    assert again.engine.view.holders(["AAA-PERP"]) == ["x0004"]


def test_the_columns_come_out_the_same_whatever_the_flush_size(monkeypatch):
    store, _ = _many(50)
    monkeypatch.setattr(accounts, "_FLUSH", 3)  # 17 conversions of the lists to arrays
    _same_view(load(store).engine, load_eager(store).engine)
