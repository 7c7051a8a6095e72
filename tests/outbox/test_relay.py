"""The relay: pending rows reach the channel in per-payment order, are marked published, delays measured."""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import orjson
import pytest
from outbox_helpers import append_one, headers_for, processed_event, read_channel, relay_running, wait_until
from prometheus_client import REGISTRY
from sqlalchemy.engine import Engine

from payevents.contracts.channel import dead_letter_topic_for, topic_for
from payevents.runtime import outbox
from payevents.runtime.outbox import (
    OUTBOX_MIGRATIONS,
    append,
    events_for_payment,
    pending_count,
    percentiles,
    published_delays,
)
from payevents.runtime.relay import DELAY_BUCKETS, DelayStats, Relay, observe_many
from payevents.settings import Settings
from payevents.store.db import connect
from payevents.transport import open_transport
from payevents.transport.base import Delivery, Record


def _histogram_count() -> float:
    return REGISTRY.get_sample_value("payevents_publish_delay_seconds_count") or 0.0


def test_relay_publishes_in_payment_order_and_records_status(outbox_engine: Engine, store_settings: Settings) -> None:
    payments = [f"pay-{uuid.uuid4()}" for _ in range(5)]
    expected: dict[str, list[str]] = defaultdict(list)
    with outbox_engine.begin() as conn:  # one transaction, many events: no commit per event
        for i in range(60):
            pid = random.choice(payments)
            key = f"relay-{i}"
            ev = processed_event(pid, amount=f"{i + 1}.00")
            append(conn, ev, headers=headers_for(key, pid), idempotency_key=key, env="dev")
            expected[pid].append(ev.eventId)
    before = _histogram_count()
    with Relay(store_settings, engine=outbox_engine, batch_size=25) as relay:
        relay.ensure_topics()
        assert relay.publish_pending(limit=10) == 10
        assert pending_count(outbox_engine) == 50
        while relay.publish_pending():
            pass
        assert pending_count(outbox_engine) == 0
        assert relay.stats.published == 60 and relay.stats.batches == 3
        assert relay.stats.delay["count"] == 60 and 0 < relay.stats.p50 <= relay.stats.p99 <= relay.stats.max
        messages = read_channel(relay.transport, topic_for("dev"))
        assert relay.transport.describe(dead_letter_topic_for("dev")).partitions == store_settings.partitions
    assert _histogram_count() - before == 60

    got: dict[str, list[str]] = defaultdict(list)
    for m in messages:
        assert m.key is not None and m.value is not None
        assert m.header("eventId") == orjson.loads(m.value)["eventId"]
        assert m.header("content-type") == "application/json" and m.header("source") == "payments"
        got[m.key.decode()].append(m.header("eventId") or "")
    assert got == expected  # each payment's events, exactly once, in the order they were stored

    for pid in payments:
        for st in events_for_payment(outbox_engine, pid):
            msg = next(m for m in messages if m.header("eventId") == st.event_id)
            assert st.published and (st.partition, st.offset) == (msg.partition, msg.offset)
            assert st.delay_s is not None and st.published_at == pytest.approx(st.created_at + st.delay_s)
    delays = published_delays(outbox_engine)
    assert len(delays) == 60 and all(d >= 0 for d in delays)
    assert published_delays(outbox_engine, since=max(e.published_at or 0 for e in
                                                     events_for_payment(outbox_engine, payments[0])) + 60) == []


def test_sla_breach_is_logged_with_event_id(outbox_engine: Engine, store_settings: Settings,
                                            monkeypatch: pytest.MonkeyPatch,
                                            caplog: pytest.LogCaptureFixture) -> None:
    real_clock = outbox.clock
    monkeypatch.setattr(outbox, "clock", lambda: real_clock() - 6.0)  # committed 6 s ago
    late = append_one(outbox_engine, "pay-late", "late")
    monkeypatch.setattr(outbox, "clock", real_clock)
    on_time = append_one(outbox_engine, "pay-on-time", "on-time")
    with caplog.at_level(logging.WARNING, logger="payevents.relay"), \
            Relay(store_settings, engine=outbox_engine) as relay:
        relay.ensure_topics()
        assert relay.publish_pending() == 2
        assert relay.stats.sla_breaches == 1
    breaches = [r for r in caplog.records if r.name == "payevents.relay" and "SLA breach" in r.getMessage()]
    assert len(breaches) == 1 and breaches[0].levelno == logging.WARNING
    assert late.event_id in breaches[0].getMessage() and on_time.event_id not in breaches[0].getMessage()
    # no card data, not even last4 (the eventId, a UUID, may hold "4242" by chance)
    assert "4242" not in breaches[0].getMessage().replace(late.event_id, "<eventId>")
    assert max(published_delays(outbox_engine)) > 5.0


def test_delay_stats_percentiles_are_within_one_percent() -> None:
    rng = random.Random(7)
    values = [rng.lognormvariate(-4, 1.2) for _ in range(20_000)]
    stats = DelayStats()
    for v in values:
        stats.record(v)
    exact = percentiles(values, (0.5, 0.9, 0.99, 0.999))
    summary = stats.summary()
    assert summary["count"] == 20_000 and summary["max"] == max(values)
    for q, name in ((0.5, "p50"), (0.9, "p90"), (0.99, "p99"), (0.999, "p999")):
        assert summary[name] == pytest.approx(exact[q], rel=0.011)


@pytest.mark.kafka
def test_relay_publishes_to_kafka(kafka_settings: Settings) -> None:
    engine = connect(kafka_settings, "payments", OUTBOX_MIGRATIONS)
    pid = f"pay-{uuid.uuid4()}"
    ids = [append_one(engine, pid, f"kafka-{uuid.uuid4()}", amount=f"{i + 1}.00").event_id for i in range(20)]
    with Relay(kafka_settings, engine=engine, batch_size=7) as relay:
        with relay_running(relay):
            wait_until(lambda: pending_count(engine) == 0, 60, "the relay to publish 20 events to Kafka")
        assert relay.stats.published == 20 and relay.stats.p99 > 0
    transport = open_transport(kafka_settings)
    try:
        stored = events_for_payment(engine, pid)
        partition = stored[0].partition
        assert partition is not None and {e.partition for e in stored} == {partition}
        # The shared session broker holds other tests' records too: read from our first offset.
        first = min(e.offset or 0 for e in stored)
        messages = [m for m in transport.read(topic_for("dev"), partition, first, 500) if m.key == pid.encode()]
    finally:
        transport.close()
    assert [m.header("eventId") for m in messages] == ids


def test_relay_has_no_high_water_mark(outbox_engine: Engine, store_settings: Settings) -> None:
    """A pending row below already-published seqs (what a late commit looks like to a high-water-mark
    relay) is still published: pending is a table, not a position."""
    ids = [append_one(outbox_engine, f"pay-hw-{i}", f"hw-{i}").event_id for i in range(5)]
    with Relay(store_settings, engine=outbox_engine) as relay:
        relay.ensure_topics()
        assert relay.publish_pending() == 5
        with outbox_engine.begin() as conn:  # seq 2 becomes pending again while 3..5 stay published
            conn.exec_driver_sql("INSERT INTO outbox_pending (seq) VALUES (2)")
            conn.exec_driver_sql("DELETE FROM outbox_published WHERE seq = 2")
        assert relay.publish_pending() == 1
        messages = read_channel(relay.transport, topic_for("dev"))
    assert [m.header("eventId") for m in messages].count(ids[1]) == 2
    assert pending_count(outbox_engine) == 0


def test_a_seq_marked_before_keeps_its_first_mark(outbox_engine: Engine, store_settings: Settings) -> None:
    """A pending seq that outbox_published already holds (a mark that outlived its pending row's delete) is sent
    again, its pending row goes, and its first mark stays: the relay's marks are INSERT ... ON CONFLICT (seq) DO
    NOTHING, on PostgreSQL one COPY that falls back to that INSERT (runtime.bulk.copy_rows)."""
    for i in range(3):
        append_one(outbox_engine, f"pay-again-{i}", f"again-{i}")
    with Relay(store_settings, engine=outbox_engine) as relay:
        relay.ensure_topics()
        assert relay.publish_pending() == 3
        with outbox_engine.begin() as conn:
            first = tuple(conn.exec_driver_sql(
                'SELECT published_at, "offset" FROM outbox_published WHERE seq = 2').one())
            conn.exec_driver_sql("INSERT INTO outbox_pending (seq) VALUES (2)")
        assert relay.publish_pending() == 1
    assert pending_count(outbox_engine) == 0
    with outbox_engine.connect() as conn:
        rows = conn.exec_driver_sql('SELECT seq, published_at, "offset" FROM outbox_published ORDER BY seq').all()
    assert [r[0] for r in rows] == [1, 2, 3] and tuple(rows[1][1:]) == first


def test_an_idle_relay_waits_for_the_outbox_to_change_instead_of_asking_it(
        outbox_engine: Engine, store_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """With nothing pending the relay does not ask the outbox again and again: it waits for a change (SQLite:
    another connection's commit; PostgreSQL: the notification the trigger on outbox_pending sends at commit) and
    publishes what came — an append, and a row put back by someone's own SQL. Its look anyway after IDLE_PASS_S
    is put out of reach here, so only the wake-up can publish them."""
    import sqlalchemy as sa

    from payevents.runtime import relay as relay_module

    monkeypatch.setattr(relay_module, "IDLE_PASS_S", 3600.0, raising=False)
    passes: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.startswith("SELECT") and "FROM outbox_pending" in statement:  # a pass (not a COUNT)
            passes.append(statement)

    sa.event.listen(outbox_engine, "before_cursor_execute", count)
    with Relay(store_settings, engine=outbox_engine) as relay:
        with relay_running(relay, join_s=30) as worker:
            wait_until(lambda: relay.last_pass_ok, 30, "the relay's first pass")
            idle_from = len(passes)
            time.sleep(0.5)  # nothing changes: it used to look every 5 ms, ~100 passes
            assert len(passes) - idle_from == 0, (idle_from, len(passes))
            first = append_one(outbox_engine, "pay-idle", "idle-1")
            wait_until(lambda: pending_count(outbox_engine) == 0, 20, "the append to be published")
            with outbox_engine.begin() as conn:  # a deliberate re-send, by hand
                conn.exec_driver_sql(f"INSERT INTO outbox_pending (seq) VALUES ({first.seq})")
            wait_until(lambda: relay.stats.published == 2, 20, "the row put back to be published")
        assert not worker.is_alive()
    sa.event.remove(outbox_engine, "before_cursor_execute", count)


@pytest.mark.postgres
def test_a_relay_whose_wait_loses_its_connection_goes_on_publishing(
        pg_settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The server ends the session the idle relay listens on: the relay says so, looks at the table meanwhile and
    publishes what comes."""
    from payevents.runtime import relay as relay_module

    monkeypatch.setattr(relay_module, "IDLE_PASS_S", 3600.0)
    engine = connect(pg_settings, "payments", OUTBOX_MIGRATIONS)
    with Relay(pg_settings, engine=engine) as relay, caplog.at_level(logging.WARNING, "payevents.relay"):
        with relay_running(relay, join_s=30) as worker:
            wait_until(lambda: relay._watch is not None, 30, "the relay to wait for changes")
            pid = relay._watch._conn.info.backend_pid  # type: ignore[union-attr]
            with engine.connect() as killer:
                assert killer.exec_driver_sql("SELECT pg_terminate_backend(%s)", (pid,)).scalar_one()
            wait_until(lambda: any("waiting for new events failed" in r.getMessage() for r in caplog.records), 20,
                       "the relay to notice")
            append_one(engine, "pay-lost-watch", "lost-watch-1")
            wait_until(lambda: pending_count(engine) == 0, 20, "the append to be published")
        assert not worker.is_alive() and relay.stats.published == 1


def test_run_retries_transient_broker_faults_without_loss(outbox_engine: Engine, store_settings: Settings) -> None:
    from payevents.errors import TransientError

    real = open_transport(store_settings)
    failures = {"left": 2}

    class FlakyProducer:
        def __init__(self) -> None:
            self.inner = real.producer()

        def send(self, records: Sequence[Record]) -> list[Delivery]:
            if failures["left"]:
                failures["left"] -= 1
                raise TransientError("broker unreachable (test)")
            return self.inner.send(records)

        def close(self) -> None:
            self.inner.close()

    class FlakyTransport:
        name = "flaky"

        def producer(self) -> FlakyProducer:
            return FlakyProducer()

        def __getattr__(self, attr: str) -> Any:
            return getattr(real, attr)

    ids = [append_one(outbox_engine, "pay-flaky", f"flaky-{i}", amount=f"{i + 1}.00").event_id for i in range(10)]
    relay = Relay(store_settings, engine=outbox_engine, transport=FlakyTransport())  # type: ignore[arg-type]
    with relay_running(relay):
        wait_until(lambda: pending_count(outbox_engine) == 0, 30, "the relay to recover and publish")
    assert relay.stats.errors == 2 and relay.stats.published == 10
    assert [m.header("eventId") for m in read_channel(real, topic_for("dev"))] == ids
    real.close()


def test_delay_stats_record_many_equals_record_one_by_one() -> None:
    rng = random.Random(3)
    values = [rng.expovariate(50.0) for _ in range(2000)] + [0.0, -0.5, 12.0]
    one, many = DelayStats(), DelayStats()
    for v in values:
        one.record(v)
    many.record_many(values[:700])
    many.record_many(values[700:])
    many.record_many([])
    assert many.summary() == pytest.approx(one.summary())
    assert many.count == len(values) and many.min == 0.0 and many.max == 12.0


def test_observe_many_exposes_what_observing_one_by_one_exposes() -> None:
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    rng = random.Random(11)
    # values on the bucket bounds, between them, below the first and past the last (the +Inf bucket)
    values = [0.001, 0.0015, 0.05, 0.0500001, 10.0, 12.5, 0.0, *(rng.expovariate(40.0) for _ in range(3000))]
    one_reg, many_reg = CollectorRegistry(), CollectorRegistry()
    one = Histogram("d", "delay", buckets=DELAY_BUCKETS, registry=one_reg)
    many = Histogram("d", "delay", buckets=DELAY_BUCKETS, registry=many_reg)
    for v in values:
        one.observe(v)
    observe_many(many, values[:1000])
    observe_many(many, values[1000:])
    observe_many(many, [])

    def samples(reg: CollectorRegistry) -> dict[tuple[str, str], float]:
        return {(s.name, s.labels.get("le", "")): s.value for m in reg.collect() for s in m.samples
                if not s.name.endswith("_created")}

    a, b = samples(one_reg), samples(many_reg)
    assert a.keys() == b.keys() and a[("d_count", "")] == len(values)
    for k in a:
        assert b[k] == pytest.approx(a[k]), k
    assert generate_latest(one_reg).count(b"\n") == generate_latest(many_reg).count(b"\n")


def test_a_database_turned_read_only_holds_the_marks_back_and_the_relay_goes_on(pg_settings: Settings) -> None:
    # mid-failover the payments database answers reads and refuses writes (SQLSTATE 25006, which the driver files
    # as an InternalError): the relay's marks must wait it out, not end the thread that writes them
    from db_faults import read_only_sessions

    engine = connect(pg_settings, "payments", OUTBOX_MIGRATIONS)
    ids = [append_one(engine, "pay-ro", f"ro-{i}", amount=f"{i + 1}.00").event_id for i in range(10)]
    stop = threading.Event()
    relay = Relay(pg_settings, engine=engine)
    relay.ensure_topics()
    assert relay.acquire()
    worker = threading.Thread(target=relay.run, args=(stop,), daemon=True)
    try:
        with read_only_sessions([engine]):
            worker.start()
            wait_until(lambda: relay.stats.errors >= 2, 30, "the relay to meet the read-only database")
        wait_until(lambda: pending_count(engine) == 0, 30, "the relay to mark what it published")
        stop.set()
        worker.join(10)
        assert [m.header("eventId") for m in read_channel(relay.transport, topic_for("dev"))] == ids  # each once
    finally:
        stop.set()
        worker.join(10)
        relay.close()


def test_a_relay_whose_lock_session_ended_stops_publishing_until_it_holds_the_lock_again(pg_settings: Settings) -> None:
    # The relay's lease on PostgreSQL is a session advisory lock on a connection of its own. When the server ends
    # that session (its keepalives found the link dead, an operator's pg_terminate_backend, a restart), the lock
    # is free and another relay takes it — while the first one, never using that connection again, went on
    # publishing as if it held it: two relays on one outbox
    from payevents.store.db import AdvisoryLock

    engine = connect(pg_settings, "payments", OUTBOX_MIGRATIONS)
    first = Relay(pg_settings, engine=engine)
    stop = threading.Event()
    worker = threading.Thread(target=first.run, args=(stop,), daemon=True)
    worker.start()
    second = Relay(pg_settings, engine=engine)
    lock_sql = f"{AdvisoryLock.CLASS_ID}, 'outbox_pending'::regclass::oid"
    try:
        wait_until(lambda: first.lease_held, 30, "the first relay to take the outbox lock")
        # The second relay's lock session queues for the lock before the first one's session ends: the server
        # grants it to the waiter as it frees it, so the first relay (which tries again as soon as it finds its
        # session gone) cannot take it back in between
        session = engine.connect()
        queued = threading.Thread(target=lambda: session.exec_driver_sql(f"SELECT pg_advisory_lock({lock_sql}::int)"))
        queued.start()

        def waiters() -> int:
            with engine.connect() as conn:
                return int(conn.exec_driver_sql(
                    f"SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND (classid, objid) = ({lock_sql})"
                    " AND NOT granted").scalar_one())

        wait_until(lambda: waiters() == 1, 30, "the second relay's session to queue for the lock")
        with engine.begin() as conn:
            ended = conn.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory'"
                f" AND (classid, objid) = ({lock_sql}) AND granted"
            ).scalars().all()
        assert ended == [True]
        queued.join(30)
        assert not queued.is_alive()  # the lock is the second relay's now
        session.commit()
        second.lock._lock._conn, second.lock._lock.held = session, True  # type: ignore[attr-defined]
        wait_until(lambda: not first.lease_held, 15, "the first relay to find that it lost the lock")
        ids = [append_one(engine, "pay-lease", f"lease-{i}", amount=f"{i + 1}.00").event_id for i in range(3)]
        assert second.publish_pending() == 3  # published once, by the holder
        second.lock.release()
        wait_until(lambda: first.lease_held, 15, "the first relay to take the lock back")
        assert [m.header("eventId") for m in read_channel(second.transport, topic_for("dev"))] == ids
    finally:
        stop.set()
        worker.join(10)
        second.close()
        first.close()
