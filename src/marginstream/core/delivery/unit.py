"""A partition's work between two commits, and the state it starts from.

The shell applies records through PartitionState.apply, then commits what seal() returns
in one transaction (stream/commit.py): the parts changed since the last commit, each
once, at the next version, and the offset after the last record read from each input.
If that transaction does not commit, the shell drops this object and loads the
partition again from its store and the changelog (load below): nothing in memory
outlives a failed commit or a rebalance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from marginstream.core.books.accounts import view_columns
from marginstream.core.books.seenids import chunk_owner
from marginstream.core.commitments.chain import digest_of
from marginstream.core.commitments.record import (
    CHAIN_KEY,
    Commitments,
    NoLeaf,
    StateTree,
    params_hash,
)
from marginstream.core.delivery import viewsnapshot
from marginstream.core.delivery.formats import upgrade
from marginstream.core.delivery.guard import GUARD_KEY, ReplayGuard
from marginstream.core.delivery.parts import (
    FORMAT,
    FORMAT1_KINDS,
    HEADER_BYTES,
    PART_KINDS,
    StateKey,
    StoredPart,
    decode_part,
    format_of,
    part_header,
    part_key,
    state_key,
    version_of,
)
from marginstream.core.delivery.sources import Source
from marginstream.core.delivery.store import PartStore
from marginstream.core.engine import (
    LEAVES_KEY,
    OWED_KEY,
    EngineConfig,
    Outcome,
    RiskEngine,
    Steps,
    drive,
    next_leaf,
)
from marginstream.core.inputs.envelope import Envelope
from marginstream.core.inputs.records import ACCOUNT_TOPICS, MARKET_TOPICS
from marginstream.core.liquidation.fund import FUND_KEY, InsuranceFund
from marginstream.core.risk.market import MARKET_KINDS, Market

INPUTS = ACCOUNT_TOPICS | MARKET_TOPICS  # the SPEC inputs the input chain links


@dataclass(frozen=True)
class Sealed:
    """One commit's content: parts to write and the input offsets to resume from."""

    version: int
    parts: list[tuple[bytes, bytes | None]]  # None: the part is deleted
    offsets: dict[Source, int]  # per input read: the offset after the last record read
    records: int
    commitment: bytes | None = None  # the commitment record (core/commitments/record.py)


@dataclass
class PartitionState:
    engine: RiskEngine
    version: int  # the highest version stored for this partition
    changed: set[StateKey] = field(default_factory=set)
    offsets: dict[Source, int] = field(default_factory=dict)
    records: int = 0  # read since the last seal
    loaded_from: str = "parts"  # how the view was built: "snapshot", "parts", or "eager"
    held: tuple[Source, int] | None = None  # an offset committed once the work owed is done
    # The state tree and input chain, for a commitment record per commit (None: none).
    commitments: Commitments | None = None

    def apply(
        self, envelope: Envelope, read_from: Source, offset: int, digest: bytes | None = None
    ) -> Outcome:
        """Apply one record read at (read_from, offset); the envelope names its origin."""
        return drive(self.steps(envelope, read_from, offset, digest=digest))

    def steps(
        self,
        envelope: Envelope,
        read_from: Source,
        offset: int,
        owe: bool = False,
        digest: bytes | None = None,
    ) -> Steps[Outcome]:
        """apply, pausing where the engine does (RiskEngine.steps; owe: its meaning).

        digest: the record's digest for the input chain (chain.record_digest of the bytes
        as read); by default, from the envelope (its key as text, its original value)."""
        outcome = yield from self.engine.steps(envelope, owe)  # settles what was owed first
        # A record the guard skipped changed nothing; one in no SPEC input (the fan-out
        # topic's record without an origin: a dead letter) is not one of the inputs the
        # chain is defined by, and changes nothing a state root covers.
        if self.commitments is not None and not outcome.replayed and envelope.topic in INPUTS:
            if digest is None:
                digest = envelope_digest(envelope)
            self.commitments.chain.add(envelope.topic, envelope.partition, envelope.offset, digest)
        self.changed |= outcome.changed
        self.offsets[read_from] = offset + 1
        self._release()
        if self.engine.owed is not None:  # the record counts as read once its work is done
            self.offsets[read_from] = offset
            self.held = (read_from, offset + 1)
        self.records += 1
        return outcome

    def settle(self) -> Steps[Outcome]:
        """The closing work a market record left owed (RiskEngine.settle), and the offset
        after that record: a group's offsets say a record is applied only once all its
        work is committed, so a caught-up group has published everything (the alerts
        were committed before, with the state that says the record was seen: read again
        after a restart, the record changes nothing, and the work owed is done)."""
        outcome = yield from self.engine.settle()
        self.changed |= outcome.changed
        self._release()
        return outcome

    def _release(self) -> None:
        """The offset held back for work owed, once nothing is owed."""
        if self.held is not None and self.engine.owed is None:
            source, offset = self.held
            self.offsets[source] = max(offset, self.offsets.get(source, 0))
            self.held = None

    @property
    def pending(self) -> bool:
        """Is there anything to commit: records applied, or closing work done?"""
        return bool(self.records or self.changed or self.offsets)

    def seal(self) -> Sealed:
        """Take what was applied since the last seal, for one commit."""
        self.version += 1
        header, part, dumps = part_header(self.version), self.engine.part, orjson.dumps
        parts = []
        accounts = {}
        for key in sorted(self.changed):  # encode_part, its header made once
            data = part(key)
            parts.append((part_key(key), None if data is None else header + dumps(data)))
            if key[0] == "account" and data is not None:
                accounts[key[1]] = data
        commitment = None
        if self.commitments is not None:  # before eviction: the accounts changed are decoded
            repriced = self.engine.take_repriced()
            fund = FUND_KEY in self.changed
            commitment, chain = self.commitments.seal(
                self.engine, accounts, fund, repriced, self.version
            )
            parts.append((part_key(CHAIN_KEY), header + dumps(chain)))
        self.engine.evict_clean(self.changed)  # after encoding: the changed stay decoded
        sealed = Sealed(self.version, parts, self.offsets, self.records, commitment)
        self.changed, self.offsets, self.records = set(), {}, 0
        return sealed


def envelope_digest(envelope: Envelope) -> bytes:
    """A record's input-chain digest from its envelope: its key as UTF-8, its value as read
    (the shell passes the digest of the bytes themselves, stream/partition.py)."""
    key = None if envelope.key is None else envelope.key.encode()
    return digest_of(key, envelope.raw, envelope.whole)


def save_view(work: PartitionState, store: PartStore) -> bool:
    """Save the risk view's snapshot (delivery/viewsnapshot.py) if the store holds exactly
    work's state: nothing applied since the last commit's local write, and loaded lazily
    (so wholly in the current format). True if saved."""
    if work.records or work.changed or work.engine.reader is None:
        return False
    tree = None if work.commitments is None else work.commitments.tree.exported()
    viewsnapshot.save(store, work.engine.view, work.version, tree)
    return True


def load(
    store: PartStore, config: EngineConfig | None = None, partition: int | None = None
) -> PartitionState:
    """The partition's state as its store holds it, earlier formats upgraded.

    A store wholly in the current format is loaded lazily: the market, the guard and the
    risk view (from the view's snapshot if it matches the store, else from the account
    parts, decoded to floats only); each account is decoded when first touched
    (core/books/accounts.py). A store with parts of an earlier format is loaded whole, and
    upgraded.

    partition: the account partition the store holds, to commit to its state (its tree
    built from every account part, core/commitments); None: no commitments.
    """
    config = config or EngineConfig()
    lazy = _lazy(store, config, partition)
    return lazy if lazy is not None else load_eager(store, config, partition)


def load_eager(
    store: PartStore, config: EngineConfig | None = None, partition: int | None = None
) -> PartitionState:
    """Every part decoded into the engine's objects (earlier formats upgraded)."""
    stored: dict[StateKey, StoredPart] = {}
    version = 0
    for raw_key, raw_value in store.items():
        key = state_key(raw_key)
        if key is None:
            continue
        part = stored[key] = decode_part(raw_value)
        version = max(version, part.version)
    config = config or EngineConfig()
    upgraded = upgrade(stored, config.duplicate_retention_ms)
    engine = RiskEngine.from_parts(upgraded.parts, config)
    work = PartitionState(engine, version, changed=upgraded.rewrite, loaded_from="eager")
    if partition is not None:
        chain = upgraded.parts.get(CHAIN_KEY)
        work.commitments = Commitments.of_engine(engine, partition, chain)
    return work


_SMALL_KINDS = tuple(k for k in (*PART_KINDS, *FORMAT1_KINDS) if k not in ("account", "ids"))


def _lazy(store: PartStore, config: EngineConfig, partition: int | None) -> PartitionState | None:
    """The lazily loaded state; None if a part is in an earlier format (load it whole)."""
    small: dict[StateKey, Any] = {}
    version = 0
    for kind in _SMALL_KINDS:
        for raw_key, raw_value in store.items(f"{kind}/".encode()):
            key = state_key(raw_key)
            if key is None:
                continue
            if format_of(raw_value) != FORMAT:
                return None
            part = decode_part(raw_value)
            small[key] = part.data
            version = max(version, part.version)
    sealed: dict[str, list[StateKey]] = {}  # the sealed id chunks' keys, by account
    for raw_key, raw_value in store.items(b"ids/"):  # their versions read, not decoded
        key = state_key(raw_key)
        if key is not None:
            sealed.setdefault(chunk_owner(key[1])[0], []).append(key)
            version = max(version, version_of(raw_value))
    market = Market.from_parts({k: v for k, v in small.items() if k[0] in MARKET_KINDS})
    guard = ReplayGuard.from_part(small.get(GUARD_KEY))
    fund = InsuranceFund.from_part(small.get(FUND_KEY))
    owed = small.get(OWED_KEY) or None  # {}: nothing owed
    leaves = next_leaf(small.get(LEAVES_KEY))
    engine = RiskEngine(config, None, market, guard, None, store, sealed, fund, owed, leaves)
    view, symbols = engine.view, engine.view.symbols()
    header = viewsnapshot.header_of(store)
    if viewsnapshot.usable(header, store.changelog_offset(), symbols):
        assert header is not None
        if viewsnapshot.load_into(store, header, view):
            version = max(version, int(header["version"]))
            work = PartitionState(engine, version, loaded_from="snapshot")
            return _committing(work, store, small, partition, viewsnapshot.tree_of(store))
    columns = view_columns(store.items(b"account/"), market, symbols)
    if columns.legacy:
        return None
    columns.load_into(view)
    work = PartitionState(engine, max(version, columns.version))
    return _committing(work, store, small, partition)


def _committing(
    work: PartitionState,
    store: PartStore,
    small: dict[StateKey, Any],
    partition: int | None,
    saved: tuple[bytes, bytes] | None = None,
) -> PartitionState | None:
    """work with its state tree: the snapshot's (saved), else built from every account
    part in the store; None if an account has no leaf yet (load it whole: formats.py
    gives it one)."""
    if partition is None:
        return work
    engine, loads = work.engine, orjson.loads
    params, chain = params_hash(engine.config), small.get(CHAIN_KEY)
    if saved is not None:
        try:
            tree = StateTree.imported(*saved)
        except (ValueError, TypeError, orjson.JSONDecodeError):
            pass  # a snapshot amiss: the parts are the truth
        else:
            work.commitments = Commitments.of_snapshot(tree, partition, params, chain)
            return work
    parts = (loads(value[HEADER_BYTES:]) for _, value in store.items(b"account/"))
    try:
        work.commitments = Commitments.of_parts(
            parts, engine.market, engine.fund, partition, params, chain
        )
    except NoLeaf:
        return None
    return work
