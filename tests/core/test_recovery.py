"""A model of the commit protocol's failure modes, run on the real delivery code.

Kafka is modelled as the protocol relies on it: a changelog partition, the group's
committed input offsets and the visible outputs change together when a transaction
commits, and a transactional id's newer producer fences the older one (its commits
fail). Everything else is the code the workers run: PartitionState.apply and seal, the
restore rule, the part stores and load (core/delivery).

Whatever the crash point, commit interval, local store (intact, one commit behind, lost)
and zombie (an owner paused past its session, resumed after another worker took over),
the final state must equal the reference replay's, the visible outputs must be exactly
the reference outputs in order, every changelog key's last record must carry its highest
version, and a store restored from the changelog alone must load the same state.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marginstream.core import Envelope, Output, RiskEngine
from marginstream.core.delivery.parts import encode_part, part_key, version_of
from marginstream.core.delivery.restore import restore_batch
from marginstream.core.delivery.sources import Source
from marginstream.core.delivery.store import MemoryPartStore
from marginstream.core.delivery.unit import PartitionState, Sealed, load
from tests.core.operations import envelopes, histories, opened_venue

RECOVERY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclass
class KafkaModel:
    changelog: list[tuple[bytes, bytes]] = field(default_factory=list)
    offsets: dict[Source, int] = field(default_factory=dict)
    outputs: list[Output] = field(default_factory=list)
    epoch: int = 0  # of the partition's transactional id

    def init_producer(self) -> int:
        """InitProducerId: a new epoch; any older producer's commits now fail."""
        self.epoch += 1
        return self.epoch

    def commit(self, epoch: int, sealed: Sealed, outputs: list[Output]) -> bool:
        if epoch != self.epoch:
            return False  # fenced: the transaction is aborted, nothing becomes visible
        self.changelog.extend(sealed.parts)
        self.offsets.update(sealed.offsets)
        self.outputs.extend(outputs)
        return True


class Owner:
    """One owner of the partition, as stream/partition.py and stream/commit.py run it."""

    def __init__(self, kafka: KafkaModel, store: MemoryPartStore) -> None:
        self.kafka, self.store = kafka, store
        self.epoch = kafka.init_producer()  # fence first, then restore: nothing can follow
        start = store.changelog_offset()
        restored = restore_batch(kafka.changelog[start:], _stored_version(store))
        assert restored.stale == 0
        store.write(restored.writes.items(), len(kafka.changelog))
        self.state: PartitionState = load(store)
        self.outputs: list[Output] = []

    def pending_from(self, records: list[Envelope]) -> list[Envelope]:
        """The records after the committed offsets: what this owner reads."""
        offsets = self.kafka.offsets
        return [e for e in records if e.offset >= offsets.get(e.source, 0)]

    def process(self, envelope: Envelope) -> None:
        self.outputs += self.state.apply(envelope, envelope.source, envelope.offset).outputs

    def commit(self, write_local: bool = True) -> bool:
        sealed = self.state.seal()
        committed = self.kafka.commit(self.epoch, sealed, self.outputs)
        self.outputs = []
        if committed and write_local:
            self.store.write(sealed.parts, len(self.kafka.changelog))
        return committed


def _stored_version(store: MemoryPartStore):
    return lambda keys: [version_of(value) for value in store.get_many(keys)]


def _run_until(owner: Owner, records: list[Envelope], stop: int, every: int) -> None:
    for number, envelope in enumerate(records[:stop], start=1):
        owner.process(envelope)
        if number % every == 0:
            owner.commit()


def _finish(owner: Owner, records: list[Envelope], every: int) -> None:
    pending = owner.pending_from(records)
    _run_until(owner, pending, len(pending), every)
    owner.commit()


@dataclass
class Setup:
    kafka: KafkaModel
    records: list[Envelope]
    reference: RiskEngine
    expected: list[Output]


def _setup(history) -> Setup:
    venue = opened_venue()
    base = copy.deepcopy(venue.engine.parts())
    records = envelopes(history, venue)
    reference = RiskEngine.from_parts(copy.deepcopy(base))
    expected = [output for e in records for output in reference.apply(e).outputs]
    kafka = KafkaModel()
    kafka.changelog = [(part_key(k), encode_part(1, v)) for k, v in sorted(base.items())]
    return Setup(kafka, records, reference, expected)


def _check(setup: Setup, final: Owner) -> None:
    kafka, reference = setup.kafka, setup.reference
    assert final.state.engine.parts() == reference.parts()
    assert kafka.outputs == setup.expected  # each once, in order: nothing lost or doubled
    highest: dict[bytes, int] = {}
    last: dict[bytes, int] = {}
    for key, value in kafka.changelog:
        highest[key] = max(highest.get(key, -1), version_of(value))
        last[key] = version_of(value)
    assert last == highest  # so compaction keeps the newest version of every key
    fresh = Owner(kafka, MemoryPartStore())
    assert fresh.state.engine.parts() == reference.parts()


@RECOVERY
@given(
    histories,
    st.integers(1, 8),
    st.floats(0, 1),
    st.sampled_from(["intact", "behind", "lost"]),
)
def test_any_crash_point_recovers_the_reference_state_and_outputs(history, every, cut, local):
    setup = _setup(history)
    store = MemoryPartStore()
    owner = Owner(setup.kafka, store)
    crash_at = int(cut * len(setup.records))
    _run_until(owner, setup.records, crash_at, every)
    if local == "behind":  # killed between the transaction's commit and the local write
        owner.commit(write_local=False)
    # kill -9: the open transaction is lost with the process (the next owner aborts it).
    if local == "lost":
        store = MemoryPartStore()
    survivor = Owner(setup.kafka, store)
    _finish(survivor, setup.records, every)
    _check(setup, survivor)


@RECOVERY
@given(
    histories,
    st.integers(1, 8),
    st.floats(0, 1),
    st.floats(0, 1),
    st.booleans(),
)
def test_a_paused_owner_that_resumes_after_a_takeover_changes_nothing(
    history, every, pause, extra, regains
):
    """SIGSTOP past the session timeout, another worker takes over, SIGCONT: the zombie
    goes on with its stale state and tries to commit; then it gets the partition back
    (regains) or not. Its writes must never become visible."""
    setup = _setup(history)
    zombie_store = MemoryPartStore()
    zombie = Owner(setup.kafka, zombie_store)
    paused_at = int(pause * len(setup.records))
    _run_until(zombie, setup.records, paused_at, every)

    taker = Owner(setup.kafka, MemoryPartStore())  # fences the paused owner
    _finish(taker, setup.records, every)

    for envelope in setup.records[paused_at : paused_at + int(extra * 20)]:
        zombie.process(envelope)  # resumed: its fetched records, its stale engine
    assert not zombie.commit()  # fenced
    final = Owner(setup.kafka, zombie_store) if regains else taker
    _finish(final, setup.records, every)
    _check(setup, final)


def test_the_local_store_never_goes_backwards():
    """A changelog record older than the store's version is counted, never applied."""
    store = MemoryPartStore()
    key = part_key(("account", "a"))
    store.write([(key, encode_part(5, {"n": 5}))], 10)
    restored = restore_batch(
        [(key, encode_part(4, {"n": 4})), (key, encode_part(6, {"n": 6}))],
        _stored_version(store),
    )
    assert (restored.read, restored.kept, restored.stale) == (2, 1, 1)
    assert restored.writes == {key: encode_part(6, {"n": 6})}
