"""The transport contract: every test runs unchanged on the embedded log and on Apache Kafka."""

from __future__ import annotations

import time
from collections import defaultdict

import pytest
from transport_helpers import drain, next_offsets, wait_assigned

from payevents.errors import ConfigError
from payevents.transport import Consumer, Message, Producer, Record, Transport
from payevents.transport.murmur2 import partition_for


def _records(topic: str, keys: int, per_key: int) -> list[Record]:
    """``per_key`` records for each of ``keys`` keys, interleaved; value = b"key:seq"."""
    return [Record(topic, f"k{k}:{i}".encode(), f"k{k}".encode(), (("seq", str(i).encode()),))
            for i in range(per_key) for k in range(keys)]


def test_publish_then_consume_every_record_with_its_offset(transport: Transport, unique: str) -> None:
    topic = f"t.{unique}"
    assert isinstance(transport, Transport)
    transport.create_topics([topic], 3)
    records = _records(topic, keys=10, per_key=4)
    producer = transport.producer()
    assert isinstance(producer, Producer)
    deliveries = producer.send(records)

    assert len(deliveries) == len(records)
    per_partition: dict[int, list[int]] = defaultdict(list)
    for r, d in zip(records, deliveries, strict=True):
        assert d.topic == topic
        assert d.partition == partition_for(r.key or b"", 3)
        per_partition[d.partition].append(d.offset)
    for offsets in per_partition.values():  # offsets are dense per partition, starting at 0, in input order
        assert offsets == list(range(len(offsets)))
    assert transport.describe(topic).end_offsets == {p: len(per_partition.get(p, [])) for p in range(3)}

    consumer = transport.consumer(f"g.{unique}", [topic])
    assert isinstance(consumer, Consumer)
    got = drain(consumer, len(records))
    consumer.close()
    assert sorted((m.partition, m.offset, m.key, m.value) for m in got) == sorted(
        (d.partition, d.offset, r.key, r.value) for r, d in zip(records, deliveries, strict=True))
    assert all(m.timestamp_ms > 0 for m in got)


def test_per_key_order_is_kept_across_partitions_and_batches(transport: Transport, unique: str) -> None:
    topic = f"t.{unique}"
    transport.create_topics([topic], 4)
    records = _records(topic, keys=25, per_key=8)
    producer = transport.producer()
    for i in range(0, len(records), 37):  # several batches, each spanning partitions
        producer.send(records[i:i + 37])
    assert sum(transport.describe(topic).end_offsets.values()) == len(records)
    consumer = transport.consumer(f"g.{unique}", [topic])
    got = drain(consumer, len(records))
    consumer.close()

    assert len(got) == len(records)
    seqs: dict[bytes, list[int]] = defaultdict(list)
    partitions: dict[bytes, set[int]] = defaultdict(set)
    for m in got:
        assert m.key is not None
        seqs[m.key].append(int(m.header("seq") or -1))
        partitions[m.key].add(m.partition)
    assert len(seqs) == 25
    for key, s in seqs.items():
        assert s == list(range(8)), key
        assert partitions[key] == {partition_for(key, 4)}
    assert len({p for ps in partitions.values() for p in ps}) > 1  # the keys really spread over partitions


def test_committed_offsets_resume_after_restart(transport: Transport, unique: str) -> None:
    topic, group = f"t.{unique}", f"g.{unique}"
    transport.create_topics([topic], 2)
    records = [Record(topic, f"v{i}".encode(), partition=i % 2) for i in range(20)]
    transport.producer().send(records)

    first = transport.consumer(group, [topic])
    got = drain(first, 20)
    assert len(got) == 20
    first.commit({(topic, 0): 4, (topic, 1): 7})  # processed: offsets 0..3 of p0, 0..6 of p1
    assert first.committed([(topic, 0), (topic, 1)]) == {(topic, 0): 4, (topic, 1): 7}
    first.close()

    second = transport.consumer(group, [topic])
    rest = drain(second, 20 - 4 - 7)
    expected = [(0, o) for o in range(4, 10)] + [(1, o) for o in range(7, 10)]
    assert sorted((m.partition, m.offset) for m in rest) == expected
    second.commit(next_offsets(rest))
    assert second.committed([(topic, 0), (topic, 1)]) == {(topic, 0): 10, (topic, 1): 10}
    second.close()

    third = transport.consumer(group, [topic])
    assert drain(third, 1, timeout=3) == []
    third.close()


def test_uncommitted_records_are_redelivered_to_the_next_member(transport: Transport, unique: str) -> None:
    topic, group = f"t.{unique}", f"g.{unique}"
    transport.create_topics([topic], 3)
    records = _records(topic, keys=6, per_key=3)
    transport.producer().send(records)

    crashed = transport.consumer(group, [topic])
    seen = drain(crashed, len(records))
    assert len(seen) == len(records)
    crashed.close()  # nothing committed: as if the member died before its offset commit

    survivor = transport.consumer(group, [topic])
    again = drain(survivor, len(records))
    survivor.close()
    assert sorted((m.partition, m.offset) for m in again) == sorted((m.partition, m.offset) for m in seen)


def test_two_groups_each_see_every_record(transport: Transport, unique: str) -> None:
    topic = f"t.{unique}"
    transport.create_topics([topic], 3)
    records = _records(topic, keys=9, per_key=5)
    transport.producer().send(records)
    results = []
    for name in ("ledger", "invoices"):
        consumer = transport.consumer(f"g.{name}.{unique}", [topic])
        got = drain(consumer, len(records))
        consumer.commit(next_offsets(got))
        consumer.close()
        results.append(sorted((m.partition, m.offset) for m in got))
    assert len(results[0]) == len(records)
    assert results[0] == results[1]


def test_group_offsets_are_read_without_joining_the_group(transport: Transport, unique: str) -> None:
    topic = f"t.{unique}"
    transport.create_topics([topic], 3)
    records = _records(topic, keys=6, per_key=4)
    transport.producer().send(records)
    group = f"g.offsets.{unique}"
    assert transport.group_offsets(group, topic) == {}  # nothing committed yet
    consumer = transport.consumer(group, [topic])
    got = drain(consumer, len(records))
    # commit all but the last record of each partition: the lag per partition is exactly one record
    committed = {tp: off - 1 for tp, off in next_offsets(got).items()}
    consumer.commit(committed)
    consumer.close()
    offsets = transport.group_offsets(group, topic)
    assert offsets == {p: off for (_t, p), off in committed.items()}
    ends = transport.describe(topic).end_offsets
    assert sum(ends[p] - offsets.get(p, 0) for p in ends) == len(committed)


def test_a_different_partition_count_is_refused(transport: Transport, unique: str) -> None:
    topic = f"t.{unique}"
    transport.create_topics([topic], 3)
    transport.create_topics([topic], 3)  # idempotent
    with pytest.raises(ConfigError) as err:
        transport.create_topics([topic], 5)
    assert topic in str(err.value) and "3" in str(err.value) and "5" in str(err.value)
    info = transport.describe(topic)
    assert info.partitions == 3
    assert sorted(info.end_offsets) == [0, 1, 2]
    assert info.config.get("cleanup.policy") == "delete"


@pytest.mark.parametrize("partitions", [0, -1, 10_001, 2_000_000])
def test_a_partition_count_out_of_bounds_is_refused_before_anything_is_created(transport: Transport, unique: str,
                                                                            partitions: int) -> None:
    """1 to 10,000 (``contracts.channel.MAX_PARTITIONS``): until 2026-12-02 a typo of a few zeros made the
    embedded log create 2,000,000 partitions (a 300 MB file) and asked Kafka for as many."""
    topic = f"t.{unique}"
    with pytest.raises(ConfigError, match=rf"partitions: {partitions} must be a whole number from 1 to 10,000"):
        transport.create_topics([topic], partitions)
    transport.create_topics([topic], 2)  # nothing of the refused call is there: the topic is created anew
    assert transport.describe(topic).partitions == 2


def test_headers_keys_and_values_round_trip(transport: Transport, unique: str) -> None:
    topic = f"t.{unique}"
    transport.create_topics([topic], 2)
    headers = (("eventType", b"PaymentProcessed"), ("version", b"1.0.0"), ("eventId", b"e-1"),
               ("content-type", b"application/json"), ("correlationId", b"c-1"), ("binary", bytes(range(256))),
               ("eventType", b"repeated"))
    records = [
        Record(topic, b'{"a": 1}', b"pay-1", headers),
        Record(topic, b"\x00\xff not utf-8", None, (), partition=1),
        Record(topic, b"", b"pay-2"),
    ]
    deliveries = transport.producer().send(records)
    got = drain(transport.consumer(f"g.{unique}", [topic]), 3)
    by_pos = {(m.partition, m.offset): m for m in got}
    for r, d in zip(records, deliveries, strict=True):
        m = by_pos[(d.partition, d.offset)]
        assert m.key == r.key
        assert (m.value or b"") == r.value
        assert m.headers == r.headers
    first = by_pos[(deliveries[0].partition, deliveries[0].offset)]
    assert first.header("eventType") == "PaymentProcessed"  # first value of a repeated header
    assert first.header("missing") is None
    assert deliveries[1].partition == 1


def test_a_key_lands_on_the_murmur2_partition(transport: Transport, unique: str) -> None:
    """The same partition numbers on both transports (and as the Java client / kafka-python)."""
    topic = f"t.{unique}"
    transport.create_topics([topic], 6)
    keys = [f"pay_{i:04d}-{unique}".encode() for i in range(60)] + [b"", b"a", b"123456789"]
    deliveries = transport.producer().send([Record(topic, b"x", k) for k in keys])
    assert [d.partition for d in deliveries] == [partition_for(k, 6) for k in keys]
    assert len({d.partition for d in deliveries}) == 6


def test_producing_to_a_missing_topic_is_a_config_error(transport: Transport, unique: str) -> None:
    with pytest.raises(ConfigError, match=f"t.missing.{unique}"):
        transport.producer().send([Record(f"t.missing.{unique}", b"x", b"k")])


def test_read_without_a_group(transport: Transport, unique: str) -> None:
    topic = f"t.{unique}"
    transport.create_topics([topic], 2)
    transport.producer().send([Record(topic, f"v{i}".encode(), partition=1) for i in range(12)])
    assert [m.value for m in transport.read(topic, 1, 0, 5)] == [f"v{i}".encode() for i in range(5)]
    assert [m.offset for m in transport.read(topic, 1, 9)] == [9, 10, 11]
    assert transport.read(topic, 1, 12) == []
    assert transport.read(topic, 0, 0) == []
    with pytest.raises(ConfigError):
        transport.read(topic, 2, 0)


def test_pause_resume_and_seek(transport: Transport, unique: str) -> None:
    topic, group = f"t.{unique}", f"g.{unique}"
    transport.create_topics([topic], 2)
    consumer = transport.consumer(group, [topic])
    assert wait_assigned(consumer, 2) == {(topic, 0), (topic, 1)}
    consumer.pause([(topic, 0)])
    transport.producer().send([Record(topic, f"v{i}".encode(), partition=i % 2) for i in range(10)])

    got = drain(consumer, 5, timeout=10, settle=0.5)
    assert sorted((m.partition, m.offset) for m in got) == [(1, o) for o in range(5)]
    consumer.resume([(topic, 0)])
    got = drain(consumer, 5, timeout=10)
    assert sorted((m.partition, m.offset) for m in got) == [(0, o) for o in range(5)]

    consumer.seek((topic, 1), 2)  # replay after a failed batch
    got = drain(consumer, 3, timeout=10)
    assert sorted((m.partition, m.offset) for m in got) == [(1, 2), (1, 3), (1, 4)]

    consumer.commit({(topic, 0): 5, (topic, 1): 3})
    assert consumer.lag() == {(topic, 0): 0, (topic, 1): 2}
    consumer.close()


def test_lag_counts_uncommitted_records(transport: Transport, unique: str) -> None:
    topic, group = f"t.{unique}", f"g.{unique}"
    transport.create_topics([topic], 1)
    transport.producer().send([Record(topic, f"v{i}".encode(), b"k") for i in range(8)])
    consumer = transport.consumer(group, [topic])
    got = drain(consumer, 8)
    assert consumer.lag() == {(topic, 0): 8}
    consumer.commit(next_offsets(got))
    assert consumer.lag() == {(topic, 0): 0}
    consumer.close()


def test_members_of_one_group_share_the_partitions(transport: Transport, unique: str) -> None:
    topic, group = f"t.{unique}", f"g.{unique}"
    transport.create_topics([topic], 4)
    a = transport.consumer(group, [topic])
    b = transport.consumer(group, [topic])
    everything = {(topic, p) for p in range(4)}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert not a.poll(10, 0.05) and not b.poll(10, 0.05)
        if a.assignment() and b.assignment() and a.assignment() | b.assignment() == everything:
            break
    assert len(a.assignment()) == 2 and len(b.assignment()) == 2
    assert not a.assignment() & b.assignment()

    # records go only to the member owning their partition
    transport.producer().send([Record(topic, f"v{i}".encode(), partition=i % 4) for i in range(40)])
    got_a, got_b = drain(a, 20, timeout=15), drain(b, 20, timeout=15)
    assert {(m.topic, m.partition) for m in got_a} == a.assignment()
    assert {(m.topic, m.partition) for m in got_b} == b.assignment()
    a.commit(next_offsets(got_a))
    b.commit(next_offsets(got_b))

    a.close()  # b takes over a's partitions, from a's committed offsets
    deadline = time.monotonic() + 30
    while b.assignment() != everything and time.monotonic() < deadline:
        assert not b.poll(10, 0.1)
    assert b.assignment() == everything
    b.close()


def _two_partitions_read(transport: Transport, unique: str) -> tuple[str, str, Consumer, list[Message]]:
    """A topic of two partitions with 10 records each, all read by member ``a`` of a group (nothing committed)."""
    topic, group = f"t.{unique}", f"g.{unique}"
    transport.create_topics([topic], 2)
    transport.producer().send([Record(topic, f"v{i}".encode(), partition=i % 2) for i in range(20)])
    a = transport.consumer(group, [topic])
    read = drain(a, 20, timeout=15)
    assert len(read) == 20
    return topic, group, a, read


def test_a_member_finishes_its_work_before_its_partitions_move(transport: Transport, unique: str) -> None:
    """``before_revoke`` is called inside a poll with the partitions a rebalance moves to another member, while they
    are still assigned: a commit made there counts, and the new owner starts after it."""
    topic, group, a, read = _two_partitions_read(transport, unique)
    done = next_offsets(read)
    calls: list[tuple[set[tuple[str, int]], set[tuple[str, int]]]] = []

    def finish(partitions: list[tuple[str, int]]) -> None:
        calls.append((set(partitions), a.assignment()))
        a.commit({tp: o for tp, o in done.items() if tp in partitions})

    a.before_revoke = finish
    b = transport.consumer(group, [topic])
    deadline = time.monotonic() + 30
    while not (a.assignment() and b.assignment()):
        assert time.monotonic() < deadline, "b was never given a partition"
        assert not a.poll(10, 0.05) and not b.poll(10, 0.05)  # b reads nothing a finished
    ((moved, held),) = calls
    assert moved == b.assignment() and moved <= held and not moved & a.assignment()
    assert not b.poll(10, 0.5)
    a.close()
    b.close()


def test_partitions_move_even_when_the_member_fails_to_finish_its_work(transport: Transport, unique: str) -> None:
    """``before_revoke`` raising: the poll raises it, and the partitions go to the new owner all the same (which
    reads from the last committed offset)."""
    topic, group, a, _read = _two_partitions_read(transport, unique)

    def fail(_partitions: list[tuple[str, int]]) -> None:
        raise RuntimeError("cannot finish (test)")

    a.before_revoke = fail
    b = transport.consumer(group, [topic])
    raised, got = 0, []
    deadline = time.monotonic() + 30
    while not (b.assignment() and got):
        assert time.monotonic() < deadline, f"b was never given a partition ({raised} raised)"
        try:
            assert not a.poll(10, 0.05)
        except RuntimeError as exc:
            assert str(exc) == "cannot finish (test)"
            raised += 1
        got += b.poll(10, 0.05)
    assert raised == 1 and not b.assignment() & a.assignment()
    got += drain(b, 10 - len(got), timeout=15)
    assert len(got) == 10 and {m.offset for m in got} == set(range(10))  # all of b's partition, from its start
    a.close()
    b.close()


def test_the_dead_letter_channel_is_kept_for_ever(transport: Transport, unique: str) -> None:
    # a dead letter is the only copy of a record no service could process; the channel's retention (7 days on a
    # Kafka with its defaults) would delete it before anyone looked at it or replayed it
    from payevents.contracts.channel import DEAD_LETTER_SUFFIX

    topic = f"t.{unique}"
    transport.create_topics([topic, topic + DEAD_LETTER_SUFFIX], 2)
    assert transport.describe(topic + DEAD_LETTER_SUFFIX).config.get("retention.ms") == "-1"
    assert transport.describe(topic).config.get("retention.ms") not in (None, "-1")
