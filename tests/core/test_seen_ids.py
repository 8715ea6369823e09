"""Used fill and transfer ids: a window of event time, in bounded parts of their own."""

from __future__ import annotations

from marginstream.core import DEAD_LETTERS, EngineConfig, Envelope
from marginstream.core.books.seenids import CHUNK_IDS, SeenIds
from marginstream.core.delivery.guard import GUARD_KEY
from marginstream.core.delivery.parts import FORMAT, decode_part, encode_part, part_key
from marginstream.core.delivery.sources import Source
from marginstream.core.delivery.store import MemoryPartStore
from marginstream.core.delivery.unit import PartitionState, load
from tests.core.venue import T0, Venue

RETENTION = 10_000


def fill_value(fill_id: str, ts: int, side: str = "buy") -> dict:
    return {
        "type": "fill", "fill_id": fill_id, "account": "mm", "symbol": "BTC-PERP",
        "side": side, "qty": "0.001", "price": "60000", "ts": ts,
    }  # fmt: skip


def market_maker(config: EngineConfig | None = None) -> Venue:
    venue = Venue(config=config or EngineConfig(duplicate_retention_ms=RETENTION))
    venue.perpetual("BTC-PERP")
    venue.mark("BTC-PERP", "60000")
    venue.deposit("mm", "1000000")
    return venue


def is_dead(outcome) -> bool:
    return [o.topic for o in outcome.outputs] == [DEAD_LETTERS]


def test_an_id_is_a_duplicate_within_the_retention_of_the_record_that_repeats_it():
    venue = market_maker()
    assert not is_dead(venue.send("orders", fill_value("f1", T0)))
    assert is_dead(venue.send("orders", fill_value("f1", T0 + RETENTION)))
    assert not is_dead(venue.send("orders", fill_value("f1", T0 + RETENTION + 1)))
    # Used again, it counts from its new use.
    assert is_dead(venue.send("orders", fill_value("f1", T0 + 2 * RETENTION)))


def test_transfer_ids_keep_their_own_window():
    venue = market_maker()
    venue.deposit("mm", "5", transfer_id="t1")
    assert is_dead(venue.deposit("mm", "5", transfer_id="t1"))
    assert not is_dead(venue.send("orders", fill_value("t1", venue.next_ts())))


def test_no_part_grows_with_the_fills_of_one_account_and_old_chunks_are_deleted():
    """20k fills, 10 ms apart, with a 10 s retention: about 1,000 ids are live at a time."""
    venue = market_maker()
    state = PartitionState(venue.engine, version=0)
    store = MemoryPartStore()
    largest = 0
    for n in range(20_000):
        side = "buy" if n % 2 == 0 else "sell"
        if n % 50 == 0:  # the venue's clock: the index's time
            index = {"type": "index", "underlying": "BTC", "price": "60000", "ts": T0 + 10 * n}
            state.apply(Envelope("prices", 0, n, "BTC", index), Source("prices", 0), n)
        outcome = state.apply(
            Envelope("orders", 0, 1000 + n, "mm", fill_value(f"fill-{n:08d}", T0 + 10 * n, side)),
            read_from=Source("orders", 0),
            offset=n,
        )
        assert not is_dead(outcome)
        if n % 100 == 99:
            sealed = state.seal()
            largest = max(largest, *(len(v) for _, v in sealed.parts if v is not None))
            store.write(sealed.parts, n)
    chunks = [k for k, _ in store.items() if k.startswith(b"ids/")]
    live = 1 + RETENTION // 10
    assert largest < 64 * 1024
    assert len(chunks) <= live // CHUNK_IDS + 2  # dropped chunks were deleted, not kept
    assert len(store.get(b"account/mm") or b"") < CHUNK_IDS * 40  # the newest chunk at most
    # The store alone says the same: a recent id is a duplicate, an expired one is not.
    restored = load(store, EngineConfig(duplicate_retention_ms=RETENTION))
    assert restored.engine.ids.seen("mm", "fill", "fill-00019999", T0 + 200_000)
    assert not restored.engine.ids.seen("mm", "fill", "fill-00000001", T0 + 200_000)


def test_chunks_round_trip_through_their_parts():
    ids = SeenIds(RETENTION)
    for n in range(3 * CHUNK_IDS + 7):
        ids.remember("a/b", "fill", f"x{n}", T0 + n, clock=T0)
    assert len(ids.parts()) == 3  # sealed; the newest (7 ids) travels in the account part
    carried = [("a/b", ids.newest("a/b"))]
    again = SeenIds.from_parts(ids.parts().items(), carried, RETENTION)
    assert again.parts() == ids.parts() and again.newest("a/b") == ids.newest("a/b")
    assert again.seen("a/b", "fill", "x5", T0 + 10) and not again.seen("a/b", "fill", "y", T0)
    assert again.seen("a/b", "fill", f"x{3 * CHUNK_IDS + 6}", T0)


def test_ids_kept_inside_an_account_part_by_format_2_move_out_at_the_next_commit():
    venue = market_maker()
    account = venue.engine.accounts["mm"].to_dict()
    legacy = {**account, "fills_seen": {"old-fill": T0}, "transfers_seen": {"old-t": T0}}
    store = MemoryPartStore()
    store.write([(part_key(("account", "mm")), _format2(legacy))], 0)
    state = load(store, EngineConfig(duplicate_retention_ms=RETENTION))
    ids = state.engine.ids
    assert ids.seen("mm", "fill", "old-fill", T0 + 1)
    assert ids.seen("mm", "transfer", "old-t", T0 + 1)
    assert ("account", "mm") in state.changed  # rewritten with the first commit
    state.records = 1
    store.write(state.seal().parts, 1)
    stored = decode_part(store.get(b"account/mm") or b"")
    assert stored.format == FORMAT and "fills_seen" not in stored.data
    assert load(store).engine.ids.seen("mm", "fill", "old-fill", T0 + 1)


def _format2(data: dict) -> bytes:
    """A part as format 2 stored it: the same header, format byte 2."""
    return bytes((2,)) + encode_part(1, data)[1:]


def test_a_fill_writes_its_account_part_only_until_its_chunk_is_sealed():
    """The newest chunk travels in the account part, which a fill writes anyway: no extra
    changelog record per fill (a chunk part per fill cost a fifth of the throughput)."""
    venue = market_maker()
    changed = [
        venue.send("orders", fill_value(f"f{n}", T0 + n, "buy" if n % 2 else "sell")).changed
        for n in range(CHUNK_IDS + 1)
    ]
    account = {("account", "mm"), GUARD_KEY}
    assert all(c == account for c in changed[: CHUNK_IDS - 1])
    assert changed[CHUNK_IDS - 1] == account | {("ids", "fill/0/mm")}
    assert changed[CHUNK_IDS] == account


def test_one_record_dated_ahead_does_not_make_the_account_forget_its_ids():
    """An outside tester's account: 300 fills, one dated 8 days ahead, 300 more. Counted
    from the account's newest time, every sealed chunk was dropped, and repeats of the
    first fills (1 day after them) were applied twice. Counted from the venue's clock
    (the index), they are still held."""
    venue = market_maker(EngineConfig())  # 7 days
    venue.send("prices", {"type": "index", "underlying": "BTC", "price": "60000", "ts": T0})
    for n in range(300):
        assert not is_dead(venue.send("orders", fill_value(f"f{n}", T0 + 10 + n, "buy")))
    ahead = T0 + 8 * 86_400_000 + 1000
    assert not is_dead(venue.send("orders", fill_value("ahead", ahead, "sell")))
    for n in range(300, 700):
        assert not is_dead(venue.send("orders", fill_value(f"f{n}", T0 + 10 + n, "sell")))
    day = 86_400_000
    for n in (0, 1, 129, 250, 299, 450, 699):
        assert is_dead(venue.send("orders", fill_value(f"f{n}", T0 + day, "buy"))), n
    venue.deposit("mm", "5", transfer_id="t-old")
    venue.send("orders", fill_value("ahead2", ahead + day, "buy"))
    assert is_dead(venue.deposit("mm", "5", transfer_id="t-old"))
