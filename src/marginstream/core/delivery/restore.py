"""The restore rule: which changelog records a partition's local store keeps.

A restore reads the changelog partition from the offset the store saved, in log order,
committed transactions only, and applies each record unless the store already holds a
newer version of its key. With fenced transactional writers the versions of a key only
grow along the log, so the rule changes nothing in a correct history; it is there so
that a restore never goes backwards if one did not, and it counts such records
(`stale`) so that tests and /health/ can show that none ever arrived.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from marginstream.core.delivery.parts import version_of


@dataclass
class Restored:
    """What one batch of changelog records leaves to write (last value per key)."""

    writes: dict[bytes, bytes | None] = field(default_factory=dict)
    read: int = 0
    kept: int = 0
    stale: int = 0  # records older than what the store holds: never expected


def restore_batch(
    records: Iterable[tuple[bytes, bytes | None]], stored_version: Callable[[bytes], int]
) -> Restored:
    """Apply the restore rule to records (key, value) in log order.

    stored_version(key) is the version the store holds for key (-1: none).
    A record with no value (a deletion, which this version never writes) deletes.
    """
    restored = Restored()
    newest: dict[bytes, int] = {}
    for key, value in records:
        restored.read += 1
        if value is None:
            restored.writes[key] = None
            newest[key] = -1
            restored.kept += 1
            continue
        incoming = version_of(value)
        known = newest.get(key)
        if known is None:
            known = stored_version(key)
        if incoming >= known:
            restored.writes[key] = value
            newest[key] = incoming
            restored.kept += 1
        else:
            restored.stale += 1
    return restored
