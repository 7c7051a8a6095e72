"""poll(max_records, timeout) waits up to ``timeout`` for the *first* record (the transport contract, as on the
embedded log), not for a full batch: a member that has caught up gets the records that arrive at once. Before,
consume(max_records, timeout) held every partial batch for the whole timeout (issue #14: a scale-out member's
last batch, every batch of a service keeping up with its producer)."""

from __future__ import annotations

import time
import uuid

from transport_helpers import drain, wait_assigned

from payevents.localkafka import FAST_GROUP_CONFIG, LocalKafka
from payevents.transport import Record
from payevents.transport.kafka import KafkaTransport


def test_a_partial_batch_is_returned_without_waiting_for_the_timeout(kafka_broker: LocalKafka) -> None:
    t = KafkaTransport(kafka_broker.bootstrap, dict(FAST_GROUP_CONFIG))
    topic = f"t.poll.{uuid.uuid4().hex[:8]}"
    t.create_topics([topic], 1)
    c = t.consumer(f"g.{uuid.uuid4().hex[:8]}", [topic])
    p = t.producer()
    try:
        wait_assigned(c, 1)
        p.send([Record(topic, b"warm-up", partition=0)])
        assert len(drain(c, 1)) == 1  # fetching has started
        p.send([Record(topic, b"v%d" % i, partition=0) for i in range(3)])
        timeout = 60.0
        started = time.monotonic()
        got = c.poll(500, timeout)
        while len(got) < 3 and time.monotonic() - started < timeout:
            got += c.poll(500, timeout)
        # far less than the timeout: the poll did not wait for 500 records
        assert time.monotonic() - started < timeout / 2
        assert [m.value for m in got] == [b"v0", b"v1", b"v2"]
    finally:
        p.close()
        c.close()
        t.close()
