"""The local part stores: one RocksDB per partition, under the worker's data directory.

RocksPartStore implements core.delivery.store.PartStore: parts and the changelog offset
a restore resumes from are written in one WriteBatch, so a kill -9 at any instant
leaves a store whose offset matches its parts. The worker writes a store only with
what a committed transaction holds (after the commit) or what a restore read (committed
only), so a store is never ahead of its changelog.

A write that fails (a full disk, an I/O error) raises StoreFailed: the worker stops
(stream/runner.py); it is never taken for a commit to retry.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

import rocksdict

from marginstream.core.delivery.store import (
    CHANGELOG_OFFSET,
    META_PREFIX,
    decode_offset,
    encode_offset,
)
from marginstream.stream.faults import FAULTS


class StoreFailed(RuntimeError):
    """A local store could not be written: the worker cannot go on."""


def _options() -> rocksdict.Options:
    options = rocksdict.Options(raw_mode=True)
    options.create_if_missing(True)
    options.set_write_buffer_size(16 * 1024 * 1024)
    return options


class RocksPartStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = rocksdict.Rdict(str(path), options=_options())

    def get(self, key: bytes) -> bytes | None:
        return self.db.get(key)

    def items(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        for key, value in self.db.items(from_key=prefix):  # rocksdict's own loop: faster
            if not key.startswith(prefix):
                break
            if not key.startswith(META_PREFIX):
                yield key, value

    def keys(self, prefix: bytes) -> Iterator[bytes]:
        """items(prefix)'s keys: RocksDB still reads the blocks, Python decodes nothing."""
        for key in self.db.keys(from_key=prefix):
            if not key.startswith(prefix):
                break
            if not key.startswith(META_PREFIX):
                yield key

    def changelog_offset(self) -> int:
        return decode_offset(self.db.get(CHANGELOG_OFFSET))

    def write(self, parts: Iterable[tuple[bytes, bytes | None]], changelog_offset: int) -> None:
        batch = rocksdict.WriteBatch(raw_mode=True)
        for key, value in parts:
            if key.startswith(META_PREFIX):
                raise ValueError(f"{key!r} is reserved for the store's bookkeeping")
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        batch.put(CHANGELOG_OFFSET, encode_offset(changelog_offset))
        try:
            FAULTS.fail("store-write", disk_full=True)
            self.db.write(batch)
        except Exception as error:  # rocksdict raises a bare Exception ("IO error: ...")
            reason = f"the local store {self.path} could not be written: {error}"
            raise StoreFailed(reason) from error

    def write_meta(self, items: Iterable[tuple[bytes, bytes | None]]) -> None:
        """Bookkeeping keys of derived data (the view's snapshot), in one batch of their own."""
        batch = rocksdict.WriteBatch(raw_mode=True)
        for key, value in items:
            if not key.startswith(META_PREFIX) or key == CHANGELOG_OFFSET:
                raise ValueError(f"{key!r} is not a bookkeeping key of its own")
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        try:
            self.db.write(batch)
        except Exception as error:  # rocksdict raises a bare Exception ("IO error: ...")
            reason = f"the local store {self.path} could not be written: {error}"
            raise StoreFailed(reason) from error

    def wipe(self) -> None:
        self.close()
        shutil.rmtree(self.path, ignore_errors=True)
        self.db = rocksdict.Rdict(str(self.path), options=_options())

    def close(self) -> None:
        self.db.close()


class StoreDirectory:
    """The stores of one worker, opened on first use and kept open until it stops."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.stores: dict[int, RocksPartStore] = {}

    def of(self, partition: int) -> RocksPartStore:
        store = self.stores.get(partition)
        if store is None:
            store = self.stores[partition] = RocksPartStore(self.root / f"p{partition}")
        return store

    def close(self) -> None:
        for store in self.stores.values():
            store.close()
        self.stores.clear()
