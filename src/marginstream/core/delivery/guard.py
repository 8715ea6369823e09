"""The replay guard: a record this state has already seen changes nothing.

Each partition's state carries, per source, the offset of the last record it applied or
dead-lettered. Records arrive in offset order per source, so one number per source says
whether a record is new. Re-reads happen for two reasons, and both are harmless here:

- the market fan-out is at least once, so an engine can receive a market record twice;
- an operator may move a group's offsets back.

A skipped record publishes nothing: its outputs were committed in the same transaction as
the state that records it was seen.
"""

from __future__ import annotations

from marginstream.core.delivery.sources import Source

GUARD_KEY = ("delivery", "seen")  # the state part the guard is stored in


class ReplayGuard:
    def __init__(self, seen: dict[Source, int] | None = None) -> None:
        self.seen: dict[Source, int] = dict(seen or {})

    def admits(self, source: Source, offset: int) -> bool:
        """True for a record this state has not seen; it is then counted as seen."""
        if offset <= self.seen.get(source, -1):
            return False
        self.seen[source] = offset
        return True

    def part(self) -> dict[str, int]:
        return {str(source): offset for source, offset in sorted(self.seen.items())}

    @classmethod
    def from_part(cls, data: dict[str, int] | None) -> ReplayGuard:
        return cls({Source.parse(text): int(offset) for text, offset in (data or {}).items()})
