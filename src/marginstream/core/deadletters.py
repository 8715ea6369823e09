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
    """Per source ("topic:partition"), the dead letters of its most recent offsets.

    Stored in a ring of `limit` slots per source ("<source>/<offset mod limit>"): adding
    one writes one small part, and nothing is ever deleted, so every stored part can
    carry a version and a restore never has to order a deletion against a write.
    """

    def __init__(self, limit: int = 1024) -> None:
        self.limit = limit
        self.slots: dict[str, dict[str, Any]] = {}  # name -> {"offset", "letter"}

    def _name(self, envelope: Envelope) -> str:
        return f"{envelope.topic}:{envelope.partition}/{envelope.offset % self.limit}"

    def find(self, envelope: Envelope) -> tuple[str, Output] | None:
        """The part name and dead letter of this very record, if it was rejected."""
        name = self._name(envelope)
        slot = self.slots.get(name)
        if slot is None or slot["offset"] != envelope.offset:
            return None
        return name, Output(DEAD_LETTERS, envelope.key, slot["letter"])

    def add(self, envelope: Envelope, output: Output) -> str:
        name = self._name(envelope)
        self.slots[name] = {"offset": envelope.offset, "letter": output.value}
        return name

    def part(self, name: str) -> dict[str, Any] | None:
        return self.slots.get(name)

    def parts(self) -> dict[str, dict[str, Any]]:
        return dict(self.slots)

    @classmethod
    def from_parts(cls, parts: dict[str, dict[str, Any]], limit: int = 1024) -> DeadLetterLog:
        log = cls(limit)
        log.slots.update(parts)
        return log
