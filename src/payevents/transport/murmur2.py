"""The Java client's murmur2 partitioner (``Utils.murmur2`` + ``toPositive(h) % partitions``).

kafka-python, the Java producer and confluent-kafka with ``partitioner=murmur2_random`` place a key
on the same partition with it, so the embedded log and Kafka agree on partition numbers.
"""

from __future__ import annotations

from functools import lru_cache

_M = 0x5BD1E995
_SEED = 0x9747B28C
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """The 32-bit murmur2 hash as the Java client computes it, as a signed int."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    n4 = length & ~3
    # little-endian 4-byte blocks
    for i in range(0, n4, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    rest = length & 3
    if rest == 3:
        h ^= data[n4 + 2] << 16
    if rest >= 2:
        h ^= data[n4 + 1] << 8
    if rest >= 1:
        h ^= data[n4]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - 0x100000000 if h & 0x80000000 else h


@lru_cache(maxsize=65536)
def partition_for(key: bytes, partitions: int) -> int:
    """``toPositive(murmur2(key)) % partitions``, the Java DefaultPartitioner's rule for a keyed record."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions
