"""One contract, two part stores: the in-memory twin the crash model uses, and RocksDB."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from marginstream.core.delivery.store import MemoryPartStore, PartStore
from marginstream.stream.store import RocksPartStore


@pytest.fixture(params=["memory", "rocksdb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PartStore]:
    if request.param == "memory":
        yield MemoryPartStore()
        return
    rocks = RocksPartStore(tmp_path / "p0")
    try:
        yield rocks
    finally:
        rocks.close()


def test_an_empty_store_restores_from_the_beginning(store: PartStore):
    assert list(store.items()) == []
    assert store.changelog_offset() == 0
    assert store.get(b"account/a") is None


def test_parts_and_offset_are_written_together_and_listed_in_key_order(store: PartStore):
    store.write([(b"account/b", b"2"), (b"account/a", b"1")], 17)
    store.write([(b"index/BTC", b"3"), (b"account/b", b"4")], 42)
    assert list(store.items()) == [(b"account/a", b"1"), (b"account/b", b"4"), (b"index/BTC", b"3")]
    assert store.changelog_offset() == 42
    assert store.get(b"account/b") == b"4"


def test_a_deletion_removes_a_part(store: PartStore):
    store.write([(b"account/a", b"1")], 1)
    store.write([(b"account/a", None)], 2)
    assert list(store.items()) == [] and store.changelog_offset() == 2


def test_bookkeeping_keys_are_refused_and_the_batch_is_not_written(store: PartStore):
    store.write([(b"account/a", b"1")], 5)
    with pytest.raises(ValueError, match="reserved"):
        store.write([(b"account/a", b"2"), (b"\x00changelog-offset", b"x")], 9)
    assert list(store.items()) == [(b"account/a", b"1")]
    assert store.changelog_offset() == 5


def test_wipe_forgets_everything(store: PartStore):
    store.write([(b"account/a", b"1")], 5)
    store.wipe()
    assert list(store.items()) == [] and store.changelog_offset() == 0


def test_a_key_range_is_read_alone_with_or_without_its_values(store: PartStore):
    store.write([(b"account/a", b"1"), (b"ids/fill/0/a", b"2"), (b"index/BTC", b"3")], 5)
    store.write_meta([(b"\x00view/header", b"h")])
    assert list(store.items(b"ids/")) == [(b"ids/fill/0/a", b"2")]
    assert list(store.keys(b"i")) == [b"ids/fill/0/a", b"index/BTC"]
    assert list(store.keys(b"instrument/")) == []
    assert [k for k, _ in store.items()] == [b"account/a", b"ids/fill/0/a", b"index/BTC"]


def test_bookkeeping_keys_of_their_own_leave_the_parts_and_offset_alone(store: PartStore):
    store.write([(b"account/a", b"1")], 9)
    store.write_meta([(b"\x00view/header", b"h"), (b"\x00view/ids", b"[]")])
    assert store.get(b"\x00view/header") == b"h" and store.changelog_offset() == 9
    store.write_meta([(b"\x00view/header", None)])
    assert store.get(b"\x00view/header") is None and store.get(b"\x00view/ids") == b"[]"
    with pytest.raises(ValueError):
        store.write_meta([(b"\x00changelog-offset", b"x")])  # only write() moves it
    with pytest.raises(ValueError):
        store.write_meta([(b"account/a", b"2")])  # a part goes through write()
    store.wipe()
    assert store.get(b"\x00view/ids") is None  # a wipe drops a snapshot with the rest


def test_get_many_answers_in_the_order_asked(store: PartStore):
    store.write([(b"account/a", b"1"), (b"account/b", b"2")], 3)
    assert store.get_many([b"account/b", b"account/x", b"account/a"]) == [b"2", None, b"1"]
    assert store.get_many([]) == []


def test_writes_that_are_not_durable_read_like_the_others(store: PartStore):
    store.write([(b"account/a", b"1"), (b"account/b", b"2")], 4, durable=False)
    store.write([(b"account/a", None)], 6, durable=False)
    assert list(store.items()) == [(b"account/b", b"2")] and store.changelog_offset() == 6
    store.write([(b"account/c", b"3")], 7)
    store.flush()
    assert list(store.items()) == [(b"account/b", b"2"), (b"account/c", b"3")]
    assert store.changelog_offset() == 7
