"""The restore rule: which changelog records a partition's local store keeps.

A restore reads the changelog partition from the offset the store saved, in log order,
committed transactions only, and applies each record unless the store already holds a
newer version of its key. With fenced transactional writers the versions of a key only
grow along the log, so the rule changes nothing in a correct history; it is there so
that a restore never goes backwards if one did not, and it counts such records
(`stale`) so that tests and /health/ can show that none ever arrived.

restore_batch applies the rule to a whole fetch at once, with the result of applying it
record by record (tests/core/test_restore.py checks that against a store written one
record at a time): the store is asked once for the versions of the batch's keys, and a
key's later records in the batch are judged against its newest version so far.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from marginstream.core.delivery.parts import version_of

# The versions a store holds for keys, in their order (-1: none), asked once per batch.
StoredVersions = Callable[[list[bytes]], Iterable[int]]


@dataclass
class Restored:
    """What one batch of changelog records leaves to write (last value per key)."""

    writes: dict[bytes, bytes | None] = field(default_factory=dict)
    # every key of the batch: the version the store holds for it once writes are written
    versions: dict[bytes, int] = field(default_factory=dict)
    read: int = 0
    kept: int = 0
    stale: int = 0  # records older than what the store holds: never expected


def restore_batch(
    records: Sequence[tuple[bytes, bytes | None]], stored_versions: StoredVersions
) -> Restored:
    """Apply the restore rule to records (key, value) in log order.

    stored_versions(keys) are the versions the store holds for keys (-1: none).
    A record with no value (a deletion, which this version never writes) deletes.
    """
    keys = list(dict.fromkeys(key for key, _ in records))
    known = dict(zip(keys, stored_versions(keys), strict=True))
    writes: dict[bytes, bytes | None] = {}
    stale = 0
    for key, value in records:
        if value is None:
            writes[key] = None
            known[key] = -1
            continue
        incoming = version_of(value)
        if incoming >= known[key]:
            writes[key] = value
            known[key] = incoming
        else:
            stale += 1
    read = len(records)
    return Restored(writes, known, read, read - stale, stale)
