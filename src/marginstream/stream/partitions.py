"""One core engine per Kafka partition, loaded from the state table and saved part by part.

Per record: decode -> engine.apply -> write the changed parts to the state table
(local RocksDB in batches, changelog via the producer) in the core's write order ->
queue the outputs. faust flushes the producer (changelog and outputs) before it
commits the input offset, so a committed offset always has durable state and
outputs behind it; everything after it is read again after a crash, and the
engine's idempotence turns those re-reads into re-publications and re-writes.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from marginstream.core import DEAD_LETTERS, EngineConfig, Envelope, RiskEngine
from marginstream.core.envelope import NotJson
from marginstream.core.market import StateKey
from marginstream.stream.codec import decode_part, encode_part, part_key, state_key
from marginstream.stream.faults import FAULTS
from marginstream.stream.topics import MARKET_FANOUT, RISK_INPUTS, TopicNames

log = logging.getLogger(__name__)

# Headers a market record carries through the fan-out topic: where it was first read.
ORIGIN_TOPIC, ORIGIN_PARTITION, ORIGIN_OFFSET = "ms-topic", "ms-partition", "ms-offset"


class Message(Protocol):
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Any


class PartStore(Protocol):
    """What the shell needs of the state table: one record's parts written together into
    a partition's store, and a partition scan."""

    def write(self, partition: int, parts: list[tuple[bytes, bytes]]) -> None: ...
    def partition_items(self, partition: int) -> Iterable[tuple[bytes, bytes]]: ...


Publication = tuple[str, bytes | None, bytes]  # (full topic name, key, value)


@dataclass
class Applied:
    """What one record left to send: its state parts (already in the local store) for the
    changelog, then its outputs."""

    partition: int
    parts: list[tuple[bytes, bytes]]
    publications: list[Publication]


@dataclass
class PartitionEngine:
    partition: int
    engine: RiskEngine
    version: int  # the last version written to the state table for this partition
    records: int = 0
    # Market records read from the fan-out topic and not yet committed there:
    # (fan-out offset, origin source, origin offset), oldest first.
    market_window: deque[tuple[int, str, int]] = field(default_factory=deque)

    def committed(self, source: str, offset: int, from_market: bool) -> None:
        """The input below offset is committed: tell the engine, in its own sources."""
        if not from_market:
            self.engine.forget_committed(source, offset)
            return
        window = self.market_window
        while window and window[0][0] < offset:
            _, origin, origin_offset = window.popleft()
            self.engine.forget_committed(origin, origin_offset + 1)


@dataclass
class Shell:
    config: EngineConfig
    names: TopicNames
    store: PartStore
    engines: dict[int, PartitionEngine] = field(default_factory=dict)
    loads: int = 0  # how many times a partition's engine was (re)built from the store

    # -- lifecycle ----------------------------------------------------------------

    def engine_for(self, partition: int) -> PartitionEngine:
        loaded = self.engines.get(partition)
        if loaded is None:
            loaded = self.engines[partition] = self._load(partition)
        return loaded

    def committed(self, offsets: dict[tuple[str, int], int]) -> None:
        """Input offsets faust has committed, as {(full topic name, partition): offset}."""
        for (topic, partition), offset in offsets.items():
            spec = self.names.spec(topic)
            loaded = self.engines.get(partition)
            if loaded is not None and spec in RISK_INPUTS:
                loaded.committed(f"{spec}:{partition}", offset, spec == MARKET_FANOUT)

    def drop(self, partitions: Iterable[int]) -> None:
        """Forget partitions this worker no longer owns: if they return, reload them."""
        for partition in partitions:
            self.engines.pop(partition, None)

    def _load(self, partition: int) -> PartitionEngine:
        parts: dict[StateKey, Any] = {}
        version = 0
        for raw_key, raw_value in self.store.partition_items(partition):
            key = state_key(raw_key)
            if key is None:
                continue
            part_version, part = decode_part(raw_value)
            parts[key] = part
            version = max(version, part_version)
        engine = RiskEngine.from_parts(parts, self.config)
        self.loads += 1
        log.info(
            "partition %d: %d accounts, %d instruments loaded (version %d)",
            partition, len(engine.accounts), len(engine.market.instruments), version,
        )  # fmt: skip
        return PartitionEngine(partition, engine, version)

    # -- records ------------------------------------------------------------------

    def process(self, message: Message) -> Applied:
        """Apply one record of partition message.partition, write its parts to the local
        store, and return what must still go to Kafka (changelog, then outputs)."""
        loaded = self.engine_for(message.partition)
        envelope, from_market = self.envelope(message)
        if from_market:
            origin = f"{envelope.topic}:{envelope.partition}"
            loaded.market_window.append((message.offset, origin, envelope.offset))
        outcome = loaded.engine.apply(envelope)
        parts = []
        for key in outcome.parts_in_write_order():
            loaded.version += 1
            parts.append((part_key(key), encode_part(loaded.version, loaded.engine.part(key))))
        self.store.write(message.partition, parts)
        loaded.records += 1
        FAULTS.hit("after-local-write")
        publications = []
        for output in outcome.outputs:
            # Every partition sees each market record; one dead letter for it is enough.
            if from_market and output.topic == DEAD_LETTERS and message.partition != 0:
                continue
            key = None if output.key is None else output.key.encode()
            publications.append((self.names.full(output.topic), key, orjson.dumps(output.value)))
        return Applied(message.partition, parts, publications)

    def envelope(self, message: Message) -> tuple[Envelope, bool]:
        key = None if message.key is None else message.key.decode(errors="replace")
        text = None if message.value is None else message.value.decode(errors="replace")
        spec_topic = self.names.spec(message.topic)
        from_market = spec_topic == MARKET_FANOUT
        topic, partition, offset = spec_topic, message.partition, message.offset
        if from_market:
            origin = dict(message.headers or ())
            topic = _header(origin, ORIGIN_TOPIC)
            partition = int(_header(origin, ORIGIN_PARTITION))
            offset = int(_header(origin, ORIGIN_OFFSET))
        try:
            value = orjson.loads(message.value or b"")
        except orjson.JSONDecodeError as error:
            value = NotJson(f"not JSON ({error})")
        return Envelope(topic, partition, offset, key, value, text), from_market


def _header(headers: dict[Any, Any], name: str) -> str:
    value = headers.get(name)
    if value is None:
        value = headers.get(name.encode())
    if isinstance(value, bytes):
        return value.decode()
    if value is None:
        raise ValueError(f"market record without its {name} header")
    return str(value)
