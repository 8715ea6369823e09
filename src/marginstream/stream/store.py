"""The local part stores: one RocksDB per partition, under the worker's data directory.

RocksPartStore implements core.delivery.store.PartStore: parts and the changelog offset
a restore resumes from are written in one WriteBatch, so a kill -9 at any instant
leaves a store whose offset matches its parts. The worker writes a store only with
what a committed transaction holds (after the commit) or what a restore read (committed
only), so a store is never ahead of its changelog.

A commit's write goes through the write-ahead log (a kill -9 loses none). A restore's
batches do not (durable=False: the log would double what they cost): they live in the
memtable until RocksDB flushes it, and a kill -9 loses the newest of them, together with
their offset. What survives is still a prefix of the writes, offsets included, as long
as no logged write follows an unflushed unlogged one (RocksDB would replay the logged
write without the ones before it): so a durable write flushes first when one is pending,
and a restore flushes at its end (docs/failure-model.md).

A write that fails (a full disk, an I/O error) raises StoreFailed: the worker stops
(stream/runner.py); it is never taken for a commit to retry.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

import rocksdict

from marginstream.core.delivery.store import (
    CHANGELOG_OFFSET,
    META_PREFIX,
    checked,
    decode_offset,
    encode_offset,
)
from marginstream.stream.faults import FAULTS

log = logging.getLogger(__name__)


class StoreFailed(RuntimeError):
    """A local store could not be written: the worker cannot go on."""


def _options() -> rocksdict.Options:
    options = rocksdict.Options(raw_mode=True)
    options.create_if_missing(True)
    options.set_write_buffer_size(16 * 1024 * 1024)
    return options


def _batch(items: Iterable[tuple[bytes, bytes | None]]) -> rocksdict.WriteBatch:
    """A batch putting items (or, for None, deleting them)."""
    batch = rocksdict.WriteBatch(raw_mode=True)
    put, delete = batch.put, batch.delete
    for key, value in items:
        if value is None:
            delete(key)
        else:
            put(key, value)
    return batch


def _unlogged() -> rocksdict.WriteOptions:
    options = rocksdict.WriteOptions()
    options.disable_wal = True
    return options


UNLOGGED = _unlogged()


class RocksPartStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = rocksdict.Rdict(str(path), options=_options())
        self.unflushed = False  # an unlogged write is in the memtable only

    def get(self, key: bytes) -> bytes | None:
        return self.db.get(key)

    def get_many(self, keys: list[bytes]) -> list[bytes | None]:
        return self.db.get(keys) if keys else []

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

    def write(
        self,
        parts: Iterable[tuple[bytes, bytes | None]],
        changelog_offset: int,
        durable: bool = True,
    ) -> None:
        batch = _batch(checked(parts, bookkeeping=False))
        batch.put(CHANGELOG_OFFSET, encode_offset(changelog_offset))
        with self._writing():
            FAULTS.fail("store-write", disk_full=True)
            if durable:
                self._flush_unlogged()
                self.db.write(batch)
            else:
                self.db.write(batch, UNLOGGED)
                self.unflushed = True

    def write_meta(self, items: Iterable[tuple[bytes, bytes | None]]) -> None:
        """Bookkeeping keys of derived data (the view's snapshot), in one batch of their own."""
        batch = _batch(checked(items, bookkeeping=True))
        with self._writing():
            self._flush_unlogged()  # a logged write never goes ahead of unlogged ones
            self.db.write(batch)

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        try:
            yield
        except Exception as error:  # rocksdict raises a bare Exception ("IO error: ...")
            reason = f"the local store {self.path} could not be written: {error}"
            raise StoreFailed(reason) from error

    def flush(self) -> None:
        try:
            self._flush_unlogged()
        except Exception as error:
            reason = f"the local store {self.path} could not be flushed: {error}"
            raise StoreFailed(reason) from error

    def _flush_unlogged(self) -> None:
        if self.unflushed:
            self.db.flush(True)
            self.unflushed = False

    def wipe(self) -> None:
        self.db.close()
        shutil.rmtree(self.path, ignore_errors=True)
        self.db = rocksdict.Rdict(str(self.path), options=_options())
        self.unflushed = False

    def close(self) -> None:
        try:
            self._flush_unlogged()
        except Exception as error:  # behind, never ahead: the next restore reads the rest
            log.error("the local store %s could not be flushed: %s", self.path, error)
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
