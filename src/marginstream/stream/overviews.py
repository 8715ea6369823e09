"""Partitions' overviews (core/outputs/overview.py), made at most once a second each.

The risk page asks every second, from every browser that has it open, and each scrape of
/metrics reads the same figures: one overview per partition per second bounds what they
cost the processing loop, whoever asks (a partition of 100k accounts: BENCHMARKS.md,
"The operator's view").
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from marginstream.core.outputs.overview import partition_overview

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

    def current(self, engines: dict[int, RiskEngine]) -> dict[int, dict[str, Any]]:
        """The overview of each of engines ({partition: engine}), forgetting those of any
        other partition: a closed partition's engine is not kept alive by its overview."""
        for partition in set(self._made) - set(engines):
            del self._made[partition]
        return {partition: self.of(partition, engine) for partition, engine in engines.items()}
