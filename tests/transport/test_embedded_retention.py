"""The embedded log keeps what it must, not everything (issue #11): retention by age AND committed offsets."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from payevents.errors import ConfigError
from payevents.transport import Record
from payevents.transport.embedded import EmbeddedTransport

TOPIC = "payments.dev.events"
HOUR_MS = 3600 * 1000
LATER = 2 * 3600  # seconds: "now" two hours on, past a one-hour retention


def _log(tmp_path: Path, retention_ms: int = HOUR_MS) -> EmbeddedTransport:
    t = EmbeddedTransport(tmp_path / "channel.db", retention_ms=retention_ms)
    t.create_topics([TOPIC], 1)
    return t


def _produce(t: EmbeddedTransport, n: int, size: int = 10) -> None:
    p = t.producer()
    try:
        p.send([Record(TOPIC, b"v" * size, key=b"k", partition=0) for _ in range(n)])
    finally:
        p.close()


def _commit(t: EmbeddedTransport, group: str, offset: int) -> None:
    c = t.consumer(group, [TOPIC])
    try:
        while (TOPIC, 0) not in c.assignment():
            c.poll(1, timeout=0.1)
        c.commit({(TOPIC, 0): offset})
    finally:
        c.close()


def _offsets(t: EmbeddedTransport) -> list[int]:
    return [m.offset for m in t.read(TOPIC, 0, 0, 10_000)]


def test_old_records_every_group_committed_past_are_removed(tmp_path: Path) -> None:
    t = _log(tmp_path)
    _produce(t, 10)
    _commit(t, "payevents.ledger", 10)
    _commit(t, "payevents.invoices", 4)  # the slowest group still needs offsets 4..9
    assert t.enforce_retention(now=time.time() + LATER) == {(TOPIC, 0): 4}
    assert _offsets(t) == list(range(4, 10))
    info = t.describe(TOPIC)
    assert info.start_offsets == {0: 4} and info.end_offsets == {0: 10} and info.records == 6
    assert info.config["retention.ms"] == str(HOUR_MS)
    _commit(t, "payevents.invoices", 10)
    assert t.enforce_retention(now=time.time() + LATER) == {(TOPIC, 0): 6}
    assert _offsets(t) == [] and t.describe(TOPIC).records == 0
    _produce(t, 2)  # offsets are never reused
    assert _offsets(t) == [10, 11] and t.describe(TOPIC).start_offsets == {0: 10}
    t.close()


def test_young_records_uncommitted_partitions_and_keep_forever_are_kept(tmp_path: Path) -> None:
    t = _log(tmp_path)
    _produce(t, 5)
    assert t.enforce_retention(now=time.time() + LATER) == {}  # no group committed: nothing proves it was read
    _commit(t, "payevents.ledger", 5)
    assert t.enforce_retention() == {}  # committed, but younger than the retention
    assert _offsets(t) == list(range(5))
    t.close()
    forever = EmbeddedTransport(tmp_path / "channel.db", retention_ms=-1)
    assert forever.enforce_retention(now=time.time() + 10 * 365 * 24 * 3600) == {}
    assert len(_offsets(forever)) == 5
    forever.close()


def test_the_longest_retention_is_applied_and_a_longer_one_refused(tmp_path: Path) -> None:
    """100 years is a cutoff SQLite's integers hold; a longer retention is refused when the log is opened (it
    ended the retention pass in an OverflowError)."""
    from payevents.contracts.channel import MAX_RETENTION_MS

    t = _log(tmp_path)
    _produce(t, 3)
    _commit(t, "payevents.ledger", 3)
    t.close()
    longest = EmbeddedTransport(tmp_path / "channel.db", retention_ms=MAX_RETENTION_MS, offsets_retention_ms=-1)
    assert longest.enforce_retention() == {}
    assert longest.enforce_retention(now=time.time() + 101 * 365 * 24 * 3600) == {(TOPIC, 0): 3}
    longest.close()
    for bad in (MAX_RETENTION_MS + 1, 10**23, -5):
        with pytest.raises(ConfigError, match=f"retention_ms: {bad} must be -1"):
            EmbeddedTransport(tmp_path / "channel.db", retention_ms=bad)


def test_a_new_group_reading_from_the_beginning_starts_at_the_log_start(tmp_path: Path) -> None:
    t = _log(tmp_path)
    _produce(t, 8)
    _commit(t, "payevents.ledger", 6)
    t.enforce_retention(now=time.time() + LATER)
    c = t.consumer("payevents.analytics", [TOPIC])
    try:
        got = []
        while len(got) < 2:
            got.extend(c.poll(100, timeout=0.2))
        assert [m.offset for m in got] == [6, 7]
        assert c.lag() == {(TOPIC, 0): 2}  # not 8: the removed records are not owed to anyone
    finally:
        c.close()
        t.close()


def test_the_file_stops_growing_when_retention_keeps_pace(tmp_path: Path) -> None:
    t = _log(tmp_path)
    sizes = []
    end = 0
    for _ in range(12):
        _produce(t, 200, size=2000)
        end += 200
        _commit(t, "payevents.ledger", end)
        t.enforce_retention(now=time.time() + LATER)
        sizes.append(t.storage_bytes())
    t.close()
    # freed pages are reused: after the first rounds the log holds one round's records, not twelve
    assert sizes[-1] <= sizes[2] * 1.2, sizes
    assert sizes[-1] < 200 * 2000 * 4


def test_topics_describe_tells_the_truth(tmp_path: Path) -> None:
    from payevents.faces.cli import app

    data = tmp_path / "data"
    t = EmbeddedTransport(data / "channel.db", retention_ms=HOUR_MS)
    t.create_topics([TOPIC, "payments.dev.events.dlq"], 1)
    _produce(t, 7)
    _commit(t, "payevents.ledger", 5)
    t.enforce_retention(now=time.time() + LATER)
    t.close()
    env = {"PAYEVENTS_RETENTION_MS": str(HOUR_MS), "PAYEVENTS_PARTITIONS": "1"}
    r = CliRunner().invoke(app, ["topics", "describe", "--json", "--env", "dev", "--data-dir", str(data)], env=env)
    assert r.exit_code == 0, r.output
    channel = json.loads(r.output)[0]
    assert channel["startOffsets"] == {"0": 5} and channel["endOffsets"] == {"0": 7} and channel["records"] == 2
    assert channel["config"]["retention.ms"] == str(HOUR_MS) and channel["storageBytes"] > 0
    table = CliRunner().invoke(app, ["topics", "describe", "--env", "dev", "--data-dir", str(data)], env=env)
    assert "0:5..7" in table.output, table.output


def test_topics_trim_applies_retention_now(tmp_path: Path) -> None:
    from payevents.faces.cli import app

    data = tmp_path / "data"
    t = EmbeddedTransport(data / "channel.db", retention_ms=0)
    t.create_topics([TOPIC], 1)
    _produce(t, 3)
    _commit(t, "payevents.ledger", 2)
    t.close()
    r = CliRunner().invoke(app, ["topics", "trim", "--env", "dev", "--data-dir", str(data)],
                           env={"PAYEVENTS_RETENTION_MS": "0"})
    assert r.exit_code == 0 and f"{TOPIC}[0]: 2 records removed" in r.output, r.output
    t = EmbeddedTransport(data / "channel.db")
    assert _offsets(t) == [2]
    t.close()


def test_an_abandoned_group_stops_holding_records_once_its_offsets_expire(tmp_path: Path) -> None:
    """Kafka's offsets.retention.minutes: a group with no member that has not committed for that long loses its
    offsets, so it no longer holds back retention (a service renamed or retired must not keep the log forever).
    A group with a live member keeps its offsets however old its last commit."""
    t = EmbeddedTransport(tmp_path / "channel.db", retention_ms=HOUR_MS, offsets_retention_ms=3 * HOUR_MS)
    t.create_topics([TOPIC], 1)
    _produce(t, 10)
    _commit(t, "payevents.retired", 2)  # then never seen again
    ledger = t.consumer("payevents.ledger", [TOPIC])  # a live member throughout
    try:
        while (TOPIC, 0) not in ledger.assignment():
            ledger.poll(1, timeout=0.1)
        ledger.commit({(TOPIC, 0): 10})
        assert t.enforce_retention(now=time.time() + LATER) == {(TOPIC, 0): 2}  # two hours on: still its offsets
        assert t.group_offsets("payevents.retired", TOPIC) == {0: 2}
        assert t.enforce_retention(now=time.time() + 4 * 3600) == {(TOPIC, 0): 8}  # four hours on: expired
        assert t.group_offsets("payevents.retired", TOPIC) == {}
        assert t.group_offsets("payevents.ledger", TOPIC) == {0: 10}
        assert _offsets(t) == []
    finally:
        ledger.close()
        t.close()


def test_a_group_with_a_live_member_keeps_its_offsets(tmp_path: Path) -> None:
    t = EmbeddedTransport(tmp_path / "channel.db", retention_ms=HOUR_MS, offsets_retention_ms=3 * HOUR_MS)
    t.create_topics([TOPIC], 1)
    _produce(t, 10)
    _commit(t, "payevents.ledger", 10)
    slow = t.consumer("payevents.slow", [TOPIC])
    try:
        while (TOPIC, 0) not in slow.assignment():
            slow.poll(1, timeout=0.1)
        slow.commit({(TOPIC, 0): 3})
        # its member holds a lease (judged on the real clock, not the simulated ``now``): its offsets stay
        assert t.enforce_retention(now=time.time() + 4 * 3600) == {(TOPIC, 0): 3}
        assert t.group_offsets("payevents.slow", TOPIC) == {0: 3}
    finally:
        slow.close()
        t.close()


def test_offsets_retention_comes_from_the_kafka_setting_of_the_same_name(tmp_path: Path) -> None:
    from payevents.settings import Settings
    from payevents.transport import open_transport

    s = Settings(env="dev", data_dir=tmp_path,  # type: ignore[arg-type]
                 kafka_config={"offsets.retention.minutes": "30"})
    t = open_transport(s)
    try:
        assert t.offsets_retention_ms == 30 * 60 * 1000  # type: ignore[attr-defined]
    finally:
        t.close()
    t = open_transport(Settings(env="dev", data_dir=tmp_path))  # type: ignore[arg-type]
    try:
        assert t.offsets_retention_ms == 7 * 24 * 3600 * 1000  # type: ignore[attr-defined]  # Kafka's default
    finally:
        t.close()


def test_dead_letters_are_kept_even_when_a_group_read_past_them(tmp_path: Path) -> None:
    from payevents.contracts.channel import dead_letter_topic_for

    dlq = dead_letter_topic_for("dev")
    t = EmbeddedTransport(tmp_path / "channel.db", retention_ms=HOUR_MS)
    t.create_topics([TOPIC, dlq], 1)
    p = t.producer()
    p.send([Record(dlq, b"poison", key=b"k", partition=0) for _ in range(3)])
    p.close()
    c = t.consumer("dlq-watch", [dlq])  # e.g. an alerting consumer of the dead-letter channel
    while (dlq, 0) not in c.assignment():
        c.poll(1, timeout=0.1)
    c.commit({(dlq, 0): 3})
    c.close()
    assert t.enforce_retention(now=time.time() + LATER) == {}
    assert [m.offset for m in t.read(dlq, 0, 0, 10)] == [0, 1, 2]
    assert t.describe(dlq).config["retention.ms"] == "-1"
    t.close()
