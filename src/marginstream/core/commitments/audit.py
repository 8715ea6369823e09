"""Re-deriving a partition's commitments from its inputs: the pure part of `verify`.

Given a partition's commitment records, in the order published, and a way to read the
SPEC input records, an Audit re-executes each commit's runs with the core, in the
recorded order, from an empty state (or from a trusted checkpoint), and rebuilds each
record: every field must be the published one, byte for byte. It stops at the first
divergence and names it. The market records of a run are applied as a worker applies
them (alerts first, closing work owed, RiskEngine.steps with owe=True), and closing work
a worker did on its own between two records (a commit with no runs) is done where the
record says nothing is owed any more.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Any

import orjson

from marginstream.core.commitments.chain import digest_of
from marginstream.core.commitments.record import RECORD_SCHEMA, Commitments, params_hash
from marginstream.core.delivery.sources import Source
from marginstream.core.delivery.unit import PartitionState
from marginstream.core.engine import EngineConfig, RiskEngine, drive
from marginstream.core.inputs import intake
from marginstream.core.inputs.records import MARKET_TOPICS

# (offset, key, value) of the committed records of a topic partition in [first, last]
Reader = Callable[[str, int, int, int], Iterable[tuple[int, bytes | None, bytes | None]]]


@dataclass
class Divergence:
    partition: int
    epoch: int
    problem: str

    def __str__(self) -> str:
        return f"partition {self.partition} epoch {self.epoch}: {self.problem}"


@dataclass
class Audit:
    """One partition's re-execution."""

    partition: int
    config: EngineConfig
    max_record_bytes: int = intake.MAX_RECORD_BYTES
    deployment: str = ""
    work: PartitionState = field(init=False)
    epochs: int = 0  # commitments checked
    records: int = 0  # input records re-applied
    first_epoch: int | None = None
    last_epoch: int | None = None
    divergence: Divergence | None = None

    def __post_init__(self) -> None:
        engine = RiskEngine(self.config)
        commitments = Commitments(self.partition, params_hash(self.config), None, self.deployment)
        self.work = PartitionState(engine, 0, commitments=commitments)

    def start_from(self, work: PartitionState) -> None:
        """Go on from a trusted checkpoint's state (verify --from-epoch)."""
        assert work.commitments is not None
        work.commitments.deployment = self.deployment
        self.work = work

    def check(self, value: bytes, record: dict[str, Any], read: Reader) -> bool:
        """Re-derive one published record (its shape checked: parsed); False (and
        divergence set) if it differs."""
        epoch = record["epoch"]
        work = self.work
        if self.last_epoch is not None and epoch != self.last_epoch + 1:
            return self._diverged(epoch, f"follows epoch {self.last_epoch}: epochs are a run")
        commitments = work.commitments
        assert commitments is not None
        if record.get("prev") != commitments.prev.hex():
            return self._diverged(epoch, "its prev is not the sha256 of the record before it")
        try:
            for topic, partition, first, last in record["runs"]:
                self._apply_run(topic, partition, first, last, read)
        except _Missing as missing:
            return self._diverged(epoch, str(missing))
        if work.engine.owed is not None and not record.get("owed"):
            drive(work.settle())  # the worker did the closing work before this commit
        work.version = epoch - 1
        rebuilt = work.seal().commitment
        assert rebuilt is not None
        self.epochs += 1
        self.first_epoch = epoch if self.first_epoch is None else self.first_epoch
        self.last_epoch = epoch
        if rebuilt != value:
            return self._diverged(epoch, differences(orjson.loads(rebuilt), record))
        commitments.prev = sha256(value).digest()
        return True

    def _apply_run(self, topic: str, partition: int, first: int, last: int, read: Reader) -> None:
        work, market = self.work, topic in MARKET_TOPICS
        seen = 0
        for offset, key, value in read(topic, partition, first, last):
            envelope = intake.envelope(topic, partition, offset, key, value, self.max_record_bytes)
            digest = digest_of(key, value, None)
            steps = work.steps(envelope, Source(topic, partition), offset, market, digest)
            drive(steps)
            seen += 1
        self.records += seen
        if seen == 0:
            raise _Missing(f"no committed record of {topic}[{partition}] in {first}..{last}")

    def _diverged(self, epoch: int, problem: str) -> bool:
        self.divergence = Divergence(self.partition, epoch, problem)
        return False


class _Missing(LookupError):
    pass


SPEC_INPUTS = ("orders", "transfers", "prices", "instruments")
_HEX64 = frozenset("0123456789abcdef")


def parsed(value: bytes | None, partitions: int) -> dict[str, Any] | str:
    """A published commitment record, its shape checked (RECORD_SCHEMA's fields, of their
    types); else why it is not one. Only workers write to `commitments`: anything else
    there is named, never skipped."""
    try:
        record = orjson.loads(value or b"")
    except orjson.JSONDecodeError as error:
        return f"not JSON ({error})"
    if not isinstance(record, dict):
        return "not a JSON object"
    if record.get("schema") != RECORD_SCHEMA:
        return f"schema {record.get('schema')!r}, this reads {RECORD_SCHEMA}"
    for name, low, high in (("partition", 0, partitions - 1), ("epoch", 1, None),
                            ("accounts", 0, None)):  # fmt: skip
        found = record.get(name)
        if not _whole(found) or found < low or (high is not None and found > high):
            shown = f"0..{high}" if high is not None else f">= {low}"
            return f"{name} {found!r} is not a whole number {shown}"
    for name in ("prev", "input_head", "state_root", "params"):
        found = record.get(name)
        if not (isinstance(found, str) and len(found) == 64 and set(found) <= _HEX64):
            return f"{name} is not 64 hex digits"
    if not isinstance(record.get("deployment"), str):
        return "deployment is not text"
    if not isinstance(record.get("owed"), bool):
        return "owed is not true or false"
    runs = record.get("runs")
    if not isinstance(runs, list):
        return "runs is not a list"
    for run in runs:
        if not (
            isinstance(run, list) and len(run) == 4 and run[0] in SPEC_INPUTS
            and all(_whole(x) for x in run[1:]) and run[2] <= run[3]
        ):  # fmt: skip
            return f"run {run!r} is not [input topic, partition, first, last]"
    return record


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def differences(rebuilt: dict[str, Any], published: dict[str, Any]) -> str:
    """Which fields of a record differ from the re-derived one, named."""
    names = sorted(
        k for k in rebuilt.keys() | published.keys() if rebuilt.get(k) != published.get(k)
    )
    if not names:
        return "its bytes are not canonical"
    shown = ", ".join(
        f"{name} {published.get(name)!r} (re-derived {rebuilt.get(name)!r})"
        if name != "runs"
        else "runs"
        for name in names
    )
    return f"differs from the re-execution in {shown}"


def equivocations(published: Iterable[tuple[bytes, dict[str, Any]]]) -> list[Divergence]:
    """Two different records for one partition and epoch: what a verifier must raise
    (published: each record as sent, and as parsed)."""
    first: dict[tuple[int, int], tuple[bytes, dict[str, Any]]] = {}
    found = []
    for value, record in published:
        key = (record["partition"], record["epoch"])
        seen_value, seen = first.setdefault(key, (value, record))
        if seen_value != value:
            same = seen["state_root"] == record["state_root"]
            what = "the same root, other fields" if same else "different roots"
            found.append(Divergence(key[0], key[1], f"equivocation: two records with {what}"))
    return found
