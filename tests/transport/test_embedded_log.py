"""Embedded-only behaviour: several processes in one group, leases, durability across reopen."""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from transport_helpers import drain, next_offsets, wait_assigned

from payevents.errors import ConfigError, TransientError
from payevents.settings import Settings
from payevents.transport import Record, open_transport
from payevents.transport.embedded import EmbeddedTransport

WORKER = Path(__file__).with_name("embedded_worker.py")


def _leases(db: Path, group: str) -> dict[str, set[int]]:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT l.member, p.partition FROM leases l JOIN partitions p ON p.id = l.pid "
                            "WHERE l.grp = ?", (group,)).fetchall()
    finally:
        conn.close()
    out: dict[str, set[int]] = {}
    for member, partition in rows:
        out.setdefault(member, set()).add(partition)
    return out


def _committed_total(db: Path, group: str) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT COALESCE(SUM(next_offset), 0) FROM offsets WHERE grp = ?",
                                (group,)).fetchone()[0])
    finally:
        conn.close()


def _wait(predicate: object, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_two_processes_split_the_partitions_and_see_every_record_once(tmp_path: Path, unique: str) -> None:
    db = tmp_path / "channel.db"
    topic, group = f"t.{unique}", f"g.{unique}"
    transport = EmbeddedTransport(db)
    transport.create_topics([topic], 6)
    stop = tmp_path / "stop"
    workers = [subprocess.Popen([sys.executable, str(WORKER), str(db), topic, group, str(tmp_path / f"out{i}.json"),
                                 str(stop)], stdout=subprocess.PIPE, text=True) for i in range(2)]
    try:
        # both members alive and the six partitions split 3 + 3 before anything is produced
        _wait(lambda: sorted(len(p) for p in _leases(db, group).values()) == [3, 3], "a 3+3 split")
        producer = transport.producer()
        values = [f"v{i}" for i in range(3000)]
        for i in range(0, len(values), 100):
            producer.send([Record(topic, v.encode(), f"pay-{v}".encode()) for v in values[i:i + 100]])
        _wait(lambda: _committed_total(db, group) == len(values), "every record committed")
        stop.touch()
        for w in workers:
            assert w.wait(timeout=30) == 0
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
    outs = [json.loads((tmp_path / f"out{i}.json").read_text()) for i in range(2)]
    held = [{x[0] for x in o["seen"]} for o in outs]
    assert len(held[0]) == 3 and len(held[1]) == 3 and not held[0] & held[1]
    seen = [tuple(x) for o in outs for x in o["seen"]]
    assert all(o["seen"] for o in outs)  # both members really consumed
    assert len(seen) == len(set(seen)) == len(values)  # exactly once
    assert sorted(v for _, _, v in seen) == sorted(values)
    assert len(_leases(db, group)) == 0  # graceful close released everything


def test_a_killed_member_loses_its_partitions_without_waiting_for_its_lease(tmp_path: Path, unique: str) -> None:
    db = tmp_path / "channel.db"
    topic, group = f"t.{unique}", f"g.{unique}"
    transport = EmbeddedTransport(db, session_timeout=60)  # a lease that would outlive the test
    transport.create_topics([topic], 4)
    proc = subprocess.Popen([sys.executable, str(WORKER), str(db), topic, group, str(tmp_path / "out.json"),
                             str(tmp_path / "never")], stdout=subprocess.PIPE, text=True)
    try:
        _wait(lambda: [len(p) for p in _leases(db, group).values()] == [4], "the worker holding all partitions")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    survivor = transport.consumer(group, [topic])
    assert wait_assigned(survivor, 4, timeout=10) == {(topic, p) for p in range(4)}
    survivor.close()


def test_an_expired_lease_moves_and_its_late_commit_is_refused(tmp_path: Path, unique: str) -> None:
    topic, group = f"t.{unique}", f"g.{unique}"
    transport = EmbeddedTransport(tmp_path / "channel.db", session_timeout=0.6, heartbeat_interval=0.1)
    transport.create_topics([topic], 2)
    transport.producer().send([Record(topic, f"v{i}".encode(), partition=i % 2) for i in range(6)])
    stale = transport.consumer(group, [topic])
    assert stale.assignment() == {(topic, 0), (topic, 1)}
    got = drain(stale, 6)
    assert len(got) == 6

    fresh = transport.consumer(group, [topic])  # the stale member stops heartbeating from here on
    redelivered = []
    deadline = time.monotonic() + 10
    while len(fresh.assignment()) < 2 and time.monotonic() < deadline:
        redelivered += fresh.poll(10, 0.05)
    assert fresh.assignment() == {(topic, 0), (topic, 1)}
    stale.commit(next_offsets(got))  # too late: another member owns the partitions now
    assert fresh.committed([(topic, 0), (topic, 1)]) == {(topic, 0): None, (topic, 1): None}
    redelivered += drain(fresh, 6 - len(redelivered))
    assert sorted((m.partition, m.offset) for m in redelivered) == sorted((m.partition, m.offset) for m in got)
    fresh.close()
    stale.close()


def test_members_in_one_process_balance_and_a_closed_member_releases_at_once(tmp_path: Path, unique: str) -> None:
    topic, group = f"t.{unique}", f"g.{unique}"
    transport = EmbeddedTransport(tmp_path / "channel.db", heartbeat_interval=0.05)
    transport.create_topics([topic], 5)
    a = transport.consumer(group, [topic])
    assert len(a.assignment()) == 5
    b = transport.consumer(group, [topic])
    deadline = time.monotonic() + 10
    while sorted((len(a.assignment()), len(b.assignment()))) != [2, 3] and time.monotonic() < deadline:
        a.poll(10, 0.05)
        b.poll(10, 0.05)
    assert sorted((len(a.assignment()), len(b.assignment()))) == [2, 3]
    assert not a.assignment() & b.assignment()
    freed = b.assignment()
    b.close()
    assert b.member_id not in _leases(transport.path, group)
    c = transport.consumer(group, [topic])  # b's partitions are free right away: no waiting, no polling
    assert c.assignment() and c.assignment() <= freed
    deadline = time.monotonic() + 10
    while (a.assignment() | c.assignment()) != {(topic, p) for p in range(5)} and time.monotonic() < deadline:
        a.poll(10, 0.05)
        c.poll(10, 0.05)
    assert (a.assignment() | c.assignment()) == {(topic, p) for p in range(5)}
    assert not a.assignment() & c.assignment()
    a.close()
    c.close()


def test_the_log_survives_a_reopen(tmp_path: Path, unique: str) -> None:
    settings = Settings(env="dev", data_dir=tmp_path / "data")  # type: ignore[arg-type]
    topic, group = f"t.{unique}", f"g.{unique}"
    first = open_transport(settings)
    first.create_topics([topic], 3)
    producer = first.producer()
    sent = producer.send([Record(topic, f"v{i}".encode(), f"k{i}".encode()) for i in range(30)])
    consumer = first.consumer(group, [topic])
    consumer.commit(next_offsets(drain(consumer, 30)))
    consumer.close()
    producer.close()
    first.close()

    again = open_transport(settings)
    assert (settings.data_dir / "channel.db").exists()
    info = again.describe(topic)
    ends = {p: sum(1 for d in sent if d.partition == p) for p in range(3)}
    assert dict(info.end_offsets) == ends
    later = again.producer().send([Record(topic, b"after", b"k0")])
    assert later[0].offset == ends[later[0].partition]  # offsets continue, never restart at 0
    resumed = again.consumer(group, [topic])
    assert [m.value for m in drain(resumed, 1)] == [b"after"]
    resumed.close()
    with pytest.raises(ConfigError):
        again.create_topics([topic], 4)
    again.close()


def test_a_consumer_picks_up_a_topic_created_after_it_subscribed(tmp_path: Path, unique: str) -> None:
    topic, group = f"t.{unique}", f"g.{unique}"
    transport = EmbeddedTransport(tmp_path / "channel.db", heartbeat_interval=0.05)
    consumer = transport.consumer(group, [topic])
    assert consumer.assignment() == set()
    assert consumer.poll(10, 0.1) == []
    transport.create_topics([topic], 2)
    transport.producer().send([Record(topic, b"x", b"k")])
    assert [m.value for m in drain(consumer, 1, timeout=10)] == [b"x"]
    consumer.close()


def test_a_locked_log_is_a_transient_error_and_nothing_half_written(tmp_path: Path, unique: str) -> None:
    db = tmp_path / "channel.db"
    topic = f"t.{unique}"
    transport = EmbeddedTransport(db, busy_timeout=0.2)
    transport.create_topics([topic], 2)
    producer = transport.producer()
    producer.send([Record(topic, b"before", b"k")])
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process holding the write lock
    try:
        with pytest.raises(TransientError):
            producer.send([Record(topic, f"v{i}".encode(), f"k{i}".encode()) for i in range(10)])
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert sum(transport.describe(topic).end_offsets.values()) == 1
    producer.send([Record(topic, b"after", b"k")])  # works again once the lock is gone
    assert sum(transport.describe(topic).end_offsets.values()) == 2


def test_assignment_is_balanced_and_sticky() -> None:
    from payevents.transport.embedded import _assign

    parts = [(pid, "t") for pid in range(7)]
    alone = _assign([("a", {"t"})], parts, {})
    assert set(alone.values()) == {"a"}
    two = _assign([("a", {"t"}), ("b", {"t"})], parts, alone)
    assert sorted(list(two.values()).count(m) for m in "ab") == [3, 4]
    three = _assign([("a", {"t"}), ("b", {"t"}), ("c", {"t"})], parts, two)
    assert sorted(list(three.values()).count(m) for m in "abc") == [2, 2, 3]
    moved = sum(1 for pid, m in three.items() if two[pid] != m)
    assert moved == 2  # only what the newcomer needs
    # a member not subscribed to a topic gets none of it
    assert set(_assign([("a", {"t"}), ("x", {"other"})], parts, {}).values()) == {"a"}


def test_the_size_limit_counts_value_key_and_header_bytes_exactly(tmp_path: Path) -> None:
    """A record of exactly message.max.bytes (value + key + header names and values) is taken, one byte more
    is refused for good, whatever the headers' share (the producer checks an upper bound first)."""
    from payevents.transport.base import RecordsRefused, record_size

    limit = 1000
    transport = EmbeddedTransport(tmp_path / "channel.db", max_record_bytes=limit)
    try:
        transport.create_topics(["sizes"], 1)
        producer = transport.producer()
        for headers in ((), (("h", b"v"),), tuple((f"header-{i}", b"x" * 40) for i in range(12))):
            key = b"pay-1"
            fits = Record("sizes", b"v" * (limit - len(key) - sum(len(k) + len(v) for k, v in headers)), key, headers)
            assert record_size(fits) == limit
            too_big = Record("sizes", fits.value + b"v", key, headers)
            [delivery] = producer.send([fits])
            assert delivery.partition == 0
            with pytest.raises(RecordsRefused) as refused:
                producer.send([fits, too_big, fits])
            assert list(refused.value.refused) == [1] and "MSG_SIZE_TOO_LARGE" in refused.value.refused[1]
            assert [d is not None for d in refused.value.deliveries] == [True, False, True]
        with pytest.raises(RecordsRefused) as bad_topic:
            producer.send([Record("not a topic!", b"v", b"k")])
        assert "invalid topic name" in bad_topic.value.refused[0]
        producer.close()
    finally:
        transport.close()


@pytest.mark.parametrize(("item", "rule"), [
    ("session.timeout.ms=abc", "session.timeout.ms='abc' must be a whole number of milliseconds from 1 to 3,600,000"),
    ("session.timeout.ms=inf", "session.timeout.ms='inf' must be a whole number of milliseconds from 1 to 3,600,000"),
    ("heartbeat.interval.ms=-5", "heartbeat.interval.ms='-5' must be a whole number of milliseconds from 1 to"),
    ("message.max.bytes=0", "message.max.bytes='0' must be a whole number of bytes from 1,000 to 1,000,000,000"),
    ("offsets.retention.minutes=nan", "offsets.retention.minutes='nan' must be a whole number of minutes from 1 to"),
])
def test_the_kafka_settings_the_embedded_log_takes_are_checked_naming_them(item: str, rule: str,
                                                                          tmp_path: Path) -> None:
    """The embedded log reads four of ``PAYEVENTS_KAFKA_CONFIG``'s settings (librdkafka checks them on Kafka):
    until 2026-12-02 a word was a traceback, and a session of 0 ms or records of at most 0 bytes were taken."""
    env = {"PAYEVENTS_ENV": "dev", "PAYEVENTS_DATA_DIR": str(tmp_path), "PAYEVENTS_KAFKA_CONFIG": item}
    with pytest.raises(ConfigError, match=re.escape(f"PAYEVENTS_KAFKA_CONFIG: {rule}")):
        Settings.from_env(env)
    fine = Settings.from_env({**env, "PAYEVENTS_KAFKA_CONFIG": "session.timeout.ms=9000,heartbeat.interval.ms=900,"
                                                              "message.max.bytes=2000000,offsets.retention.minutes=60"})
    t = open_transport(fine)
    try:
        assert isinstance(t, EmbeddedTransport)
        assert (t.session_timeout, t.heartbeat_interval, t.max_record_bytes, t.offsets_retention_ms) == \
            (9.0, 0.9, 2_000_000, 3_600_000)
    finally:
        t.close()
