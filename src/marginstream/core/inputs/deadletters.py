"""Dead letters: a record that cannot be applied, published with the reason it was refused.

A dead letter is bounded whatever the record was: it carries an excerpt of the original
value (at most EXCERPT_BYTES), with the value's length and sha256 to find the whole of
it upstream, a key cut to MAX_KEY_CHARS, and a reason cut to MAX_REASON_CHARS.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from marginstream.core.inputs.envelope import DEAD_LETTERS, Envelope, NotJson, Output

EXCERPT_BYTES = 1024
MAX_KEY_CHARS = 256
MAX_REASON_CHARS = 512  # a reason may quote the record: never more than this of it


def dead_letter(envelope: Envelope, reason: str) -> Output:
    value = envelope.value
    ts = value.get("ts") if isinstance(value, dict) else None
    raw = envelope.raw
    if raw is None:  # built in memory (tests, the replay of a line): its JSON text
        raw = b"" if isinstance(value, NotJson) else orjson.dumps(value)
    key = None if envelope.key is None else envelope.key[:MAX_KEY_CHARS]
    if len(reason) > MAX_REASON_CHARS:
        reason = reason[: MAX_REASON_CHARS - 3] + "..."
    return Output(
        DEAD_LETTERS,
        key,
        {
            "reason": reason,
            "topic": envelope.topic,
            "partition": envelope.partition,
            "offset": envelope.offset,
            "key": key,
            **original(raw, envelope.whole),
            "ts": ts if isinstance(ts, int) and not isinstance(ts, bool) else None,
        },
    )


def original(raw: bytes, whole: tuple[int, str] | None = None) -> dict[str, Any]:
    """What a dead letter says of the original value: an excerpt, its length and sha256
    (whole gives these when raw is only the original's beginning)."""
    length, digest = whole or (len(raw), hashlib.sha256(raw).hexdigest())
    return {"value": excerpt(raw), "value_bytes": length, "value_sha256": digest}


def excerpt(raw: bytes) -> str:
    """The first EXCERPT_BYTES of raw as text (invalid bytes replaced), cut to at most
    EXCERPT_BYTES of UTF-8. It depends on those first bytes alone, so a copy cut to them
    (the market fan-out's) gives the same excerpt as the original."""
    text = raw[:EXCERPT_BYTES].decode(errors="replace")
    return text.encode()[:EXCERPT_BYTES].decode(errors="ignore")
