"""What goes into the engine and what comes out of it."""

from __future__ import annotations

from typing import Any, NamedTuple

from marginstream.core.delivery.sources import Source

DECISIONS = "decisions"
LIQUIDATIONS = "liquidations"
LIQUIDATION_ORDERS = "liquidation-orders"  # orders, cancels and adl records (core/liquidation)
DEAD_LETTERS = "dead-letters"


class Envelope(NamedTuple):
    """A record as read from a topic: its source position, key and decoded JSON value."""

    topic: str
    partition: int
    offset: int
    key: str | None
    value: Any
    raw: bytes | None = None  # the original value, for dead letters, when the reader has it
    # When raw is only the beginning of the original: the original's length and sha256.
    whole: tuple[int, str] | None = None

    @property
    def source(self) -> Source:
        return tuple.__new__(Source, (self.topic, self.partition))  # Source(), uncalled


class Output(NamedTuple):
    topic: str
    key: str | None
    value: dict[str, Any]


def published_by(partition: int, output: Output, from_market: bool) -> bool:
    """Whether partition publishes output: every partition applies each market record, and
    its dead letter is published once, by partition 0."""
    return not from_market or output.topic != DEAD_LETTERS or partition == 0


class NotJson(str):
    """A value whose bytes did not decode as JSON; the text says why."""
