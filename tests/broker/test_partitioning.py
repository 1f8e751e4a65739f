"""Our murmur2 must pick the partitions Kafka's default partitioner picks."""

from __future__ import annotations

import random
import uuid

import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as kafka_murmur2

from router.broker.partitioning import murmur2


def keys() -> list[bytes]:
    rng = random.Random(2026)
    out = [b"", b"a", b"ab", b"abc", b"abcd", b"abcde", b"\x00", b"\xff" * 7, b"\x80\x81\x82"]
    out += [bytes(rng.randrange(256) for _ in range(n)) for n in range(300) for _ in range(4)]
    out += [f"user-{i}".encode() for i in range(3000)]
    out += [str(uuid.UUID(int=rng.getrandbits(128))).encode() for _ in range(500)]
    out += [f"üser-ß-漢字-{i}".encode() for i in range(200)]
    out.append(bytes(range(256)) * 20)  # longer than the precompiled word readers
    return out


def test_same_hash_as_aiokafka_on_many_keys() -> None:
    for key in keys():
        assert murmur2(key) == kafka_murmur2(key), key


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7, 12, 64])
def test_same_partition_as_the_default_partitioner(count: int) -> None:
    partitioner = DefaultPartitioner()
    partitions = list(range(count))
    for key in keys()[:2000]:
        assert (murmur2(key) & 0x7FFFFFFF) % count == partitioner(key, partitions, partitions)
