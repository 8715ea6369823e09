"""The restore path against the restore rule applied one record at a time, and what a
kill -9 leaves of a store written without RocksDB's write-ahead log. No broker: the
reader's batch step is driven with the records a fetch would return.

The fast path (stream/changelog.py: whole fetches, the store's versions asked once per
batch or not at all for a store that began empty, batches written without the log)
must leave exactly the store the rule leaves when each record is applied in turn into a
MemoryPartStore: the same parts, the same offset, the same count of stale records,
whatever the history (versions growing, stale records, deletions, parts already in the
store) and wherever the restore is interrupted and resumed (a kill -9 leaves a prefix of
the batches: test_a_kill_leaves_whole_batches_with_their_offset).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import NamedTuple

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marginstream.core.delivery.parts import encode_part, version_of
from marginstream.core.delivery.store import MemoryPartStore
from marginstream.stream.changelog import ChangelogReader, Reading
from marginstream.stream.store import RocksPartStore

KEYS = [b"account/a", b"account/b", b"account/c", b"index/X", b"ids/orders-0"]


class Message(NamedTuple):
    """What the reader uses of aiokafka's ConsumerRecord."""

    offset: int
    key: bytes
    value: bytes | None


@st.composite
def histories(draw: st.DrawFn) -> tuple[dict[bytes, int], list[tuple[bytes, bytes | None]]]:
    """Parts already in the store (key: version), and changelog records after them: the
    versions mostly grow, some records are stale, some delete, a few are no part at all."""
    stored = draw(st.dictionaries(st.sampled_from(KEYS), st.integers(0, 30), max_size=4))
    records: list[tuple[bytes, bytes | None]] = []
    version = draw(st.integers(0, 20))
    for _ in range(draw(st.integers(0, 60))):
        key = draw(st.sampled_from(KEYS))
        kind = draw(st.sampled_from(["newer"] * 6 + ["same", "older", "delete", "garbage"]))
        if kind == "newer":
            version += draw(st.integers(1, 3))
        value = {
            "newer": encode_part(version, {"v": version}),
            "same": encode_part(version, {"again": version}),
            "older": encode_part(max(0, version - draw(st.integers(1, 10))), {"old": 1}),
            "delete": None,
            "garbage": b"\x07no part",
        }[kind]
        records.append((key, value))
    return stored, records


def one_record_at_a_time(
    stored: dict[bytes, int], start: int, records: list[tuple[bytes, bytes | None]]
) -> tuple[MemoryPartStore, int]:
    """The restore rule as written: each record in turn, into the in-memory store."""
    store = MemoryPartStore()
    store.write([(key, encode_part(v, {"stored": v})) for key, v in stored.items()], start)
    stale = 0
    for offset, (key, value) in enumerate(records, start=start):
        if value is not None and version_of(value) < version_of(store.get(key)):
            stale += 1
            store.write([], offset + 1)
        else:
            store.write([(key, value)], offset + 1)
    return store, stale


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    histories(),
    st.integers(0, 5),
    st.lists(st.integers(1, 12), min_size=1, max_size=20),
    st.lists(st.integers(0, 60), max_size=3),
    st.integers(0, 4),
    st.booleans(),
)
def test_the_fast_path_leaves_the_store_of_the_rule_applied_record_by_record(
    history, start, fetch_sizes, interruptions, refetched, standby
):
    stored, records = history
    expected, expected_stale = one_record_at_a_time(stored, start, records)
    end = start + len(records)
    with tempfile.TemporaryDirectory() as directory:
        store = RocksPartStore(Path(directory) / "p0")
        try:
            if stored or start:
                parts = [(key, encode_part(v, {"stored": v})) for key, v in stored.items()]
                store.write(parts, start)
            reader = ChangelogReader("unused:9092", "changelog")
            reading = Reading.of(store, None if standby else end)
            position, sizes = start, iter(fetch_sizes * 10)
            while position < end:
                if position - start in interruptions:  # stopped, and a new reading begins
                    interruptions.remove(position - start)
                    store.flush()
                    reading = Reading.of(store, None if standby else end)
                    position = max(start, position - refetched)  # fetched before a seek
                size = next(sizes, 12)
                fetch = [
                    Message(offset, *records[offset - start])
                    for offset in range(position, min(end, position + size))
                ]
                reader._apply(0, reading, fetch)
                position = fetch[-1].offset + 1
            store.flush()
            assert list(store.items()) == list(expected.items())
            assert store.changelog_offset() == expected.changelog_offset()
            assert reader.counts.read == len(records)
            assert reader.counts.stale == expected_stale
        finally:
            store.close()


def test_a_reading_that_finds_another_writer_asks_the_store(tmp_path: Path):
    """A store that began empty needs no lookups while only the reading writes it; if
    anything else wrote it in between (never expected), the versions come from it."""
    store = RocksPartStore(tmp_path / "p0")
    try:
        reader = ChangelogReader("unused:9092", "changelog")
        reading = Reading.of(store, 10)
        reader._apply(0, reading, [Message(0, b"account/a", encode_part(1, {}))])
        store.write([(b"account/a", encode_part(5, {}))], 3)  # not this reading's
        reader._apply(0, reading, [Message(3, b"account/a", encode_part(2, {}))])
        assert reader.counts.stale == 1 and version_of(store.get(b"account/a")) == 5
    finally:
        store.close()


KILLED_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from marginstream.stream.store import RocksPartStore

    store = RocksPartStore(Path(sys.argv[1]))
    store.write([(b"account/a", b"1")], 1)                 # a commit: logged
    store.write([(b"account/b", b"2")], 2, durable=False)  # restore batches: not logged
    store.write([(b"account/c", b"3")], 3, durable=False)
    store.write([(b"account/d", b"4")], 4)                 # a commit after them
    store.write([(b"account/e", b"5")], 5, durable=False)  # lost with the process
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_a_kill_leaves_whole_batches_with_their_offset(tmp_path: Path):
    """A logged write after unlogged ones must not survive without them: RocksDB replays
    the log over the last flush, so the store flushes them first (without that, this
    store comes back at offset 4 without b and c)."""
    died = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(tmp_path / "p0")], check=False)
    assert died.returncode == -9
    store = RocksPartStore(tmp_path / "p0")
    try:
        assert store.changelog_offset() == 4
        assert [key for key, _ in store.items()] == [
            b"account/a", b"account/b", b"account/c", b"account/d"
        ]  # fmt: skip
    finally:
        store.close()
