"""The part store a partition's state lives in locally, and its in-memory twin.

One store per partition. It holds the stored parts (parts.py) and the changelog offset
a restore resumes from; both change together in one atomic write, so the offset never
claims parts the store lacks. The RocksDB store (stream/store.py) and MemoryPartStore
pass the same contract test (tests/core/test_part_store.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

META_PREFIX = b"\x00"  # keys of the store's own bookkeeping start with it
CHANGELOG_OFFSET = META_PREFIX + b"changelog-offset"


class PartReader(Protocol):
    """What the engine reads its parts through: a key at a time (an account on first
    touch) or a key range in bulk (the loader). Both stores provide it."""

    def get(self, key: bytes) -> bytes | None: ...

    def get_many(self, keys: list[bytes]) -> list[bytes | None]:
        """The values of keys, in their order (None: absent): one call for a batch."""
        ...

    def items(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """Every stored part under prefix (not the store's own bookkeeping), in key order."""
        ...

    def keys(self, prefix: bytes) -> Iterator[bytes]:
        """The keys of items(prefix), without reading their values."""
        ...


class PartStore(PartReader, Protocol):
    def changelog_offset(self) -> int:
        """The changelog offset a restore resumes from (0: the beginning)."""
        ...

    def write(
        self,
        parts: Iterable[tuple[bytes, bytes | None]],
        changelog_offset: int,
        durable: bool = True,
    ) -> None:
        """Put (or, for None, delete) parts and save the offset, atomically.

        durable=False (a restore's batches): a crash may lose this write together with
        every later one until flush(), never an earlier write, never a part without its
        offset; a durable write made later flushes it first.
        """
        ...

    def flush(self) -> None:
        """Make every write so far survive a crash."""
        ...

    def wipe(self) -> None:
        """Forget everything: the next restore starts from the beginning of the changelog."""
        ...

    def write_meta(self, items: Iterable[tuple[bytes, bytes | None]]) -> None:
        """Put (or, for None, delete) bookkeeping keys (META_PREFIX) of their own, atomically:
        local only, never parts and never in the changelog (the risk view's snapshot)."""
        ...


def checked(
    items: Iterable[tuple[bytes, bytes | None]], bookkeeping: bool
) -> Iterator[tuple[bytes, bytes | None]]:
    """items, each key checked to be a part's (write) or, with bookkeeping, a bookkeeping
    key of its own (write_meta: never the changelog offset, which only write() moves)."""
    for key, value in items:
        if bookkeeping:
            if not key.startswith(META_PREFIX) or key == CHANGELOG_OFFSET:
                raise ValueError(f"{key!r} is not a bookkeeping key of its own")
        elif key.startswith(META_PREFIX):
            raise ValueError(f"{key!r} is reserved for the store's bookkeeping")
        yield key, value


def encode_offset(offset: int) -> bytes:
    return offset.to_bytes(8, "big")


def decode_offset(raw: bytes | None) -> int:
    return 0 if raw is None else int.from_bytes(raw, "big")


class MemoryPartStore:
    """A PartStore in a dict: for the crash model and the store contract test."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def get_many(self, keys: list[bytes]) -> list[bytes | None]:
        return [self.data.get(key) for key in keys]

    def items(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        for key in self.keys(prefix):
            yield key, self.data[key]

    def keys(self, prefix: bytes) -> Iterator[bytes]:
        for key in sorted(self.data):
            if key.startswith(prefix) and not key.startswith(META_PREFIX):
                yield key

    def changelog_offset(self) -> int:
        return decode_offset(self.data.get(CHANGELOG_OFFSET))

    def write(
        self,
        parts: Iterable[tuple[bytes, bytes | None]],
        changelog_offset: int,
        durable: bool = True,
    ) -> None:
        staged = self._staged(checked(parts, bookkeeping=False))
        staged[CHANGELOG_OFFSET] = encode_offset(changelog_offset)
        self.data = staged

    def flush(self) -> None:
        pass

    def wipe(self) -> None:
        self.data = {}

    def write_meta(self, items: Iterable[tuple[bytes, bytes | None]]) -> None:
        self.data = self._staged(checked(items, bookkeeping=True))

    def _staged(self, items: Iterable[tuple[bytes, bytes | None]]) -> dict[bytes, bytes]:
        """The data with items put (or, for None, deleted): all or nothing, as a RocksDB
        write batch."""
        staged = dict(self.data)
        for key, value in items:
            if value is None:
                staged.pop(key, None)
            else:
                staged[key] = value
        return staged
