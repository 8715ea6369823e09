"""Runs of records that a live system applies in the same order as a replay.

Within one partition, Kafka keeps the order of one topic, not the order between
two topics: a worker may read a partition's orders before its transfers even if
they were produced the other way round. A run of records from one topic (and
market data through the fan-out) is applied in order; waiting for each run to be
applied before producing the next makes the live interleaving equal the file's.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import groupby
from typing import Any


def segments(records: Iterable[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Maximal runs of consecutive records on the same topic."""
    return [list(run) for _, run in groupby(records, key=lambda record: record["topic"])]
