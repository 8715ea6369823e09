"""Where a record's bytes become what the engine reads.

The live worker and `marginstream replay` both build envelopes here, so a record that is
too large, or not JSON, is the same dead letter in both. The size limit comes before
JSON is parsed: a hostile record costs a length check, not a parse.
"""

from __future__ import annotations

import hashlib

import orjson

from marginstream.core.inputs.deadletters import EXCERPT_BYTES
from marginstream.core.inputs.envelope import Envelope, NotJson

MAX_RECORD_BYTES = 64 * 1024  # key and value together; SPEC section 4's default


def envelope(
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    limit: int = MAX_RECORD_BYTES,
    whole: tuple[int, str] | None = None,
) -> Envelope:
    """The envelope of a record as read (topic without its prefix; key and value as bytes).

    whole: the original value's length and sha256, when value is only its beginning (the
    market fan-out copies no more than that of a record over the limit).
    """
    key_text = None if key is None else key.decode("utf-8", "replace")
    size = len(key or b"") + max(len(value or b""), whole[0] if whole else 0)  # never less
    decoded: object
    if size > limit:
        decoded = NotJson(f"record of {size} bytes is over the {limit}-byte limit")
    elif value is None:
        decoded = NotJson("no value (a tombstone)")
    else:
        try:
            decoded = orjson.loads(value)
        except orjson.JSONDecodeError as error:
            decoded = NotJson(f"not JSON ({error})")
    # Envelope(...) without its Python __new__: every record read comes through here.
    return tuple.__new__(Envelope, (topic, partition, offset, key_text, decoded, value, whole))


def cut(
    key: bytes | None, value: bytes | None, limit: int
) -> tuple[bytes | None, tuple[int, str] | None]:
    """A record over the limit, cut to its first EXCERPT_BYTES, with its whole's length and
    sha256; any other record as it is. A copy of a record (the market fan-out) never
    grows past what Kafka accepts, and dead-letters the same as the original."""
    if value is None or len(key or b"") + len(value) <= limit:
        return value, None
    return value[:EXCERPT_BYTES], (len(value), hashlib.sha256(value).hexdigest())
