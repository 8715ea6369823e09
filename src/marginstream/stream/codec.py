"""How state parts are stored: key "kind/name", value = magic, version, JSON.

The version is a per-partition write counter. A restore applies a changelog
record only if it is not older than what the local store already holds, so a
local RocksDB that got ahead of its changelog (killed before the changelog was
flushed) is never rolled back key by key into an inconsistent mix.
"""

from __future__ import annotations

from typing import Any

import orjson

from marginstream.core.market import StateKey

MAGIC = b"\x01"
_HEADER = len(MAGIC) + 8


def part_key(key: StateKey) -> bytes:
    kind, name = key
    return f"{kind}/{name}".encode()


def state_key(raw: bytes) -> StateKey | None:
    """The StateKey a stored key names, or None for a key that is not a state part."""
    kind, slash, name = raw.decode(errors="replace").partition("/")
    return (
        (kind, name) if slash and kind in ("account", "instrument", "index", "deadletter") else None
    )


def encode_part(version: int, part: dict[str, Any] | None) -> bytes:
    return MAGIC + version.to_bytes(8, "big") + orjson.dumps(part)


def version_of(value: bytes | None) -> int:
    if not value or value[:1] != MAGIC:
        return -1
    return int.from_bytes(value[1:_HEADER], "big")


def decode_part(value: bytes) -> tuple[int, Any]:
    return version_of(value), orjson.loads(value[_HEADER:])
