"""Reading parts written by earlier versions.

Format 1 (up to commit 93ca5cb) was written by at-least-once workers: each account and
market part carried its own positions ("applied": source -> last offset) and an account
kept the outputs of its recent records ("recent") to re-publish them after a crash;
rejected records were remembered in dead-letter slots ("deadletter/<source>/<n>").
Format 2 replaces all of these with one replay guard per partition (guard.py). A state
read from format-1 parts gets a guard that has seen every record the parts record:
the changelog of format 1 was a prefix of the writes in order, so a record is in the
state exactly when some part saw it or a later record of its source.

Format 3 moves an account's used fill and transfer ids ("fills_seen", "transfers_seen")
out of its account part into chunks of at most 128 (core/books/seenids.py; the newest travels
in the account part, the full ones in parts of their own), so that no part grows with
the account's activity. Those ids are moved when read, and the account and
its chunks are rewritten together at the partition's next commit (Upgraded.rewrite).

Format 4 gives each account its leaf in the partition's state tree ("leaf", core/
commitments) and keeps the next one in a part ("delivery/leaves"). Accounts of an
earlier format take theirs in the order of their ids, after any already given, when
the partition is loaded; they and the counter are rewritten at its next commit.

Other parts are upgraded as they are read, and rewritten the next time they change.
tests/fixtures/format1 holds a changelog written by 93ca5cb, restored by every later
version in tests/stream/test_upgrade.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from marginstream.core.books.seenids import SeenIds
from marginstream.core.delivery.guard import GUARD_KEY, ReplayGuard
from marginstream.core.delivery.parts import StateKey, StoredPart
from marginstream.core.delivery.sources import Source
from marginstream.core.engine import FIRST_LEAF, LEAVES_KEY, next_leaf


@dataclass
class Upgraded:
    parts: dict[StateKey, Any]
    rewrite: set[StateKey]  # parts to write at the next commit: their stored form changed


def upgrade(parts: dict[StateKey, StoredPart], retention_ms: int) -> Upgraded:
    """Every part in the current format (format-1 only kinds dropped), the guard included."""
    current = _current(parts)
    rewrite = _move_used_ids(current, retention_ms)
    return Upgraded(current, rewrite | _give_leaves(current))


def _give_leaves(current: dict[StateKey, Any]) -> set[StateKey]:
    """Formats 1 to 3 had no state tree: give each account without a leaf the next one."""
    accounts = [key for key in current if key[0] == "account"]
    given = [current[key]["leaf"] for key in accounts if "leaf" in current[key]]
    later = max(given, default=FIRST_LEAF - 1) + 1
    following = max(next_leaf(current.get(LEAVES_KEY)), later)
    without = sorted(key for key in accounts if "leaf" not in current[key])
    for key in without:
        current[key] = {**current[key], "leaf": following}
        following += 1
    if not without:
        return set()
    current[LEAVES_KEY] = {"next": following}
    return {*without, LEAVES_KEY}


def _move_used_ids(current: dict[StateKey, Any], retention_ms: int) -> set[StateKey]:
    """Formats 1 and 2 kept an account's used ids in its part: move them to chunks."""
    ids = SeenIds(retention_ms)
    moved: set[StateKey] = set()
    for key, data in current.items():
        if key[0] != "account" or "fills_seen" not in data:
            continue
        for kind, field in (("fill", "fills_seen"), ("transfer", "transfers_seen")):
            for identifier, ts in data[field].items():
                ids.remember(key[1], kind, identifier, ts, clock=0)  # none dropped here
        moved.add(key)
    for key in moved:
        data = current[key]
        current[key] = {k: v for k, v in data.items() if k not in ("fills_seen", "transfers_seen")}
        newest = ids.newest(key[1])
        if newest:
            current[key]["ids"] = newest
    ids.take_dirty()
    chunks = ids.parts()
    current.update(chunks)
    return moved | set(chunks)


def _current(parts: dict[StateKey, StoredPart]) -> dict[StateKey, Any]:
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
