"""The state tree, the input chain and the commitment records (core/commitments).

Golden vectors pin the byte layout that docs/verifiable-state.md documents: a change to
any of them is a change of format that every verifier must hear about.
"""

from __future__ import annotations

import copy
import itertools
from decimal import Decimal as D
from hashlib import sha256

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marginstream.core import EngineConfig, Envelope
from marginstream.core.commitments import leaf, proof
from marginstream.core.commitments.audit import Audit, parsed
from marginstream.core.commitments.chain import (
    GENESIS,
    InputChain,
    digest_of,
    link,
    record_digest,
    value_sha256,
)
from marginstream.core.commitments.record import Commitments
from marginstream.core.commitments.tree import (
    EMPTY,
    Node,
    SumOverflow,
    SumTree,
    build,
    empty_root,
    leaf_node,
    parent,
    root_from_proof,
)
from marginstream.core.delivery.parts import encode_part, part_key
from marginstream.core.delivery.store import MemoryPartStore
from marginstream.core.delivery.unit import PartitionState, load, load_eager, save_view
from marginstream.core.engine import drive
from marginstream.core.inputs import intake
from marginstream.core.inputs.records import MARKET_TOPICS
from tests.core.operations import envelopes, histories, opened_venue

PROPERTY = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- golden vectors --------------------------------------------------------------------


def test_a_leaf_hashes_its_bytes_under_prefix_0():
    node = leaf_node(b"\x01{}", 5, 0)
    assert node.hash == sha256(b"\x00\x01{}").digest()
    assert node.hash.hex() == "d1b5f23eb41bd11922b23b5958905748587612b0a4134edb4d4cb2604ab11b50"
    assert (node.liabilities, node.deficit) == (5, 0)


def test_a_node_hashes_prefix_1_then_each_child_hash_and_16_byte_sums():
    a, b = leaf_node(b"\x01{}", 5, 0), leaf_node(b"\x01[]", 0, 7)
    spelled = (
        b"\x01" + a.hash + (5).to_bytes(16, "big") + (0).to_bytes(16, "big")
        + b.hash + (0).to_bytes(16, "big") + (7).to_bytes(16, "big")
    )  # fmt: skip
    node = parent(a, b)
    assert node == Node(sha256(spelled).digest(), 5, 7)
    assert node.hash.hex() == "5e5936c8952856f31b1efc815a8a0ae14fc80abcbcf8d59fe8e63eeb539d382a"


def test_empty_subtrees_are_zero_hashes_with_zero_sums_folded_up():
    assert Node(bytes(32), 0, 0) == EMPTY
    assert empty_root(1).hash == sha256(b"\x01" + (bytes(32) + bytes(32)) * 2).digest()
    assert empty_root(1).hash.hex() == (
        "b84147b0eeb997d0942e214ce03c7889e5653f276830838b91e2dfea9528d46d"
    )
    assert empty_root(2).hash.hex() == (
        "802d0f26432df572c4a82c7f9216fc5fd866934b2ccabdb0dd96cb8c924faf5b"
    )


def test_a_tree_of_five_leaves_pads_to_eight_with_empty_subtrees():
    leaves = [leaf_node(bytes([1, i]), i, 0) for i in range(5)]
    tree = SumTree()
    for i, node in enumerate(leaves):
        tree.set(i, node)
    by_hand = parent(
        parent(parent(leaves[0], leaves[1]), parent(leaves[2], leaves[3])),
        parent(parent(leaves[4], EMPTY), empty_root(1)),
    )
    assert tree.root() == by_hand == build(leaves)
    assert by_hand.hash.hex() == "3ef3718633f06e47a509951883e09bbf00f54a6a9b0c9d7cc6e88ca6356394ff"
    assert by_hand.liabilities == 10


def test_the_input_chain_links_spelled_out():
    value_hash = value_sha256(b'{"a":1}')
    digest = record_digest(b"acct-1", value_hash)
    assert digest == sha256(b"\x01" + (6).to_bytes(4, "big") + b"acct-1" + value_hash).digest()
    assert digest.hex() == "d7666939a8412f39085d3d214389b18fde59a99e6d752410c5ab51517afaa01a"
    assert record_digest(None, value_sha256(None)) == sha256(b"\x00" + bytes(32)).digest()
    head = link(GENESIS, "orders", 3, 42, digest)
    spelled = (
        b"\x02" + bytes(32) + (6).to_bytes(2, "big") + b"orders" + (3).to_bytes(4, "big")
        + (42).to_bytes(8, "big") + digest
    )  # fmt: skip
    assert head == sha256(spelled).digest()
    assert head.hex() == "38cfa28c7b8804f1c94a78b3d083c53123abb34c9f2b41dc3db19951dc9e193f"


def test_an_account_leaf_is_its_part_with_sorted_keys_and_no_used_ids():
    part = {"account": "a", "cash": "10.5", "positions": {}, "ids": {"f": 1}, "leaf": 3}
    assert leaf.account_bytes(part) == b'\x01{"account":"a","cash":"10.5","leaf":3,"positions":{}}'


def test_sums_split_equity_into_liabilities_and_deficit_at_eight_places():
    assert leaf.sums(D("12.345678905")) == (1_234_567_890, 0)  # half-even: ...890|5
    assert leaf.sums(D("12.345678915")) == (1_234_567_892, 0)
    assert leaf.sums(D("-0.5")) == (0, 50_000_000)
    assert leaf.sums(D(0)) == (0, 0)


def test_a_sum_past_16_bytes_is_refused_not_wrapped():
    with pytest.raises(SumOverflow):
        leaf_node(b"x", 1 << 127, 0)
    half = leaf_node(b"x", (1 << 126) + 1, 0)
    with pytest.raises(SumOverflow):
        parent(half, half)


# -- the tree, incrementally -----------------------------------------------------------

updates = st.lists(
    st.tuples(st.integers(0, 40), st.binary(max_size=8), st.integers(0, 10**12),
              st.integers(0, 10**6), st.booleans()),
    min_size=1, max_size=80,
)  # fmt: skip


@PROPERTY
@given(updates)
def test_a_tree_updated_in_place_has_the_root_of_one_built_from_scratch(steps):
    tree, leaves = SumTree(), []
    for index, data, liabilities, deficit, look in steps:
        node = leaf_node(data, liabilities, deficit)
        tree.set(index, node)
        leaves.extend([EMPTY] * (index + 1 - len(leaves)))
        leaves[index] = node
        if look:  # roots taken part way, as commits do
            assert tree.root() == build(leaves)
    root = tree.root()
    assert root == build(leaves)
    assert root.liabilities == sum(n.liabilities for n in leaves)
    for index in range(len(leaves)):
        assert root_from_proof(index, leaves[index], tree.proof(index)) == root


# -- commitments over a partition's work -----------------------------------------------


def _store_of(engine) -> MemoryPartStore:
    store = MemoryPartStore()
    store.write([(part_key(k), encode_part(1, v)) for k, v in engine.parts().items()], 1)
    return store


def _commit(work: PartitionState, store: MemoryPartStore) -> dict:
    sealed = work.seal()
    store.write(sealed.parts, store.changelog_offset() + max(1, len(sealed.parts)))
    assert sealed.commitment is not None
    return orjson.loads(sealed.commitment)


@PROPERTY
@given(histories, st.data())
def test_each_commit_s_root_is_the_root_of_its_state_built_from_scratch(history, data):
    venue = opened_venue()
    store = _store_of(venue.engine)
    records = envelopes(history, venue)
    work = load(store, partition=0)
    previous = None
    for batch in _batches(records, data):
        for envelope in batch:
            work.apply(envelope, envelope.source, envelope.offset)
        record = _commit(work, store)
        reference = load_eager(store, partition=0)  # every account decoded: from scratch
        scratch = Commitments.of_engine(reference.engine, 0).summary()
        assert {k: record[k] for k in scratch} == scratch
        assert record["prev"] == (previous or bytes(32)).hex()
        previous = sha256(orjson.dumps(record, option=orjson.OPT_SORT_KEYS)).digest()
        if data.draw(st.booleans()):  # a restart: the chain and the tree go on from the store
            work = load(store, partition=0)


def _batches(records: list[Envelope], data) -> list[list[Envelope]]:
    cuts = sorted(data.draw(st.sets(st.integers(1, max(len(records) - 1, 1)), max_size=4)))
    bounds = [0, *cuts, len(records)]
    return [records[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def test_the_chain_lists_runs_in_the_order_applied_and_skips_records_seen_before():
    chain = InputChain()
    for topic, offset in (("orders", 5), ("orders", 6), ("prices", 0), ("orders", 9)):
        chain.add(topic, 0, offset, bytes(32))
    assert chain.take_runs() == [["orders", 0, 5, 6], ["prices", 0, 0, 0], ["orders", 0, 9, 9]]
    venue = opened_venue()
    store = _store_of(venue.engine)
    work = load(store, partition=0)
    mark = Envelope("prices", 0, 100, "BTC-PERP", {
        "type": "mark", "symbol": "BTC-PERP", "price": "60000", "ts": venue.next_ts()})  # fmt: skip
    work.apply(mark, mark.source, 100)
    head = work.commitments.chain.head
    work.apply(mark, mark.source, 100)  # a fan-out duplicate: no link
    assert work.commitments.chain.head == head
    assert _commit(work, store)["runs"] == [["prices", 0, 100, 100]]


def test_a_mark_move_reprices_every_holder_s_sums():
    venue = opened_venue()
    venue.mark("BTC-PERP", "60000")
    venue.trade("a0", "a1", "BTC-PERP", "1", "60000")
    store = _store_of(venue.engine)
    work = load(store, partition=0)
    before = Commitments.of_engine(work.engine, 0)
    move = Envelope("prices", 0, 100, "BTC-PERP", {
        "type": "mark", "symbol": "BTC-PERP", "price": "61000", "ts": venue.next_ts()})  # fmt: skip
    work.apply(move, move.source, 100)
    record = _commit(work, store)
    assert record["state_root"] != before.summary()["state_root"]
    # Long 1 gains 1,000 and short 1 loses it: the total stays, the leaves move.
    assert record["liabilities"] == before.summary()["liabilities"]
    tree = work.commitments.tree
    a, b = tree.held["a0"][0], tree.held["a1"][0]
    assert tree.tree.leaf(a).liabilities - tree.tree.leaf(b).liabilities == 2_000 * 10**8 + (
        before.tree.tree.leaf(a).liabilities - before.tree.tree.leaf(b).liabilities
    )


# -- proofs ----------------------------------------------------------------------------


def _a_proof() -> dict:
    venue = opened_venue()
    venue.mark("BTC-PERP", "60000")
    venue.trade("a0", "a1", "BTC-PERP", "1", "60000")
    store = _store_of(venue.engine)
    work = load(store, partition=0)
    deposit = Envelope("transfers", 0, 100, "a0", {
        "type": "deposit", "transfer_id": "t-x", "account": "a0", "amount": "1",
        "ts": venue.next_ts()})  # fmt: skip
    work.apply(deposit, deposit.source, 100)
    sealed = work.seal()
    account = work.engine.accounts["a0"]
    leaf_bytes = leaf.account_bytes(account.to_dict())
    return proof.make("a0", account.leaf, leaf_bytes, work.commitments.tree.tree, sealed.commitment)


def test_a_proof_leads_from_the_leaf_to_the_commitment_s_root():
    shown = proof.check(_a_proof())
    assert shown["account"] == "a0" and shown["epoch"] == 2
    assert D(shown["liabilities"]) == D("20001")  # 20,000 deposited, 1 more, flat at the mark


@pytest.mark.parametrize("field", ["leaf", "siblings", "liabilities", "commitment", "index"])
def test_a_proof_with_anything_changed_fails(field):
    good = _a_proof()
    bad = copy.deepcopy(good)
    if field == "leaf":  # a flipped byte of the account's state
        raw = bytearray(bytes.fromhex(bad["leaf"]))
        raw[len(raw) // 2] ^= 0x01
        bad["leaf"] = raw.hex()
    elif field == "siblings":
        h, liabilities, deficit = bad["siblings"][0]
        bad["siblings"][0] = [h[:-2] + ("00" if h[-2:] != "00" else "01"), liabilities, deficit]
    elif field == "liabilities":  # a larger balance claimed
        bad["liabilities"] += 1
    elif field == "commitment":
        record = orjson.loads(bad["commitment"])
        record["liabilities"] = "1"
        bad["commitment"] = orjson.dumps(record).decode()
    else:
        bad["index"] ^= 1
    with pytest.raises(proof.ProofError):
        proof.check(bad)


# -- re-deriving commitments (verify's pure part) --------------------------------------

Raw = dict[tuple[str, int, int], tuple[bytes | None, bytes]]


def _published(history, data) -> tuple[list[bytes], Raw, MemoryPartStore]:
    """A worker's commitments over a history (market records owed, as live; the closing
    work sometimes done before a commit of its own), the raw records by coordinates, and
    the store it started from."""
    venue = opened_venue()
    store = _store_of(venue.engine)
    raw: Raw = {}
    for envelope in envelopes(history, venue):
        key = None if envelope.key is None else envelope.key.encode()
        raw[envelope.topic, 0, envelope.offset] = (key, orjson.dumps(envelope.value))
    work = load(store, partition=0)
    published = []
    for batch in _batches(list(raw.items()), data):
        for (topic, partition, offset), (key, value) in batch:
            envelope = intake.envelope(topic, partition, offset, key, value)
            market = topic in MARKET_TOPICS
            drive(
                work.steps(envelope, envelope.source, offset, market, digest_of(key, value, None))
            )
        if work.engine.owed is not None and data.draw(st.booleans()):
            published.append(work.seal().commitment)  # the alerts' commit
            drive(work.settle())  # then the closing work's, with no record
        published.append(work.seal().commitment)
    return published, raw, store


def _reader(raw: Raw):
    def read(topic, partition, first, last):
        for offset in range(first, last + 1):
            found = raw.get((topic, partition, offset))
            if found is not None:
                yield (offset, *found)

    return read


def _audit(published: list[bytes], raw: Raw, store: MemoryPartStore) -> Audit:
    audit = Audit(0, EngineConfig())
    audit.start_from(load(store, partition=0))  # the state the worker started from
    for value in published:
        record = parsed(value, 1)
        assert isinstance(record, dict), record
        if not audit.check(value, record, _reader(raw)):
            break
    return audit


@PROPERTY
@given(histories, st.data())
def test_an_audit_re_derives_every_commitment_of_a_worker(history, data):
    published, raw, store = _published(history, data)
    audit = _audit(published, raw, store)
    assert audit.divergence is None, audit.divergence
    assert audit.epochs == len(published)


@PROPERTY
@given(histories.filter(lambda h: len(h) >= 2), st.data())
def test_a_dropped_or_reordered_input_record_breaks_the_chain_at_its_epoch(history, data):
    published, raw, store = _published(history, data)
    coordinates = list(raw)
    victim = data.draw(st.sampled_from(coordinates))
    epoch = next(
        orjson.loads(v)["epoch"] for v in published
        if any(r[0] == victim[0] and r[2] <= victim[2] <= r[3] for r in orjson.loads(v)["runs"])
    )  # fmt: skip
    dropped = {k: v for k, v in raw.items() if k != victim}
    swapped = dict(raw)
    neighbour = (victim[0], 0, victim[2] + 1)
    for changed in (dropped, swapped):
        if changed is swapped:
            if neighbour not in raw or raw[neighbour] == raw[victim]:
                continue
            swapped[victim], swapped[neighbour] = raw[neighbour], raw[victim]
        divergence = _audit(published, changed, store).divergence
        assert divergence is not None
        if changed is dropped:
            assert divergence.epoch == epoch, (divergence, epoch)
            assert "input_head" in divergence.problem or "no committed record" in divergence.problem
        else:  # the pair may straddle two commits: the first of them diverges
            assert epoch <= divergence.epoch <= epoch + 1 and "input_head" in divergence.problem


def test_the_insurance_fund_s_slice_is_leaf_0_and_counts_in_the_sums():
    venue = opened_venue()
    store = _store_of(venue.engine)
    work = load(store, partition=0)
    before = Commitments.of_engine(work.engine, 0).summary()
    deposit = Envelope("transfers", 0, 100, "insurance-fund", {
        "type": "deposit", "transfer_id": "fund-1", "account": "insurance-fund",
        "amount": "2500.5", "ts": venue.next_ts()})  # fmt: skip
    work.apply(deposit, deposit.source, 100)
    record = _commit(work, store)
    assert D(record["liabilities"]) - D(before["liabilities"]) == D("2500.5")
    assert work.commitments.tree.tree.leaf(leaf.FUND_LEAF).liabilities == 2500_5000_0000
    scratch = Commitments.of_engine(load_eager(store, partition=0).engine, 0).summary()
    assert record["state_root"] == scratch["state_root"]


def test_accounts_of_an_earlier_format_take_leaves_in_id_order_at_load():
    venue = opened_venue()
    parts = venue.engine.parts()
    for key in [k for k in parts if k[0] == "account"]:
        parts[key] = {k: v for k, v in parts[key].items() if k != "leaf"}  # as format 3 wrote
    parts.pop(("delivery", "leaves"), None)
    store = MemoryPartStore()
    store.write([(part_key(k), encode_part(1, v)) for k, v in parts.items()], 1)
    work = load(store, partition=0)
    assert work.loaded_from == "eager"  # the lazy load gave up on a part without a leaf
    leaves = {name: work.engine.accounts[name].leaf for name in sorted(work.engine.accounts)}
    assert list(leaves.values()) == list(range(1, len(leaves) + 1))
    assert ("delivery", "leaves") in work.changed  # rewritten, with the accounts, next commit
    record = _commit(work, store)
    assert record["accounts"] == len(leaves)
    assert load(store, partition=0).loaded_from != "eager"


@PROPERTY
@given(histories, st.data())
def test_a_restart_from_the_snapshot_commits_what_one_from_the_parts_does(history, data):
    venue = opened_venue()
    store = _store_of(venue.engine)
    records = envelopes(history, venue)
    split = data.draw(st.integers(0, len(records)))
    work = load(store, partition=0)
    for envelope in records[:split]:
        work.apply(envelope, envelope.source, envelope.offset)
    _commit(work, store)
    assert save_view(work, store)  # a clean close
    snapshot, parts = load(store, partition=0), load_eager(store, partition=0)
    assert snapshot.loaded_from == "snapshot"
    assert snapshot.commitments.tree.held == parts.commitments.tree.held
    assert snapshot.commitments.summary() == parts.commitments.summary()
    for work in (snapshot, parts):
        for envelope in records[split:]:
            work.apply(envelope, envelope.source, envelope.offset)
    assert snapshot.seal().commitment == parts.seal().commitment


def test_a_snapshot_s_tree_amiss_is_rebuilt_from_the_parts():
    venue = opened_venue()
    store = _store_of(venue.engine)
    work = load(store, partition=0)
    _commit(work, store)
    assert save_view(work, store)
    found = [k for k in store.data if k.endswith(b"view/tree-leaves")]
    assert found, list(store.data)[:5]
    store.write_meta([(found[0], b"\x01" * 63)])  # not whole nodes
    again = load(store, partition=0)
    assert again.loaded_from == "snapshot"
    assert again.commitments.summary() == work.commitments.summary()


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"runs": 5}, "runs is not a list"),
        ({"runs": None}, "runs is not a list"),
        ({"runs": [5]}, "run 5 is not"),
        ({"runs": [["orders", 0, 1]]}, "is not [input topic"),
        ({"runs": [["orders", "x", 0, 1]]}, "is not [input topic"),
        ({"runs": [["orders", 0, 5, 1]]}, "is not [input topic"),
        ({"runs": [["marginstream-market", 0, 1, 1]]}, "is not [input topic"),
        ({"epoch": None}, "epoch None"),
        ({"epoch": 0}, "epoch 0"),
        ({"epoch": -5}, "epoch -5"),
        ({"partition": True}, "partition True"),
        ({"partition": 4}, "partition 4 is not a whole number 0..3"),
        ({"state_root": "ab"}, "state_root is not 64 hex"),
        ({"owed": 1}, "owed is not"),
        ({"schema": 2}, "schema 2"),
    ],
)
def test_a_record_of_the_wrong_shape_is_named_not_read(change, named):
    venue = opened_venue()
    work = load(_store_of(venue.engine), partition=0)
    good = work.seal().commitment
    assert isinstance(parsed(good, 4), dict)
    bad = orjson.dumps({**orjson.loads(good), **change})
    problem = parsed(bad, 4)
    assert isinstance(problem, str) and named in problem, problem
    assert parsed(b"not json", 4).startswith("not JSON")
    assert parsed(b"[1]", 4) == "not a JSON object"
    assert parsed(None, 4).startswith("not JSON")
