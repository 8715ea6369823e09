"""How state parts are keyed and stored.

A part is one account, one instrument (definition and quotes), one index, one chunk of
an account's used fill or transfer ids (core/books/seenids.py), or the replay guard. Its key
is "kind/name"; its stored value is a format byte, an 8-byte big-endian version and the
part as JSON (a deleted part is a Kafka tombstone, and gone from the store). The version
is the partition's commit number: every part a commit writes carries it, so in a
changelog that only committed transactions reach, a key's versions never decrease, and
a restore can refuse to go backwards (restore.py). The format byte says how to read the
JSON (formats.py reads every earlier one).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson

StateKey = tuple[str, str]  # ("account", id), ("instrument", symbol), ("ids", chunk)...

FORMAT = 4  # what this version writes; formats.py reads 1 to 4
HEADER_BYTES = 1 + 8  # a stored part: its format byte, then its version (8 bytes)
PART_KINDS = ("account", "instrument", "index", "portfolio", "delivery", "ids", "fund")
FORMAT1_KINDS = ("deadletter",)  # kinds only format 1 wrote


class StoredPart(NamedTuple):
    format: int
    version: int
    data: Any


def part_key(key: StateKey) -> bytes:
    kind, name = key
    return f"{kind}/{name}".encode()


def state_key(raw: bytes) -> StateKey | None:
    """The StateKey a stored key names, or None for a key that is not a state part."""
    kind, slash, name = raw.decode(errors="replace").partition("/")
    if slash and (kind in PART_KINDS or kind in FORMAT1_KINDS):
        return kind, name
    return None


def encode_part(version: int, data: Any) -> bytes:
    return part_header(version) + orjson.dumps(data)


def part_header(version: int) -> bytes:
    """What every part a commit writes begins with (encode_part): made once per commit."""
    return bytes((FORMAT,)) + version.to_bytes(8, "big")


def format_of(value: bytes | None) -> int | None:
    if not value or len(value) < HEADER_BYTES or not 1 <= value[0] <= FORMAT:
        return None
    return value[0]


def version_of(value: bytes | None) -> int:
    """The version a stored value carries; -1 for anything that is not a stored part.

    Read straight from the header, without format_of's call: a restore asks it of every
    changelog record."""
    if value and len(value) >= HEADER_BYTES and 0 < value[0] <= FORMAT:
        return int.from_bytes(value[1:HEADER_BYTES], "big")
    return -1


def decode_part(value: bytes) -> StoredPart:
    found = format_of(value)
    if found is None:
        raise ValueError(f"not a stored part (format byte {value[:1]!r})")
    return StoredPart(found, version_of(value), orjson.loads(value[HEADER_BYTES:]))
