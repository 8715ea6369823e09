"""Dead letters, and the log that makes a rejection stick.

A record rejected once must stay rejected when it is read again after a
crash, even if the state has since moved on so that it would now apply (an
instrument defined later, the account's first deposit read later): otherwise
a re-read would apply a record the reference replay never applied. The log
keeps, per source partition, the offsets of its recent dead letters and their
outputs, so a re-read re-publishes the same dead letter instead.
"""

from __future__ import annotations

from typing import Any

import orjson

from marginstream.core.envelope import DEAD_LETTERS, Envelope, Output


def dead_letter(envelope: Envelope, reason: str) -> Output:
    value = envelope.value
    ts = value.get("ts") if isinstance(value, dict) else None
    text = envelope.text
    if text is None:
        text = value if isinstance(value, str) else orjson.dumps(value).decode()
    return Output(
        DEAD_LETTERS,
        envelope.key,
        {
            "reason": reason,
            "topic": envelope.topic,
            "partition": envelope.partition,
            "offset": envelope.offset,
            "key": envelope.key,
            "value": text,
            "ts": ts if isinstance(ts, int) and not isinstance(ts, bool) else None,
        },
    )


class DeadLetterLog:
    """source ("topic:partition") -> {offset: dead letter value}, the most recent `limit` each."""

    def __init__(self, limit: int = 1024, entries: dict[str, dict[int, Any]] | None = None) -> None:
        self.limit = limit
        self.entries: dict[str, dict[int, Any]] = entries or {}

    def find(self, envelope: Envelope) -> Output | None:
        value = self.entries.get(f"{envelope.topic}:{envelope.partition}", {}).get(envelope.offset)
        return None if value is None else Output(DEAD_LETTERS, envelope.key, value)

    def add(self, envelope: Envelope, output: Output) -> None:
        source = self.entries.setdefault(f"{envelope.topic}:{envelope.partition}", {})
        source[envelope.offset] = output.value
        while len(source) > self.limit:
            del source[next(iter(source))]

    def to_dict(self) -> dict[str, Any]:
        return {s: [[o, v] for o, v in offsets.items()] for s, offsets in self.entries.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any], limit: int = 1024) -> DeadLetterLog:
        return cls(limit, {s: {int(o): v for o, v in pairs} for s, pairs in data.items()})
