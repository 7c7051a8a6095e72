"""A partition paused by the consumer runtime (during a backoff) and then lost in a rebalance (the group's
session timed out while every broker was down) must not come back paused: the transport's own pause record is
the truth, and a partition assigned anew is resumed in the client unless the caller paused it since. Before,
librdkafka kept the pause across the lost + re-assign while the transport had forgotten it: the runtime's resume
skipped it and the service stopped consuming that partition for good (seen in tests/cluster, whole cluster down)."""

from __future__ import annotations

import uuid

from confluent_kafka import TopicPartition

from payevents.localkafka import LocalKafka
from payevents.transport import Record
from payevents.transport.kafka import KafkaTransport

TOPIC = "payments.dev.events"


def test_a_partition_lost_while_paused_is_consumed_again_once_reassigned(kafka_broker: LocalKafka) -> None:
    t = KafkaTransport(kafka_broker.bootstrap)
    try:
        t.create_topics([TOPIC], 1)
        p = t.producer()
        p.send([Record(TOPIC, b"v%d" % i, key=b"k", partition=0) for i in range(3)])
        p.close()
        c = t.consumer(f"g-{uuid.uuid4().hex[:8]}", [TOPIC])
        try:
            got = []
            for _ in range(100):
                got += c.poll(10, timeout=0.2)
                if got:
                    break
            assert got and (TOPIC, 0) in c.assignment()
            c.seek((TOPIC, 0), 0)
            c.pause([(TOPIC, 0)])  # a backoff
            # the group loses the partition (session timeout) and gets it back: what librdkafka does, as the
            # rebalance callbacks see it
            raw = c._c  # type: ignore[attr-defined]
            tps = [TopicPartition(TOPIC, 0)]
            raw.incremental_unassign(tps)
            c._on_revoke(raw, tps)  # type: ignore[attr-defined]
            raw.incremental_assign([TopicPartition(TOPIC, 0, 0)])
            c._on_assign(raw, tps)  # type: ignore[attr-defined]
            again = []
            for _ in range(50):
                again += c.poll(10, timeout=0.2)
                if len(again) >= 3:
                    break
            assert [m.offset for m in again][:3] == [0, 1, 2]
        finally:
            c.close()
    finally:
        t.close()
