"""Fill and transfer ids already used, within the duplicate retention, bounded in size.

An account part must stay small however much the account trades (SPEC section 4: no
state record grows without bound), so an account's used ids are kept in chunks of at most
CHUNK_IDS ids. A new id joins the account's newest chunk, which travels inside the
account part (the account is written anyway when a fill or transfer changes it: no extra
record per input). A chunk that fills up is sealed and written once as a part of its
own, ("ids", "<kind>/<chunk number>/<account>"); the oldest sealed chunk is dropped (its
part deleted) once every id in it is older than the retention, counted back from the
venue's clock: the newest index time (market data), or the account's newest id time if
that is earlier. Not from the account's own records alone: one fill dated a week ahead
once made an account forget all but its last 128 ids, and repeats were applied twice.
With no index price yet, nothing is dropped. A repeat that arrives later than the
retention behind that clock is not caught: memory is bounded by it.

An id is a duplicate when it is held and was used within the retention of the record
that uses it again. Chunks only bound the size of a part; they do not change that rule.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from marginstream.core.delivery.parts import StateKey

CHUNK_IDS = 128  # ids of at most 128 characters: under 20 KiB a chunk
KINDS = ("fill", "transfer")


def chunk_key(kind: str, number: int, account: str) -> StateKey:
    return ("ids", f"{kind}/{number}/{account}")


@dataclass
class _Window:
    """One account's ids of one kind: chunks first, first + 1, ..., oldest first; every
    chunk but the newest is sealed (full)."""

    first: int = 0
    chunks: list[dict[str, int]] = field(default_factory=list)  # id -> event time
    newest: list[int] = field(default_factory=list)  # per chunk: its newest event time
    where: dict[str, int] = field(default_factory=dict)  # id -> the newest chunk holding it
    latest: int = 0  # the newest event time of any id

    def ts_of(self, identifier: str) -> int | None:
        number = self.where.get(identifier)
        return None if number is None else self.chunks[number - self.first][identifier]

    def add_chunk(self, number: int, chunk: dict[str, int]) -> None:
        self.chunks.append(chunk)
        self.newest.append(max(chunk.values(), default=0))
        self.where.update(dict.fromkeys(chunk, number))
        self.latest = max(self.latest, self.newest[-1])

    @property
    def last(self) -> int:
        return self.first + len(self.chunks) - 1


class SeenIds:
    def __init__(self, retention_ms: int) -> None:
        self.retention_ms = retention_ms
        self.windows: dict[tuple[str, str], _Window] = {}
        self.dirty: set[StateKey] = set()  # sealed chunks written or dropped
        # A lazily loaded engine's: loads an account's windows (load_account) before its
        # first use, if they are still in the store.
        self.touch: Callable[[str], object] | None = None

    def seen(self, account: str, kind: str, identifier: str, ts: int) -> bool:
        if self.touch is not None:
            self.touch(account)
        window = self.windows.get((account, kind))
        used = None if window is None else window.ts_of(identifier)
        return used is not None and used >= ts - self.retention_ms

    def remember(self, account: str, kind: str, identifier: str, ts: int, clock: int) -> None:
        """Note an id used at ts, the venue's clock at clock (the caller writes the
        account part, which holds the newest chunk)."""
        if self.touch is not None:
            self.touch(account)
        window = self.windows.get((account, kind))
        if window is None:
            window = self.windows[(account, kind)] = _Window()
        if not window.chunks or len(window.chunks[-1]) >= CHUNK_IDS:
            window.chunks.append({})
            window.newest.append(ts)
        chunk, number = window.chunks[-1], window.last
        chunk[identifier] = ts
        window.newest[-1] = max(window.newest[-1], ts)
        window.where[identifier] = number
        window.latest = max(window.latest, ts)
        if len(chunk) >= CHUNK_IDS:  # sealed: out of the account part, into its own
            self.dirty.add(chunk_key(kind, number, account))
        if clock > 0:
            self._expire(account, kind, window, clock)

    def _expire(self, account: str, kind: str, window: _Window, clock: int) -> None:
        if clock <= 0:
            return
        cutoff = min(window.latest, clock) - self.retention_ms
        while len(window.chunks) > 1 and window.newest[0] < cutoff:
            for identifier in window.chunks.pop(0):
                if window.where.get(identifier) == window.first:
                    del window.where[identifier]
            window.newest.pop(0)
            self.dirty.add(chunk_key(kind, window.first, account))
            window.first += 1

    def take_dirty(self) -> set[StateKey]:
        if not self.dirty:
            return self.dirty
        dirty, self.dirty = self.dirty, set()
        return dirty

    # -- parts ------------------------------------------------------------------------

    def part(self, key: StateKey) -> dict[str, Any] | None:
        """A sealed chunk's stored form; None for a chunk dropped (its part is deleted)."""
        kind, number, account = _parse(key[1])
        window = self.windows.get((account, kind))
        if window is None or not 0 <= number - window.first < len(window.chunks):
            return None
        chunk = window.chunks[number - window.first]
        return {"ids": chunk} if len(chunk) >= CHUNK_IDS else None

    def parts(self) -> dict[StateKey, dict[str, Any] | None]:
        return {
            chunk_key(kind, window.first + i, account): {"ids": chunk}
            for (account, kind), window in self.windows.items()
            for i, chunk in enumerate(window.chunks)
            if len(chunk) >= CHUNK_IDS
        }

    def newest(self, account: str) -> dict[str, Any]:
        """What the account part carries: each kind's newest chunk, if it is not sealed."""
        carried = {}
        for kind in KINDS:
            window = self.windows.get((account, kind))
            if window is not None and window.chunks and len(window.chunks[-1]) < CHUNK_IDS:
                carried[kind] = {"n": window.last, "ids": window.chunks[-1]}
        return carried

    @classmethod
    def from_parts(
        cls,
        sealed: Iterable[tuple[StateKey, Any]],
        carried: Iterable[tuple[str, dict[str, Any]]],
        retention_ms: int,
    ) -> SeenIds:
        """From the sealed chunks' parts, and what each account part carries (newest())."""
        seen = cls(retention_ms)
        by_account: dict[str, list[tuple[StateKey, Any]]] = {}
        for key, data in sealed:
            by_account.setdefault(_parse(key[1])[2], []).append((key, data))
        newest = dict(carried)
        for account in dict.fromkeys([*by_account, *newest]):
            seen.load_account(account, newest.get(account, {}), by_account.get(account, ()))
        return seen

    def load_account(
        self, account: str, carried: dict[str, Any], sealed: Iterable[tuple[StateKey, Any]]
    ) -> None:
        """One account's windows, as from_parts builds them, when a lazily loaded engine
        first touches the account: what its part carries and its sealed chunks' parts."""
        found: dict[str, dict[int, dict[str, int]]] = {}
        for key, data in sealed:
            kind, number, _ = _parse(key[1])
            found.setdefault(kind, {})[number] = dict(data["ids"])
        for kind, chunk in carried.items():
            found.setdefault(kind, {})[int(chunk["n"])] = dict(chunk["ids"])
        for kind, chunks in found.items():
            self.windows[(account, kind)] = _window_of(chunks)

    def unload_account(self, account: str) -> list[StateKey] | None:
        """Forget an account's windows (a lazily loaded engine evicts a clean account); the
        keys of its sealed chunks, to load them again. None, and nothing forgotten, if the
        windows are not exactly what the parts hold (a missing chunk in between)."""
        keys = []
        for kind in KINDS:
            window = self.windows.get((account, kind))
            if window is None:
                continue
            for i, chunk in enumerate(window.chunks[:-1]):
                if len(chunk) < CHUNK_IDS:
                    return None
                keys.append(chunk_key(kind, window.first + i, account))
            if window.chunks and len(window.chunks[-1]) >= CHUNK_IDS:
                keys.append(chunk_key(kind, window.last, account))
        for kind in KINDS:
            self.windows.pop((account, kind), None)
        return keys


def _window_of(chunks: dict[int, dict[str, int]]) -> _Window:
    """The window of chunks by number (a missing number in between is an empty chunk)."""
    window = _Window(first=min(chunks))
    for number in range(window.first, max(chunks) + 1):
        window.add_chunk(number, chunks.get(number, {}))
    return window


def chunk_owner(name: str) -> tuple[str, str, int]:
    """(account, kind, number) of a chunk part's name: the loader indexes chunks by
    account from their keys alone, without decoding them."""
    kind, number, account = _parse(name)
    return account, kind, number


def _parse(name: str) -> tuple[str, int, str]:
    kind, number, account = name.split("/", 2)
    return kind, int(number), account
