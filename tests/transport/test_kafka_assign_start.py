"""A member hands librdkafka the start of each partition it was assigned, as its assignment found it.

At assignment the consumer already reads the group's committed offsets and, where there is none, the partition's
log start (``KafkaConsumer._start_at``, for the gap report). Left to itself librdkafka would look the committed
offsets up again and, for a partition with none, wait on a timer before asking the broker for the log start; the
member assigns the partitions itself at the offsets found. What librdkafka was told is its assignment
(``Consumer.assignment()`` of the client: the offsets the application assigned, ``OFFSET_STORED`` when it was
left to look them up)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient
from transport_helpers import drain

from payevents.localkafka import FAST_GROUP_CONFIG, LocalKafka
from payevents.transport import Record
from payevents.transport.kafka import KafkaConsumer, KafkaTransport


@pytest.fixture(params=["cooperative-sticky", "range"])
def transport(request: pytest.FixtureRequest, kafka_broker: LocalKafka) -> Iterator[KafkaTransport]:
    """The default incremental assignment, and an eager one (``assign`` of the whole assignment)."""
    t = KafkaTransport(kafka_broker.bootstrap, {**FAST_GROUP_CONFIG, "partition.assignment.strategy": request.param})
    yield t
    t.close()


def _given(c: KafkaConsumer) -> dict[int, int]:
    return {tp.partition: tp.offset for tp in c._c.assignment()}  # type: ignore[attr-defined]


def test_each_partition_starts_where_the_assignment_found_it(transport: KafkaTransport,
                                                             kafka_broker: LocalKafka) -> None:
    topic, group = f"t.start.{uuid.uuid4().hex[:8]}", f"g.{uuid.uuid4().hex[:8]}"
    transport.create_topics([topic], 3)
    p = transport.producer()
    p.send([Record(topic, b"v%d" % i, partition=i % 3) for i in range(30)])  # ten a partition, offsets 0-9
    p.close()
    admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap})
    for future in admin.delete_records([TopicPartition(topic, 1, 4)]).values():  # retention passed 4 there
        future.result(timeout=30)

    # a new group: nothing committed, each partition from its log start
    c = transport.consumer(group, [topic])
    try:
        got = drain(c, 26)
        assert _given(c) == {0: 0, 1: 4, 2: 0}
        assert sorted((m.partition, m.offset) for m in got) == sorted(
            [(0, o) for o in range(10)] + [(1, o) for o in range(4, 10)] + [(2, o) for o in range(10)])
        c.commit({(topic, 0): 7, (topic, 1): 6, (topic, 2): 10})
    finally:
        c.close()

    # the next member: the group's committed offsets
    c = transport.consumer(group, [topic])
    try:
        got = drain(c, 7)
        assert _given(c) == {0: 7, 1: 6, 2: 10}
        assert sorted((m.partition, m.offset) for m in got) == [(0, 7), (0, 8), (0, 9), (1, 6), (1, 7), (1, 8), (1, 9)]
    finally:
        c.close()
