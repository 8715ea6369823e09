"""Partitions' overviews (core/overview.py), made at most once a second each.

The risk page asks every second, from every browser that has it open, and each scrape of
/metrics reads the same figures: one overview per partition per second bounds what they
cost the processing loop, whoever asks (a partition of 100k accounts: BENCHMARKS.md,
"The operator's view").
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from marginstream.core.overview import partition_overview

if TYPE_CHECKING:
    from marginstream.core.engine import RiskEngine

MAX_AGE = 1.0  # seconds an overview is served before it is made again


class Overviews:
    def __init__(self, max_age: float = MAX_AGE) -> None:
        self.max_age = max_age
        self._made: dict[int, tuple[float, RiskEngine, dict[str, Any]]] = {}

    def of(self, partition: int, engine: RiskEngine) -> dict[str, Any]:
        """The partition's overview, no older than max_age (and of this engine: a
        partition reopened has a new one)."""
        now = time.monotonic()
        made = self._made.get(partition)
        if made is None or made[1] is not engine or now - made[0] > self.max_age:
            made = self._made[partition] = (now, engine, partition_overview(engine))
        return made[2]

    def forget(self, kept: set[int]) -> None:
        """Drop the overviews of partitions no longer open here."""
        for partition in set(self._made) - kept:
            del self._made[partition]
