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


def test_a_full_prefetch_queue_postpones_the_next_fetch_no_longer_than_a_fetch_waits() -> None:
    """Once the bounded queue above is full, librdkafka postpones that partition's next fetch by
    ``fetch.queue.backoff.ms``: its default, 1,000 ms, left a consumer that had emptied its 8 MiB waiting for
    records the broker had ready (a service read 17,000–19,000 events/s from Kafka against 25,000–28,000 with
    10 ms, ``docs/benchmarks.md``, 2026-12-04, midday). By default the postponement is no longer than the fetch's
    own wait, it can be set through PAYEVENTS_KAFKA_CONFIG, and librdkafka accepts it."""
    cfg = KafkaTransport("127.0.0.1:1").consumer_config("g")
    assert int(cfg["fetch.queue.backoff.ms"]) <= int(cfg["fetch.wait.max.ms"])
    Consumer(cfg).close()  # a librdkafka that did not know the property would refuse it here
    custom = KafkaTransport("127.0.0.1:1", {"fetch.queue.backoff.ms": "200"}).consumer_config("g")
    assert custom["fetch.queue.backoff.ms"] == "200"
