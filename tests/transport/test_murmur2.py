"""murmur2 against the Java client's published vectors, and against confluent-kafka's murmur2_random."""

from __future__ import annotations

from typing import Any

import pytest

from payevents.transport.murmur2 import murmur2, partition_for


@pytest.mark.parametrize(("data", "expected"), [
    # org.apache.kafka.common.utils.Utils.murmur2 (as quoted by Akka's Murmur2Spec)
    (b"1", -1993445489), (b"12", 126087238), (b"123", -267702483), (b"1234", -1614185708), (b"12345", -1188365604),
])
def test_murmur2_matches_the_java_client(data: bytes, expected: int) -> None:
    assert murmur2(data) == expected


@pytest.mark.parametrize(("data", "expected"), [
    # kafka-python's test_murmur2_java_compatibility (Java DefaultPartitioner over 1000 partitions)
    (b"", 681), (b"a", 524), (b"ab", 434), (b"abc", 107), (b"123456789", 566), (b"\x00 ", 742),
])
def test_partition_for_matches_the_java_default_partitioner(data: bytes, expected: int) -> None:
    assert partition_for(data, 1000) == expected


def test_non_ascii_and_long_keys_hash_into_range() -> None:
    for key in (b"\xa4", b"\x81" * 1000, "paiement-é".encode()):
        assert -(2**31) <= murmur2(key) < 2**31
        assert 0 <= partition_for(key, 7) < 7


@pytest.mark.kafka
def test_confluent_kafka_murmur2_random_agrees(kafka_broker: object, unique: str) -> None:
    """A plain confluent-kafka producer with partitioner=murmur2_random (not our wrapper) places each
    key on the partition our murmur2 computes."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    bootstrap = kafka_broker.bootstrap  # type: ignore[attr-defined]
    topic = f"t.m2.{unique}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 12, replication_factor=-1)])[topic].result(10)
    producer = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random"})
    keys = [f"pay_{i}-{unique}".encode() for i in range(100)] + [b"a", b"ab", b"abc", b"123456789"]
    placed: dict[bytes, int] = {}

    def report(err: object, msg: Any) -> None:
        assert err is None
        placed[msg.key()] = msg.partition()

    for key in keys:
        producer.produce(topic, b"x", key=key, on_delivery=report)
    assert producer.flush(15) == 0
    assert placed == {k: partition_for(k, 12) for k in keys}
