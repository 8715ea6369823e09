"""Fill and transfer ids already used, within the duplicate retention, outside the accounts.

An account part must stay small however much the account trades (SPEC section 4: no
state record grows without bound), so the ids an account used are kept apart from it,
in chunks of at most CHUNK_IDS ids, one state part per chunk:
("ids", "<kind>/<chunk number>/<account>"). A new id joins the account's newest chunk;
the oldest chunk is dropped (its part deleted) once every id in it is older than the
retention, counted back from the newest event time the account has used an id at.

An id is a duplicate when it is held and was used within the retention of the record
that uses it again. Chunks only bound the size of a part; they do not change that rule.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from marginstream.core.delivery.parts import StateKey

CHUNK_IDS = 256  # ids of at most 128 characters: under 40 KiB a part
KINDS = ("fill", "transfer")


def chunk_key(kind: str, number: int, account: str) -> StateKey:
    return ("ids", f"{kind}/{number}/{account}")


@dataclass
class _Window:
    """One account's ids of one kind: chunks first, first + 1, ..., oldest first."""

    first: int = 0
    chunks: list[dict[str, int]] = field(default_factory=list)  # id -> event time
    newest: list[int] = field(default_factory=list)  # per chunk: its newest event time
    where: dict[str, int] = field(default_factory=dict)  # id -> the newest chunk holding it
    latest: int = 0  # the newest event time of any id

    def ts_of(self, identifier: str) -> int | None:
        number = self.where.get(identifier)
        return None if number is None else self.chunks[number - self.first][identifier]


class SeenIds:
    def __init__(self, retention_ms: int) -> None:
        self.retention_ms = retention_ms
        self.windows: dict[tuple[str, str], _Window] = {}
        self.dirty: set[StateKey] = set()

    def seen(self, account: str, kind: str, identifier: str, ts: int) -> bool:
        window = self.windows.get((account, kind))
        used = None if window is None else window.ts_of(identifier)
        return used is not None and used >= ts - self.retention_ms

    def remember(self, account: str, kind: str, identifier: str, ts: int) -> None:
        window = self.windows.get((account, kind))
        if window is None:
            window = self.windows[(account, kind)] = _Window()
        if not window.chunks or len(window.chunks[-1]) >= CHUNK_IDS:
            window.chunks.append({})
            window.newest.append(ts)
        number = window.first + len(window.chunks) - 1
        window.chunks[-1][identifier] = ts
        window.newest[-1] = max(window.newest[-1], ts)
        window.where[identifier] = number
        window.latest = max(window.latest, ts)
        self.dirty.add(chunk_key(kind, number, account))
        self._expire(account, kind, window)

    def _expire(self, account: str, kind: str, window: _Window) -> None:
        cutoff = window.latest - self.retention_ms
        while len(window.chunks) > 1 and window.newest[0] < cutoff:
            for identifier in window.chunks.pop(0):
                if window.where.get(identifier) == window.first:
                    del window.where[identifier]
            window.newest.pop(0)
            self.dirty.add(chunk_key(kind, window.first, account))
            window.first += 1

    def take_dirty(self) -> set[StateKey]:
        dirty, self.dirty = self.dirty, set()
        return dirty

    # -- parts ------------------------------------------------------------------------

    def part(self, key: StateKey) -> dict[str, Any] | None:
        """A chunk's stored form; None for a chunk dropped (its part is deleted)."""
        kind, number, account = _parse(key[1])
        window = self.windows.get((account, kind))
        if window is None or not 0 <= number - window.first < len(window.chunks):
            return None
        return {"ids": window.chunks[number - window.first]}

    def parts(self) -> dict[StateKey, dict[str, Any] | None]:
        return {
            chunk_key(kind, window.first + i, account): {"ids": chunk}
            for (account, kind), window in self.windows.items()
            for i, chunk in enumerate(window.chunks)
        }

    @classmethod
    def from_parts(cls, parts: Iterable[tuple[StateKey, Any]], retention_ms: int) -> SeenIds:
        seen = cls(retention_ms)
        found: dict[tuple[str, str], dict[int, dict[str, int]]] = {}
        for key, data in parts:
            kind, number, account = _parse(key[1])
            found.setdefault((account, kind), {})[number] = dict(data["ids"])
        for (account, kind), chunks in found.items():
            window = seen.windows[(account, kind)] = _Window(first=min(chunks))
            for number in range(window.first, max(chunks) + 1):
                chunk = chunks.get(number, {})
                window.chunks.append(chunk)
                window.newest.append(max(chunk.values(), default=0))
                window.where.update(dict.fromkeys(chunk, number))
            window.latest = max(window.newest)
        return seen


def _parse(name: str) -> tuple[str, int, str]:
    kind, number, account = name.split("/", 2)
    return kind, int(number), account
