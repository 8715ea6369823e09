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

import orjson

from marginstream.core.delivery.formats import upgrade
from marginstream.core.delivery.parts import (
    StateKey,
    StoredPart,
    decode_part,
    part_header,
    part_key,
    state_key,
)
from marginstream.core.delivery.sources import Source
from marginstream.core.delivery.store import PartStore
from marginstream.core.engine import EngineConfig, Outcome, RiskEngine
from marginstream.core.envelope import Envelope


@dataclass(frozen=True)
class Sealed:
    """One commit's content: parts to write and the input offsets to resume from."""

    version: int
    parts: list[tuple[bytes, bytes | None]]  # None: the part is deleted
    offsets: dict[Source, int]  # per input read: the offset after the last record read
    records: int


@dataclass
class PartitionState:
    engine: RiskEngine
    version: int  # the highest version stored for this partition
    changed: set[StateKey] = field(default_factory=set)
    offsets: dict[Source, int] = field(default_factory=dict)
    records: int = 0  # read since the last seal

    def apply(self, envelope: Envelope, read_from: Source, offset: int) -> Outcome:
        """Apply one record read at (read_from, offset); the envelope names its origin."""
        outcome = self.engine.apply(envelope)
        self.changed |= outcome.changed
        self.offsets[read_from] = offset + 1
        self.records += 1
        return outcome

    def seal(self) -> Sealed:
        """Take what was applied since the last seal, for one commit."""
        self.version += 1
        header, part, dumps = part_header(self.version), self.engine.part, orjson.dumps
        parts = []
        for key in sorted(self.changed):  # encode_part, its header made once
            data = part(key)
            parts.append((part_key(key), None if data is None else header + dumps(data)))
        sealed = Sealed(self.version, parts, self.offsets, self.records)
        self.changed, self.offsets, self.records = set(), {}, 0
        return sealed


def load(store: PartStore, config: EngineConfig | None = None) -> PartitionState:
    """The partition's state as its store holds it, earlier formats upgraded."""
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
    return PartitionState(engine, version, changed=upgraded.rewrite)
