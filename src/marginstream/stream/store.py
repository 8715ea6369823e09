"""The state table's RocksDB store: faust's, except that a restore never goes backwards.

faust restores a table by replaying its changelog from the offset it last saw
acknowledged, over whatever the local RocksDB holds. After a kill -9 the local
store can be ahead of that changelog (written, not yet flushed), and replaying
older changelog records over it would roll some keys back and not others. Here
a changelog record is applied only when its version is at least the stored one.
The store also counts what each restore read, for tests and /health.

StateAccess is how the shell writes the table (local batches, changelog sends) and
saves the changelog offset a restore starts from.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import rocksdict
from faust.stores.rocksdb import Store as RocksDBStore
from faust.tables.table import Table
from faust.types import TP, EventT, StoreT

from marginstream.stream.codec import version_of
from marginstream.stream.faults import FAULTS


class VersionedStore(RocksDBStore):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.changelog_records_read = 0
        self.changelog_records_applied = 0

    def apply_changelog_batch(
        self,
        batch: Iterable[EventT],
        to_key: Callable[[Any], Any],
        to_value: Callable[[Any], Any],
    ) -> None:
        writes: dict[int, rocksdict.WriteBatch] = defaultdict(
            lambda: rocksdict.WriteBatch(raw_mode=True)
        )
        newest: dict[tuple[int, bytes], int] = {}
        offsets: dict[TP, int] = {}
        for event in batch:
            message = event.message
            offsets[message.tp] = max(message.offset, offsets.get(message.tp, -1))
            self.changelog_records_read += 1
            FAULTS.hit("during-recovery", self.changelog_records_read)
            key, value = message.key, message.value
            partition = message.partition
            if value is None:  # state parts are never deleted; honour a deletion anyway
                writes[partition].delete(key)
                newest[(partition, key)] = -1
                continue
            incoming = version_of(value)
            known = newest.get((partition, key))
            if known is None:
                known = version_of(self._db_for_partition(partition).get(key))
            if incoming >= known:
                writes[partition].put(key, value)
                newest[(partition, key)] = incoming
                self.changelog_records_applied += 1
        for partition, write in writes.items():
            self._db_for_partition(partition).write(write)
        for tp, offset in offsets.items():
            self.set_persisted_offset(tp, offset)

    def write_parts(self, partition: int, parts: list[tuple[bytes, bytes]]) -> None:
        """State parts, in write order, written to a partition's local store as one batch."""
        if not parts:
            return
        write = rocksdict.WriteBatch(raw_mode=True)
        for key, value in parts:
            write.put(key, value)
        self._db_for_partition(partition).write(write)

    def partition_items(self, partition: int) -> Iterator[tuple[bytes, bytes]]:
        """Every key and value stored for one partition (faust's offset key included)."""
        db = self._db_for_partition(partition)
        iterator = db.iter()
        iterator.seek_to_first()
        while iterator.valid():
            yield iterator.key(), iterator.value()
            iterator.next()


class StateTable(Table):
    """A faust Table of raw bytes (keys and versioned values) stored in a VersionedStore."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # faust gives tables JSON serializers unless a model says otherwise; the parts are
        # encoded by marginstream.stream.codec and must pass through untouched.
        self.key_serializer = self.value_serializer = "raw"

    def _new_store_by_url(self, url: Any) -> StoreT:
        return VersionedStore(
            url,
            self.app,
            self,
            table_name=self.name,
            key_type=self.key_type,
            key_serializer=self.key_serializer,
            value_serializer=self.value_serializer,
            value_type=self.value_type,
            loop=self.loop,
            options=self.options,
        )


class StateAccess:
    """The state table as the shell writes it: the local store in batches, the changelog by
    the risk handler.

    faust's own `table[key] = value` queues each changelog record through its producer
    buffer and writes the acknowledged offset to RocksDB per record; both cost more than
    the record's whole risk computation. Here the risk handler sends changelog records
    straight to the producer, and the highest acknowledged offset per partition is saved
    once per commit (versions make a restore that reads a little more harmless).

    Local writes are gathered per partition and written as one RocksDB batch before the
    acknowledged offsets are saved (and on revocation, and every LOCAL_BATCH records). A
    kill -9 loses the unwritten ones, but never behind a saved offset: the restore reads
    the changelog from there, so it brings them back.
    """

    LOCAL_BATCH = 2000  # records

    def __init__(self, table: StateTable) -> None:
        self.table = table
        self.unwritten: dict[int, list[tuple[bytes, bytes]]] = {}
        self.unwritten_records = 0

    @property
    def store(self) -> VersionedStore:
        store = self.table.data
        assert isinstance(store, VersionedStore)
        return store

    def write(self, partition: int, parts: list[tuple[bytes, bytes]]) -> None:
        self.unwritten.setdefault(partition, []).extend(parts)
        self.unwritten_records += 1
        # The after-local-write fault point means what it says: written, then killed.
        if self.unwritten_records >= self.LOCAL_BATCH or FAULTS.armed("after-local-write"):
            self.write_local()

    def write_local(self) -> None:
        for partition, parts in self.unwritten.items():
            self.store.write_parts(partition, parts)
        self.unwritten.clear()
        self.unwritten_records = 0

    def partition_items(self, partition: int) -> Any:
        self.write_local()
        return self.store.partition_items(partition)

    def save_acknowledged(self, topic: str, offsets: dict[int, int]) -> None:
        """After a commit (so after a flush): save the changelog offsets Kafka acknowledged
        (partition -> highest offset), the parts first."""
        self.write_local()  # the parts first: a saved offset must have them behind it
        for partition, offset in offsets.items():
            self.store.set_persisted_offset(TP(topic, partition), offset)
