"""Kafka-only: the client configuration we insist on, and failures surfacing as TransientError."""

from __future__ import annotations

from typing import Any

import pytest

from payevents.errors import ConfigError, TransientError
from payevents.localkafka import FAST_GROUP_CONFIG, LocalKafka, free_port
from payevents.transport import Record
from payevents.transport.kafka import KafkaTransport


def test_producer_config_is_idempotent_murmur2_with_a_bounded_timeout() -> None:
    t = KafkaTransport("b1:9092,b2:9092", {"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN",
                                           "linger.ms": "20", **FAST_GROUP_CONFIG})
    cfg = t.producer_config()
    assert cfg["bootstrap.servers"] == "b1:9092,b2:9092"
    assert (cfg["enable.idempotence"], cfg["acks"], cfg["partitioner"]) == ("true", "all", "murmur2_random")
    assert int(cfg["message.timeout.ms"]) < 300000
    assert cfg["security.protocol"] == "SASL_SSL" and cfg["sasl.mechanism"] == "PLAIN"  # passed through
    assert cfg["linger.ms"] == "20"  # a tunable: the configuration wins
    assert "session.timeout.ms" not in cfg  # a consumer-only setting is not given to the producer


def test_consumer_config_commits_manually_and_takes_overrides() -> None:
    t = KafkaTransport("b:9092", {"security.protocol": "SSL", **FAST_GROUP_CONFIG})
    cfg = t.consumer_config("ledger", from_beginning=True)
    assert cfg["group.id"] == "ledger"
    assert (cfg["enable.auto.commit"], cfg["enable.auto.offset.store"]) == ("false", "false")
    assert cfg["auto.offset.reset"] == "earliest"
    assert cfg["session.timeout.ms"] == FAST_GROUP_CONFIG["session.timeout.ms"] and cfg["fetch.wait.max.ms"] == "10"
    assert cfg["security.protocol"] == "SSL"
    assert "group.instance.id" not in cfg and "group.protocol" not in cfg
    assert t.consumer_config("x", from_beginning=False)["auto.offset.reset"] == "latest"
    assert "session.timeout.ms" in KafkaTransport("b:9092").consumer_config("x")  # sensible defaults alone
    assert "acks" not in cfg


def test_every_client_reconnects_after_20_ms_unless_configured() -> None:
    """librdkafka connects to a broker it learned from the bootstrap's metadata at most each reconnect.backoff.ms
    / 2 after its last attempt: its default (100 ms) held every client's second connection back 50 ms."""
    t = KafkaTransport("b:9092")
    for cfg in (t.producer_config(), t.consumer_config("g"), t.admin_config()):
        assert cfg["reconnect.backoff.ms"] == "20"
    mine = KafkaTransport("b:9092", {"reconnect.backoff.ms": "200"})
    for cfg in (mine.producer_config(), mine.consumer_config("g"), mine.admin_config()):
        assert cfg["reconnect.backoff.ms"] == "200"
    assert "session.timeout.ms" not in t.admin_config()


@pytest.mark.parametrize(("key", "value"), [("enable.idempotence", "false"), ("acks", "1"),
                                            ("partitioner", "consistent_random")])
def test_settings_that_would_break_order_or_dedup_are_refused(key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=key):
        KafkaTransport("b:9092", {key: value}).producer_config()


def test_auto_commit_and_a_zero_fetch_wait_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"enable\.auto\.commit"):
        KafkaTransport("b:9092", {"enable.auto.commit": "true"}).consumer_config("g")
    with pytest.raises(ConfigError, match=r"fetch\.wait\.max\.ms"):
        KafkaTransport("b:9092", {"fetch.wait.max.ms": "1"}).consumer_config("g")


def test_an_unreachable_broker_is_a_transient_error() -> None:
    t = KafkaTransport(f"127.0.0.1:{free_port()}", {"message.timeout.ms": "1500"})
    producer = t.producer()
    with pytest.raises(TransientError):
        producer.send([Record("payments.dev.events", b"x", b"k")])


@pytest.mark.kafka
def test_a_broker_killed_and_restarted_keeps_its_log_and_the_producer_recovers(kafka_session: LocalKafka,
                                                                             unique: str) -> None:
    """SIGKILL the broker (a power cut), start it again on its own data: the record acknowledged before is
    still there, and the same producer delivers again without being recreated by hand."""
    topic = f"t.{unique}"
    transport = KafkaTransport(kafka_session.bootstrap, {"message.timeout.ms": "3000"})
    transport.create_topics([topic], 2)
    producer = transport.producer()
    first = producer.send([Record(topic, b"before", b"k")])[0]
    kafka_session.nodes[0].kill()
    kafka_session.start_node(0)
    delivered = None
    for _ in range(20):
        try:
            delivered = producer.send([Record(topic, b"after", b"k")])
            break
        except TransientError:
            continue
    assert delivered is not None
    assert (delivered[0].partition, delivered[0].offset) == (first.partition, first.offset + 1)  # log kept
    consumer = transport.consumer(f"g.{unique}", [topic], from_beginning=True)
    got: list[bytes] = []
    for _ in range(100):
        got += [m.value for m in consumer.poll(10, 0.2)]
        if len(got) >= 2:
            break
    assert got == [b"before", b"after"]
    consumer.close()
    producer.close()
    transport.close()


def test_a_consumer_without_a_reachable_broker_raises_transient_error() -> None:
    import time

    consumer = KafkaTransport(f"127.0.0.1:{free_port()}", FAST_GROUP_CONFIG).consumer("g", ["t"])
    deadline = time.monotonic() + 20
    try:
        with pytest.raises(TransientError, match=r"down|fail|connect|transport"):
            while time.monotonic() < deadline:
                assert consumer.poll(10, 0.2) == []
    finally:
        consumer.close()


@pytest.mark.kafka
@pytest.mark.parametrize("policy", ["compact", "compact,delete"])
def test_a_compacted_channel_is_refused(kafka_session: LocalKafka, unique: str, policy: str) -> None:
    """Compaction keeps the last record per key, and a record's key is its paymentId: a payment's earlier events
    would be deleted before a service that lags behind read them. A channel created that way by someone else is
    refused, naming the setting, instead of used."""
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"t.{unique}"
    admin = AdminClient({"bootstrap.servers": kafka_session.bootstrap})
    admin.create_topics([NewTopic(topic, 2, 1, config={"cleanup.policy": policy})])[topic].result()
    transport = KafkaTransport(kafka_session.bootstrap)
    try:
        with pytest.raises(ConfigError, match=f"topic '{topic}' has cleanup.policy={policy}"):
            transport.create_topics([topic], 2)
    finally:
        transport.close()


@pytest.mark.kafka
@pytest.mark.parametrize("code", ["UNKNOWN_LEADER_EPOCH", "FENCED_LEADER_EPOCH", "OFFSET_NOT_AVAILABLE",
                                  "LEADER_NOT_AVAILABLE", "NOT_LEADER_FOR_PARTITION"])
def test_end_offsets_wait_out_a_leader_being_elected(kafka_session: LocalKafka, unique: str, code: str) -> None:
    """Just after a topic is created (or while its leader moves) the broker may answer ListOffsets with a leader
    error — CI met ``UNKNOWN_LEADER_EPOCH`` ("Leader epoch is newer than broker epoch") from ``describe`` right
    after ``create_topics`` on 2026-12-03. Kafka calls these retriable; ``describe`` retries them (up to 15 s)
    instead of raising. The broker's race does not come on demand: the first two answers are that error."""
    from concurrent.futures import Future

    from confluent_kafka import KafkaError, KafkaException

    topic = f"t.{unique}"
    transport = KafkaTransport(kafka_session.bootstrap)
    try:
        transport.create_topics([topic], 2)
        real = transport._admin.list_offsets
        calls = []

        def list_offsets(requests: dict[Any, Any], **kwargs: Any) -> dict[Any, Future[Any]]:
            calls.append(1)
            if len(calls) > 2:
                return real(requests, **kwargs)  # type: ignore[no-any-return]
            failing: dict[Any, Future[Any]] = {}
            for tp in requests:
                fut: Future[Any] = Future()
                fut.set_exception(KafkaException(KafkaError(getattr(KafkaError, code))))
                failing[tp] = fut
            return failing

        transport._admin.list_offsets = list_offsets  # type: ignore[method-assign]
        assert transport.describe(topic).partitions == 2
        assert len(calls) == 3
    finally:
        transport.close()
