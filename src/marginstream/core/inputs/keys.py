"""Which partition an account lives on: Kafka's default partitioner, in the core.

Producers must key every account record by its account and leave the partition to
Kafka's default partitioner (murmur2 of the key, as Java's and librdkafka's
murmur2_random do). The engine checks both (SPEC section 4): a record elsewhere would
split an account across partitions. The hash is Kafka's murmur2, written here so that
the core imports nothing of Kafka; tests compare it with aiokafka's.
"""

from __future__ import annotations

from functools import lru_cache

_M = 0x5BD1E995
_SEED = 0x9747B28C
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash of data (Java's int, read as unsigned)."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    whole = length & ~3
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    rest = length & 3
    if rest == 3:
        h ^= data[whole + 2] << 16
    if rest >= 2:
        h ^= data[whole + 1] << 8
    if rest >= 1:
        h ^= data[whole]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


@lru_cache(maxsize=1 << 16)  # each account record asks; the hash is pure Python
def account_partition(account: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives the key account."""
    return (murmur2(account.encode()) & 0x7FFFFFFF) % partitions
