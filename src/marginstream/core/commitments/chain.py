"""The input chain: which records a partition applied, in the order it applied them.

A state root alone cannot be re-derived by anyone else: the live interleaving of orders,
transfers and market records depends on fetch timing. So each partition also commits to
its inputs, as a hash chain, and lists them as runs (topic, partition, first offset,
last offset) in the order applied, which `marginstream verify` repeats.

A link names a record by its SPEC coordinates: for a market record, where it was first
produced (prices or instruments), never the fan-out copy it was read from, so that the
chain is defined by the SPEC topics alone. Records the replay guard skips (seen before:
a fan-out duplicate) change nothing and are not in the chain.

    digest = sha256(KEY ‖ sha256(value))     KEY = 0x00 for no key, else
                                              0x01 ‖ u32 length ‖ key bytes
                                              sha256(value) = 32 zero bytes for no value
    link   = sha256(0x02 ‖ head ‖ u16 len(topic) ‖ topic ‖ u32 partition ‖ u64 offset
                    ‖ digest)

The value enters through its own sha256, so a market record the fan-out cut to its
beginning (stream/fanout.py) is linked by the sha256 of the whole, which the copy carries.
"""

from __future__ import annotations

from hashlib import sha256

LINK_PREFIX = b"\x02"
GENESIS = bytes(32)  # the head before any record

Run = list  # [topic, partition, first offset, last offset]


def value_sha256(value: bytes | None) -> bytes:
    return bytes(32) if value is None else sha256(value).digest()


def record_digest(key: bytes | None, value_hash: bytes) -> bytes:
    """A record's digest from its key and its value's sha256 (value_sha256)."""
    field = b"\x00" if key is None else b"\x01" + len(key).to_bytes(4, "big") + key
    return sha256(field + value_hash).digest()


def digest_of(key: bytes | None, value: bytes | None, whole: tuple[int, str] | None) -> bytes:
    """A record's digest as read: whole, for a copy cut to its beginning, is the original
    value's (length, sha256 hex)."""
    return record_digest(key, bytes.fromhex(whole[1]) if whole else value_sha256(value))


def link(head: bytes, topic: str, partition: int, offset: int, digest: bytes) -> bytes:
    name = topic.encode()
    return sha256(
        b"".join(
            (
                LINK_PREFIX,
                head,
                len(name).to_bytes(2, "big"),
                name,
                partition.to_bytes(4, "big"),
                offset.to_bytes(8, "big"),
                digest,
            )
        )
    ).digest()


class InputChain:
    """The chain's head, and the runs applied since the last commit."""

    def __init__(self, head: bytes = GENESIS) -> None:
        self.head = head
        self.runs: list[Run] = []

    def add(self, topic: str, partition: int, offset: int, digest: bytes) -> None:
        self.head = link(self.head, topic, partition, offset, digest)
        runs = self.runs
        if runs:
            last = runs[-1]
            if last[0] == topic and last[1] == partition and offset > last[3]:
                last[3] = offset
                return
        runs.append([topic, partition, offset, offset])

    def take_runs(self) -> list[Run]:
        runs, self.runs = self.runs, []
        return runs
