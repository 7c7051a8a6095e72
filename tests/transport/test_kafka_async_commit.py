"""The Kafka consumer commits offsets asynchronously (issue #14: a synchronous commit per batch made every member
wait on the broker). The at-least-once guarantee must hold all the same: a request that fails is sent again
unless a later offset of its partition was sent since (never a step back), partitions being revoked and close()
commit synchronously what is not known to be committed, and committed() reads back what commit() was given.

The requests the broker never sees are made by a stand-in for the librdkafka client that drops chosen
asynchronous commits (their answers are reported failed at the next consume, as librdkafka does for a request
that timed out); everything else goes to the real broker."""

from __future__ import annotations

import contextlib
import dataclasses
import time
import uuid
from collections.abc import Iterator
from typing import Any

from confluent_kafka import KafkaError, TopicPartition
from transport_helpers import drain, next_offsets, wait_assigned

from payevents.localkafka import FAST_GROUP_CONFIG, LocalKafka
from payevents.transport import Record
from payevents.transport.kafka import KafkaConsumer, KafkaTransport


class _LossyClient:
    """The real librdkafka consumer, except that asynchronous commits are dropped while ``drop`` is set (their
    answer, a failure, is served by the next consume, as librdkafka serves commit answers)."""

    def __init__(self, consumer: KafkaConsumer) -> None:
        self._inner = consumer._c  # type: ignore[attr-defined]
        self._consumer = consumer
        self.drop = False
        self.sent: list[tuple[str, dict[tuple[str, int], int]]] = []  # ("async"|"sync", offsets) reaching the broker
        self._failed: list[list[TopicPartition]] = []

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> None:
        got = {(tp.topic, tp.partition): tp.offset for tp in offsets}
        if asynchronous and self.drop:
            self._failed.append(offsets)
            return
        self.sent.append(("async" if asynchronous else "sync", got))
        self._inner.commit(offsets=offsets, asynchronous=asynchronous)

    def consume(self, num_messages: int, timeout: float) -> list[Any]:
        out = self._inner.consume(num_messages=num_messages, timeout=timeout)
        while self._failed:
            self._consumer._on_commit(KafkaError(KafkaError.REQUEST_TIMED_OUT), self._failed.pop(0))  # type: ignore[attr-defined]
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _lossy(consumer: Any) -> _LossyClient:
    """The consumer's client made lossy, and each of its commits sent at once (no interval between requests:
    these tests are about what becomes of a request)."""
    client = _LossyClient(consumer)
    consumer._c = client
    consumer.commit_interval_s = 0
    return client


def _setup(broker: LocalKafka, partitions: int, records: int) -> tuple[KafkaTransport, str]:
    t = KafkaTransport(broker.bootstrap, dict(FAST_GROUP_CONFIG))
    topic = f"t.async.{uuid.uuid4().hex[:8]}"
    t.create_topics([topic], partitions)
    p = t.producer()
    p.send([Record(topic, b"v%d" % i, partition=i % partitions) for i in range(records)])
    p.close()
    return t, topic


@dataclasses.dataclass
class _Drained:
    t: KafkaTransport
    topic: str
    group: str
    c: KafkaConsumer
    client: _LossyClient
    got: list[Any]


@contextlib.contextmanager
def _drained(broker: LocalKafka) -> Iterator[_Drained]:
    """A member of a fresh group that has read the 10 records of a one-partition topic, its client lossy."""
    t, topic = _setup(broker, 1, 10)
    group = f"g.{uuid.uuid4().hex[:8]}"
    c = t.consumer(group, [topic])
    try:
        got = drain(c, 10)
        yield _Drained(t, topic, group, c, _lossy(c), got)
    finally:
        c.close()
        t.close()


def _until(cond: Any, what: str, consumer: KafkaConsumer | None = None, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        if consumer is not None:
            assert not consumer.poll(10, 0.1)
        else:
            time.sleep(0.05)


def test_a_commit_whose_request_failed_is_sent_again_with_the_next_poll(kafka_broker: LocalKafka) -> None:
    with _drained(kafka_broker) as d:
        d.client.drop = True
        d.c.commit(next_offsets(d.got))  # the request is lost
        d.client.drop = False
        assert d.t.group_offsets(d.group, d.topic).get(0, 0) == 0  # at most the start it committed when assigned
        # no further commit: the failure, answered at the next consume, makes the consumer send it again
        _until(lambda: d.t.group_offsets(d.group, d.topic) == {0: 10}, "the failed commit was never sent again",
               d.c)
        assert [s for s in d.client.sent if s[0] == "async"] == [("async", {(d.topic, 0): 10})]


def test_a_failed_commit_covered_by_a_later_one_is_not_sent_again(kafka_broker: LocalKafka) -> None:
    with _drained(kafka_broker) as d:
        d.client.drop = True
        d.c.commit({(d.topic, 0): 4})  # lost
        d.client.drop = False
        d.c.commit({(d.topic, 0): 7})  # waits for the answer to the one in flight (one request at a time)
        assert d.client.sent == []
        assert not d.c.poll(10, 0.1)  # the failure is answered, then the waiting offset 7 is sent
        _until(lambda: d.t.group_offsets(d.group, d.topic) == {0: 7}, "offset 7 never committed", d.c)
        for _ in range(5):
            assert not d.c.poll(10, 0.05)
        # offset 4 was never sent after 7: the committed offset never went back
        assert d.client.sent == [("async", {(d.topic, 0): 7})]
        assert d.t.group_offsets(d.group, d.topic) == {0: 7}


def test_offsets_given_within_the_commit_interval_go_out_as_one_request(kafka_broker: LocalKafka) -> None:
    with _drained(kafka_broker) as d:
        d.c.commit_interval_s = 2.0
        d.c.commit({(d.topic, 0): 4})
        _until(lambda: d.t.group_offsets(d.group, d.topic) == {0: 4}, "offset 4 never committed", d.c)
        before = len(d.client.sent)
        for offset in (5, 6, 7):  # a batch applied every few milliseconds
            d.c.commit({(d.topic, 0): offset})
            assert not d.c.poll(10, 0)
        # one request, once the interval since the one of offset 4 has passed, with the latest offset
        _until(lambda: d.t.group_offsets(d.group, d.topic) == {0: 7}, "offset 7 never committed", d.c)
        assert d.client.sent[before:] == [("async", {(d.topic, 0): 7})]


def test_committed_and_close_commit_synchronously_what_is_not_known_committed(kafka_broker: LocalKafka) -> None:
    t, topic = _setup(kafka_broker, 2, 20)
    group = f"g.{uuid.uuid4().hex[:8]}"
    c = t.consumer(group, [topic])
    try:
        got = drain(c, 20)
        client = _lossy(c)
        client.drop = True  # no asynchronous commit reaches the broker
        c.commit({(topic, 0): 3})
        # read back through the member: committed synchronously first
        # (partition 1: the log start the group committed when it was assigned, the records not read then)
        assert c.committed([(topic, 0), (topic, 1)]) == {(topic, 0): 3, (topic, 1): 0}
        c.commit(next_offsets(got))
        assert t.group_offsets(group, topic) == {0: 3, 1: 0}
    finally:
        c.close()  # commits the rest synchronously
    try:
        assert t.group_offsets(group, topic) == {0: 10, 1: 10}
        assert ("sync", {(topic, 0): 10, (topic, 1): 10}) in client.sent
    finally:
        t.close()


def test_partitions_being_revoked_are_committed_before_they_move(kafka_broker: LocalKafka) -> None:
    t, topic = _setup(kafka_broker, 2, 0)
    group = f"g.{uuid.uuid4().hex[:8]}"
    a = t.consumer(group, [topic])
    b = None
    try:
        wait_assigned(a, 2)
        p = t.producer()
        p.send([Record(topic, b"v%d" % i, partition=i % 2) for i in range(20)])
        p.close()
        got = drain(a, 20)
        client = _lossy(a)
        client.drop = True  # the commit below never reaches the broker asynchronously
        a.commit(next_offsets(got))
        assert set(t.group_offsets(group, topic).values()) <= {0}  # at most the starts committed when assigned
        b = t.consumer(group, [topic])
        deadline = time.monotonic() + 30
        while not (a.assignment() and b.assignment()):  # cooperative-sticky: a gives one partition to b
            assert time.monotonic() < deadline, "the group did not share the partitions"
            assert not a.poll(10, 0.05)
            assert not b.poll(10, 0.05)
        moved = b.assignment()
        # a committed the moved partition synchronously while giving it up: b reads nothing again
        assert {(topic, p): o for p, o in t.group_offsets(group, topic).items()
                if (topic, p) in moved} == {tp: 10 for tp in moved}
        assert not drain(b, 1, timeout=2)
        sync = [offsets for kind, offsets in client.sent if kind == "sync"]
        assert sync and all(set(offsets) <= moved for offsets in sync)
    finally:
        a.close()
        if b is not None:
            b.close()
        t.close()


def test_lag_counts_from_the_offsets_given_to_commit_without_committing_them(kafka_broker: LocalKafka) -> None:
    with _drained(kafka_broker) as d:
        d.client.drop = True
        d.c.commit({(d.topic, 0): 6})
        # read about once a second by the runtime: no synchronous commit for it
        assert d.c.lag() == {(d.topic, 0): 4}
        assert d.client.sent == [] and d.t.group_offsets(d.group, d.topic).get(0, 0) == 0
