"""Records Kafka deleted (the channel's retention) before a group read them are reported, not skipped silently.

librdkafka moves a position the broker no longer holds to the log start by itself and says so only in its own
log; the consumer compares each record's offset with the one it was to read next (the group's committed offset at
assignment, then the one after each record) and reports the range the log start passed (``Consumer.skipped``).
``AdminClient.delete_records`` moves the log start as retention does."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient
from transport_helpers import drain, wait_assigned

from payevents.localkafka import FAST_GROUP_CONFIG, LocalKafka
from payevents.transport import Record, Skipped
from payevents.transport.kafka import KafkaTransport


def _topic(t: KafkaTransport, records: int, *, value: bytes = b"v") -> str:
    topic = f"t.skip.{uuid.uuid4().hex[:8]}"
    t.create_topics([topic], 1)
    p = t.producer()
    for i in range(0, records, 50):  # several requests: several record batches on the broker
        p.send([Record(topic, value + b"%d" % j, partition=0) for j in range(i, min(i + 50, records))])
    p.close()
    return topic


def _delete_before(broker: LocalKafka, topic: str, offset: int) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for future in admin.delete_records([TopicPartition(topic, 0, offset)]).values():
        future.result(timeout=30)


@pytest.fixture
def transport(kafka_broker: LocalKafka) -> Iterator[KafkaTransport]:
    t = KafkaTransport(kafka_broker.bootstrap, dict(FAST_GROUP_CONFIG))
    yield t
    t.close()


def _stopped_group(t: KafkaTransport, committed: int) -> tuple[str, str]:
    """A topic of 100 records, and a group that read them all and stopped having committed ``committed``."""
    topic, group = _topic(t, 100), f"g.{uuid.uuid4().hex[:8]}"
    c = t.consumer(group, [topic])
    drain(c, 100)
    c.commit({(topic, 0): committed})
    c.close()
    return topic, group


def _read(t: KafkaTransport, group: str, topic: str, expected: int) -> tuple[list[int], list[Skipped]]:
    """The offsets a new member of ``group`` reads, and the ranges it reports skipped (asked twice: once each)."""
    c = t.consumer(group, [topic])
    try:
        offsets = [m.offset for m in drain(c, expected)]
        skipped = c.skipped()
        assert c.skipped() == []
        return offsets, skipped
    finally:
        c.close()


def test_records_deleted_before_the_group_read_them_are_reported_once(transport: KafkaTransport,
                                                                      kafka_broker: LocalKafka) -> None:
    topic, group = _stopped_group(transport, 10)  # the group has applied 10 records when it stops
    _delete_before(kafka_broker, topic, 50)  # retention deletes 0-49: 10-49 were never read by the group
    assert _read(transport, group, topic, 50) == (list(range(50, 100)), [Skipped(topic, 0, 10, 50)])


def test_a_group_whose_records_are_all_there_reports_nothing(transport: KafkaTransport,
                                                             kafka_broker: LocalKafka) -> None:
    """Deleted records the group had read are no loss; nor is a new group (nothing committed) starting at the
    log start."""
    topic, group = _stopped_group(transport, 60)
    _delete_before(kafka_broker, topic, 40)
    assert _read(transport, group, topic, 40) == (list(range(60, 100)), [])
    assert _read(transport, f"g.{uuid.uuid4().hex[:8]}", topic, 60) == (list(range(40, 100)), [])


def test_records_deleted_while_a_member_reads_are_reported(kafka_broker: LocalKafka) -> None:
    """A member behind the log start while it reads: its prefetch held to about one record, the records ahead
    of it are deleted, and the next record it gets is the new log start's."""
    config = {**FAST_GROUP_CONFIG, "queued.max.messages.kbytes": "1", "max.partition.fetch.bytes": "1"}
    t = KafkaTransport(kafka_broker.bootstrap, config)
    group = f"g.{uuid.uuid4().hex[:8]}"
    try:
        topic = _topic(t, 300, value=b"x" * 4000)
        c = t.consumer(group, [topic])
        try:
            first: list[int] = []
            deadline = time.monotonic() + 30
            while len(first) < 5 and time.monotonic() < deadline:
                first += [m.offset for m in c.poll(5 - len(first), 0.2)]
            assert first == list(range(5))
            _delete_before(kafka_broker, topic, 250)
            rest = [m.offset for m in drain(c, 50)]
            assert rest[-50:] == list(range(250, 300))
            # what was fetched ahead before the deletion came first, then the jump
            assert rest[:-50] == list(range(5, 5 + len(rest) - 50))
            assert c.skipped() == [Skipped(topic, 0, 5 + len(rest) - 50, 250)]
        finally:
            c.close()
    finally:
        t.close()


def test_a_gap_with_no_record_after_it_is_reported_at_assignment(transport: KafkaTransport,
                                                                 kafka_broker: LocalKafka) -> None:
    """Every record after the group's offset deleted and nothing produced since: no record will ever come to
    compare against, so the gap is seen where the member starts — at every start, until the group has read a
    record after it (a member may die before its service recorded the loss)."""
    topic, group = _stopped_group(transport, 30)
    _delete_before(kafka_broker, topic, 100)
    assert _read(transport, group, topic, 0) == ([], [Skipped(topic, 0, 30, 100)])
    assert _read(transport, group, topic, 0) == ([], [Skipped(topic, 0, 30, 100)])
    p = transport.producer()
    p.send([Record(topic, b"after", partition=0)])
    p.close()
    c = transport.consumer(group, [topic])
    try:
        got = drain(c, 1)
        assert [m.offset for m in got] == [100] and c.skipped() == [Skipped(topic, 0, 30, 100)]
        c.commit({(topic, 0): 101})
    finally:
        c.close()
    assert _read(transport, group, topic, 0) == ([], [])


def test_a_group_that_had_nothing_to_read_there_yet_holds_its_place(transport: KafkaTransport,
                                                                    kafka_broker: LocalKafka) -> None:
    """A member assigned a partition with no record yet commits its start there: records that then arrive and are
    deleted while the group is down are its loss, reported — not a new log start it would take as its own."""
    topic, group = _topic(transport, 0), f"g.{uuid.uuid4().hex[:8]}"
    c = transport.consumer(group, [topic])
    wait_assigned(c, 1)
    c.close()
    p = transport.producer()
    p.send([Record(topic, b"v%d" % i, partition=0) for i in range(20)])
    p.close()
    _delete_before(kafka_broker, topic, 15)
    assert _read(transport, group, topic, 5) == (list(range(15, 20)), [Skipped(topic, 0, 0, 15)])
