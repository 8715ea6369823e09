"""Reading parts written by earlier versions.

Format 1 (up to commit 93ca5cb) was written by at-least-once workers: each account and
market part carried its own positions ("applied": source -> last offset) and an account
kept the outputs of its recent records ("recent") to re-publish them after a crash;
rejected records were remembered in dead-letter slots ("deadletter/<source>/<n>").
Format 2 replaces all of these with one replay guard per partition (guard.py). A state
read from format-1 parts gets a guard that has seen every record the parts record:
the changelog of format 1 was a prefix of the writes in order, so a record is in the
state exactly when some part saw it or a later record of its source.

Parts are upgraded as they are read; a part is rewritten in format 2 the next time it
changes. tests/fixtures/format1 holds a changelog written by 93ca5cb, restored by every
later version in tests/stream/test_upgrade.py.
"""

from __future__ import annotations

from typing import Any

from marginstream.core.delivery.guard import GUARD_KEY, ReplayGuard
from marginstream.core.delivery.parts import StateKey, StoredPart
from marginstream.core.delivery.sources import Source


def upgrade(parts: dict[StateKey, StoredPart]) -> dict[StateKey, Any]:
    """Every part in the current format (format-1 only kinds dropped), the guard included."""
    current: dict[StateKey, Any] = {}
    seen: dict[Source, int] = {}
    for key, stored in parts.items():
        if stored.format == 1:
            data = _from_format1(key, stored.data, seen)
            if data is not None:
                current[key] = data
        else:
            current[key] = stored.data
    if GUARD_KEY not in current:
        current[GUARD_KEY] = ReplayGuard(seen).part()
    return current


def _from_format1(key: StateKey, data: Any, seen: dict[Source, int]) -> Any:
    kind, name = key
    if kind == "deadletter":  # slot "<source>/<offset mod n>": {"offset", "letter"}
        _see(seen, name.rpartition("/")[0], data["offset"])
        return None
    if kind == "account":
        for source, offset in data.get("applied", {}).items():
            _see(seen, source, offset)
        return {k: v for k, v in data.items() if k not in ("applied", "recent")}
    if kind == "instrument":
        quote = data["quote"]
        for source, offset in quote.get("applied", {}).items():
            _see(seen, source, offset)
        return {**data, "quote": {k: v for k, v in quote.items() if k != "applied"}}
    if kind == "index":
        for source, offset in data.get("applied", {}).items():
            _see(seen, source, offset)
        return {k: v for k, v in data.items() if k != "applied"}
    return data


def _see(seen: dict[Source, int], source_text: str, offset: int) -> None:
    source = Source.parse(source_text)
    seen[source] = max(seen.get(source, -1), int(offset))
