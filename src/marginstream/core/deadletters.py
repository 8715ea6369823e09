"""Dead letters: a record that cannot be applied, published with the reason it was refused."""

from __future__ import annotations

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
