"""A Kafka consumer's prefetch queue is bounded by payevents' default (librdkafka's own, 64 MiB per consumer,
grew a draining worker's RSS by ~90 MiB), can still be set through PAYEVENTS_KAFKA_CONFIG, and librdkafka
accepts the resulting configuration."""

from __future__ import annotations

from confluent_kafka import Consumer

from payevents.contracts.channel import MAX_RECORD_BYTES
from payevents.transport.kafka import KafkaTransport


def test_prefetch_queue_is_bounded_by_default_and_configurable() -> None:
    cfg = KafkaTransport("127.0.0.1:1").consumer_config("g")
    kbytes = int(cfg["queued.max.messages.kbytes"])
    assert MAX_RECORD_BYTES <= kbytes * 1024 <= 16 * 1024 * 1024
    Consumer(cfg).close()  # librdkafka takes it as it is (fetch.max.bytes adjusted to the queue)
    custom = KafkaTransport("127.0.0.1:1", {"queued.max.messages.kbytes": "4096"}).consumer_config("g")
    assert custom["queued.max.messages.kbytes"] == "4096"
