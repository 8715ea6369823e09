"""Where a record was read: a topic and a partition, and an offset within them."""

from __future__ import annotations

from typing import NamedTuple


class Source(NamedTuple):
    """A topic partition as the core names it (SPEC topic names, without a prefix)."""

    topic: str
    partition: int

    def __str__(self) -> str:
        return f"{self.topic}:{self.partition}"

    @classmethod
    def parse(cls, text: str) -> Source:
        """The inverse of str(): "orders:3" -> Source("orders", 3)."""
        topic, colon, partition = text.rpartition(":")
        if not colon or not topic or not partition.isdigit():
            raise ValueError(f"not a source: {text!r}")
        return cls(topic, int(partition))
