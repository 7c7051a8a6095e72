"""Write-behind batches on PostgreSQL (payevents.runtime.writebehind): a batch's rows and COMMIT sent without waiting,
its offsets committed and its counts recorded only once the next step has read that it committed; a batch that
did not commit is applied again through a transaction that is waited for."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest
import runtime_counter as rc
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from payevents.contracts.codec import DecodedEvent
from payevents.localkafka import FAST_GROUP_CONFIG
from payevents.runtime import bulk
from payevents.runtime.consumer import ConsumerRuntime
from payevents.runtime.deadletter import list_dead_letters
from payevents.runtime.service import ServiceDef
from payevents.runtime.writebehind import LateFailure, WriteBehind
from payevents.settings import Settings
from payevents.store import db
from payevents.store.db import Migration
from payevents.transport.base import Message, Record

pytestmark = pytest.mark.postgres

_TABLE = Migration(1, "write-behind rows", both=[
    "CREATE TABLE wb_rows (event_id VARCHAR(64) PRIMARY KEY, payment_id VARCHAR(12) NOT NULL,"
    " partition_no BIGINT NOT NULL, offset_no BIGINT NOT NULL)"])


def _rows_batch(conn: Connection, batch: Sequence[tuple[DecodedEvent, Message]]) -> None:
    """One row per event through runtime.bulk.copy_rows (deferred in a write-behind batch); a paymentId longer than
    12 characters is refused by the store, but only when the rows reach it."""
    bulk.copy_rows(conn, "wb_rows", ("event_id", "payment_id", "partition_no", "offset_no"),
                   [(d.event_id, d.payment_id, m.partition, m.offset) for d, m in batch])


def _service(name: str) -> ServiceDef:
    return ServiceDef(name=name, description="write-behind rows (tests)", migrations=[_TABLE],
                      handlers={"PaymentProcessed": lambda conn, d, m: _rows_batch(conn, [(d, m)])},
                      batch_handler=_rows_batch)


def _rows(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return sorted(conn.exec_driver_sql("SELECT event_id FROM wb_rows").scalars())


def _committed(rt: ConsumerRuntime) -> int:
    """Records behind the group's committed offsets (a fresh channel: every partition starts at 0)."""
    parts = [(rt.topic, p) for p in range(rt.settings.partitions)]
    return sum(o or 0 for o in rt.consumer.committed(parts).values())


def _terminate(engine: Engine, pid: int) -> None:
    """The server ends backend ``pid`` (as a restart or an administrator would), and the client has been told."""
    with engine.connect() as killer:
        assert killer.exec_driver_sql("SELECT pg_terminate_backend(%s)", (pid,)).scalar_one()
        for _ in range(500):
            # each look in a transaction of its own: PostgreSQL shows a transaction one view of pg_stat_activity
            # (stats_fetch_consistency = cache), so a backend still exiting at the first look stayed "there" for
            # every look after it in the same transaction (a CI run failed so)
            killer.rollback()
            if not killer.exec_driver_sql("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).first():
                return
            time.sleep(0.02)
    raise AssertionError(f"backend {pid} still there")


def _driver_pid(conn: Connection) -> int:
    """The server process of ``conn`` (read from the driver: the connection may be busy)."""
    return int(conn.connection.driver_connection.info.backend_pid)  # type: ignore[union-attr]


def _backend(rt: ConsumerRuntime) -> int:
    """The server process of the runtime's write-behind connection."""
    conn = rt._wb._conn  # type: ignore[union-attr]
    assert conn is not None
    return _driver_pid(conn)


@contextmanager
def _locked(engine: Engine) -> Iterator[Connection]:
    """``wb_rows`` locked (ACCESS EXCLUSIVE) by another connection until the block ends or it rolls back: the
    server cannot write a batch's rows meanwhile."""
    with engine.connect() as locker:
        locker.exec_driver_sql("LOCK TABLE wb_rows IN ACCESS EXCLUSIVE MODE")
        yield locker


def _sent(settings: Settings, n: int, prefix: str = "PAY-") -> list[tuple[Record, dict[str, Any]]]:
    """``n`` PaymentProcessed of 1.00 for the payments ``{prefix}0`` to ``{prefix}{n-1}``, on the channel."""
    records = [rc.event_record(settings, f"{prefix}{i}", "1.00") for i in range(n)]
    rc.send(settings, [r for r, _ev in records])
    return records


@pytest.fixture
def name(unique: str) -> str:
    return f"_wb_{unique}"


def test_a_batch_counts_and_commits_its_offsets_only_once_its_commit_is_confirmed(pg_settings: Settings,
                                                                                  name: str) -> None:
    """The step that applies a batch returns before the server confirms its commit: nothing counted, no offset
    committed. A table lock held elsewhere keeps the server from writing the batch, which shows the step did not
    wait; when the lock goes, the next step reads the commit, counts the batch and commits its offsets."""
    svc = _service(name)
    records = _sent(pg_settings, 20)
    with ConsumerRuntime(pg_settings, svc, poll_timeout=0.2, write_behind=True) as rt:
        engine = db.engine_for(pg_settings, svc.name)
        with _locked(engine) as locker:
            result = rt.step()  # would hang here if it waited for its commit
            assert result.in_flight and result.consumed == 20 and result.applied == 20
            assert rt.stats.consumed == 0 and rt.stats.applied == 0
            assert _committed(rt) == 0
            locker.rollback()
        result = rt.step()  # nothing new: the batch in flight is confirmed
        assert result.consumed == 0 and sum(result.committed.values()) == 20
        assert rt.stats.consumed == 20 and rt.stats.applied == 20
        assert _committed(rt) == 20
    assert _rows(engine) == sorted(ev["eventId"] for _r, ev in records)


def test_a_batch_the_server_refuses_at_commit_is_applied_again_and_its_culprit_dead_lettered(
        pg_settings: Settings, name: str) -> None:
    """A value too long for its column fails only when the deferred rows reach the server, after the step that
    applied the batch: the batch is rolled back there and applied again, waited for, which finds the one record the
    store refuses and dead-letters it. Every other record is applied once, and counted once."""
    svc = _service(name)
    records = [rc.event_record(pg_settings, f"PAY-{i}", "1.00") for i in range(10)]
    bad, ev_bad = rc.event_record(pg_settings, "PAY-" + "x" * 20, "2.00")
    records.insert(4, (bad, ev_bad))
    rc.send(pg_settings, [r for r, _ev in records])
    with ConsumerRuntime(pg_settings, svc, poll_timeout=0.2, write_behind=True) as rt:
        first = rt.step()
        assert first.in_flight and first.applied == 11  # the server has not refused it yet
        rt.step()
        assert rt.stats.consumed == 11 and rt.stats.applied == 10 and rt.stats.dead_lettered == 1
        assert rt.stats.retries == 0
        assert _committed(rt) == 11
    engine = db.engine_for(pg_settings, svc.name)
    assert _rows(engine) == sorted(ev["eventId"] for _r, ev in records if ev is not ev_bad)
    (letter,) = list_dead_letters(pg_settings, service=svc.name)
    assert letter.event_id == ev_bad["eventId"]
    assert letter.reason.startswith("rejected: the store refuses its data: DataError:"), letter.reason


def test_a_connection_lost_before_the_commit_is_confirmed_loses_nothing_and_applies_nothing_twice(
        pg_settings: Settings, name: str) -> None:
    """The server ends the write-behind connection while the batch waits on a lock (so it certainly did not commit):
    the next step finds the batch's outcome unknown and applies it again on a new connection."""
    svc = _service(name)
    first = _sent(pg_settings, 15, "PAY-A")
    with ConsumerRuntime(pg_settings, svc, poll_timeout=0.2, write_behind=True) as rt:
        engine = db.engine_for(pg_settings, svc.name)
        with _locked(engine) as locker:
            assert rt.step().in_flight
            _terminate(engine, _backend(rt))
            locker.rollback()
        second = _sent(pg_settings, 5, "PAY-B")
        for _ in range(20):
            rt.step()
            if rt.stats.applied == 20:
                break
        rt.step()
        assert rt.stats.applied == 20 and rt.stats.consumed == 20
        assert _committed(rt) == 20
    assert _rows(engine) == sorted(ev["eventId"] for _r, ev in first + second)


def test_settle_confirms_the_batch_in_flight_now(pg_settings: Settings, name: str) -> None:
    svc = _service(name)
    rc.send(pg_settings, [rc.event_record(pg_settings, f"PAY-{i}", "1.00")[0] for i in range(3)])
    with ConsumerRuntime(pg_settings, svc, poll_timeout=0.2, write_behind=True) as rt:
        assert rt.step().in_flight and rt.stats.applied == 0
        assert sum(rt.settle().values()) == 3
        assert rt.stats.applied == 3 and _committed(rt) == 3
        assert rt.settle() == {}  # nothing in flight


def test_close_confirms_the_batch_in_flight(pg_settings: Settings, name: str) -> None:
    svc = _service(name)
    _sent(pg_settings, 7)
    rt = ConsumerRuntime(pg_settings, svc, poll_timeout=0.2, write_behind=True)
    assert rt.step().in_flight
    rt.close()
    assert rt.stats.applied == 7
    with ConsumerRuntime(pg_settings, svc, poll_timeout=0.2) as again:  # the group goes on after them
        assert again.step().consumed == 0


def test_sqlite_write_behind_off_and_a_service_not_insert_only_wait_for_every_commit(
        settings: Settings, pg_settings: Settings, name: str) -> None:
    # (one data dir: one channel, read by each from its start)
    for i, (s, kw) in enumerate(((settings, {}), (pg_settings, {"write_behind": False}), (pg_settings, {}))):
        svc = _service(f"{name}_{i}")
        rc.send(s, [rc.event_record(s, f"PAY-{i}", "1.00")[0]])
        with ConsumerRuntime(s, svc, poll_timeout=0.2, **kw) as rt:  # type: ignore[arg-type]
            result = rt.step()
            assert not result.in_flight and rt.stats.applied == result.consumed == i + 1
            assert _committed(rt) == i + 1


# -- the connection: deferred rows and the statements after them ------------------------------------------------


@pytest.fixture
def engine(pg_settings: Settings, name: str) -> Engine:
    eng = db.engine_for(pg_settings, name)
    db.migrate(eng, name, [_TABLE])
    return eng


def test_deferred_rows_are_sent_before_a_statement_that_could_see_or_depend_on_them(engine: Engine) -> None:
    wb = WriteBehind(engine)
    with wb.batch() as conn:
        bulk.copy_rows(conn, "wb_rows", ("event_id", "payment_id", "partition_no", "offset_no"), [("e1", "p1", 0, 1)])
        assert len(conn.info[bulk.DEFERRED]) == 1
        assert conn.exec_driver_sql("SELECT 1").scalar_one() == 1  # names no table with deferred rows: not sent
        assert len(conn.info[bulk.DEFERRED]) == 1
        assert conn.exec_driver_sql("SELECT payment_id FROM wb_rows").scalars().all() == ["p1"]  # sent first
        assert conn.info[bulk.DEFERRED] == []
        bulk.copy_rows(conn, "wb_rows", ("event_id", "payment_id", "partition_no", "offset_no"), [("e2", "p2", 0, 2)])
        updated = conn.exec_driver_sql("UPDATE wb_rows SET payment_id = 'q' WHERE event_id IN ('e1', 'e2')")
        assert updated.rowcount == 2  # any write goes after the rows written before it
    assert wb.in_flight
    wb.settle()
    assert _payment_ids(engine) == {"e1": "q", "e2": "q"}
    with wb.batch() as conn:  # the next batch on the same connection
        bulk.copy_rows(conn, "wb_rows", ("event_id", "payment_id", "partition_no", "offset_no"), [("e3", "p3", 0, 3)])
    wb.settle()
    wb.close()
    assert _payment_ids(engine)["e3"] == "p3"


@pytest.mark.parametrize("when", ["between batches", "while a batch reads", "while a batch reads ahead"])
def test_a_connection_the_server_ends_costs_one_attempt_and_the_next_batch_runs_on_a_new_one(
        engine: Engine, when: str) -> None:
    """The server ends the write-behind connection (or the one a batch reads ahead on). The batch that meets it
    fails with the server's own error, and the one after it runs on a new connection: SQLAlchemy keeps an
    invalidated connection's transaction on record, and before, the batch's clean-up on it raised
    PendingRollbackError, which left it in place to fail every batch after (a ledger retried one for 5 minutes)."""
    cols = ("event_id", "payment_id", "partition_no", "offset_no")
    wb = WriteBehind(engine)
    with wb.batch() as conn:
        bulk.copy_rows(conn, "wb_rows", cols, [("first", "p", 0, 0)])
        pid = _driver_pid(conn)
    wb.settle()
    ahead = when == "while a batch reads ahead"
    if ahead:
        with wb.batch(ahead=True) as conn:
            pid = _driver_pid(conn)
        wb.drop_prepared()
    if when == "between batches":
        _terminate(engine, pid)
    with pytest.raises(sa.exc.OperationalError, match="terminating connection"), wb.batch(ahead=ahead) as conn:
        if when != "between batches":
            _terminate(engine, pid)
        conn.exec_driver_sql("SELECT count(*) FROM wb_rows").scalar_one()
    assert wb.prepared is None and not wb.in_flight
    with wb.batch(ahead=ahead) as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM wb_rows").scalar_one() == 1
        assert _driver_pid(conn) != pid
        bulk.copy_rows(conn, "wb_rows", cols, [("second", "p", 0, 1)])
    if ahead:
        wb.commit_prepared()
    wb.settle()
    wb.close()
    assert sorted(_payment_ids(engine)) == ["first", "second"]


def test_a_worker_whose_connection_the_server_ends_between_batches_goes_on(pg_settings: Settings,
                                                                            name: str) -> None:
    """The same through the runtime: the server ends the write-behind connection while the consumer waits for records;
    the next records are applied after one retry, none lost and none twice."""
    svc = _service(name)
    first = _sent(pg_settings, 5, "PAY-A")
    with ConsumerRuntime(pg_settings, svc, poll_timeout=0.2, write_behind=True) as rt:
        engine = db.engine_for(pg_settings, svc.name)
        for _ in range(20):
            rt.step()
            if rt.stats.applied == 5 and not rt._in_flight:
                break
        _terminate(engine, _backend(rt))
        second = _sent(pg_settings, 5, "PAY-B")
        deadline = time.monotonic() + 30
        while rt.stats.applied < 10 or rt._in_flight:
            assert time.monotonic() < deadline, f"stuck after {rt.stats.retries} retries: {rt.stats.as_dict()}"
            rt.step()
        assert rt.stats.retries <= 1 and rt.stats.consumed == 10
        assert _committed(rt) == 10
    assert _rows(engine) == sorted(ev["eventId"] for _r, ev in first + second)


def _payment_ids(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return {r[0]: r[1] for r in conn.exec_driver_sql("SELECT event_id, payment_id FROM wb_rows")}


def test_a_batch_raising_inside_is_rolled_back_and_one_refused_late_raises_late_failure(engine: Engine) -> None:
    wb = WriteBehind(engine)
    cols = ("event_id", "payment_id", "partition_no", "offset_no")
    with pytest.raises(RuntimeError), wb.batch() as conn:
        conn.exec_driver_sql("INSERT INTO wb_rows VALUES ('sync', 'p', 0, 0)")
        bulk.copy_rows(conn, "wb_rows", cols, [("deferred", "p", 0, 1)])
        raise RuntimeError("the handler failed")
    assert not wb.in_flight
    with wb.batch() as conn:
        bulk.copy_rows(conn, "wb_rows", cols, [("ok", "p", 0, 2), ("ok", "p", 0, 3)])  # a key twice: refused
    with pytest.raises(LateFailure, match="duplicate key"):
        wb.settle()
    with wb.batch() as conn:  # the connection is usable again
        bulk.copy_rows(conn, "wb_rows", cols, [("after", "p", 0, 4)], or_ignore="event_id")
        bulk.copy_rows(conn, "wb_rows", cols, [("after", "other", 0, 5)], or_ignore="event_id")
    wb.settle()
    wb.close()
    assert _payment_ids(engine) == {"after": "p"}


def test_deferred_rows_store_every_value_as_copy_does(engine: Engine) -> None:
    """Texts that need escaping in an array literal, NULLs, big integers and blank-padded CHAR columns arrive as COPY
    would store them."""
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE wb_values (k INTEGER PRIMARY KEY, t TEXT, c CHAR(3), n BIGINT)")
    odd = ['a"b', "c\\d", "g,h", "{i}", "NULL", "", "é🙂", "tab\there", '{"k": "v\\\\"}', None]
    rows = [(i, v, "US" if i % 2 else "EUR", (2 ** 62 if i % 3 else None)) for i, v in enumerate(odd)]
    wb = WriteBehind(engine)
    with wb.batch() as conn:
        bulk.copy_rows(conn, "wb_values", ("k", "t", "c", "n"), rows)
    wb.settle()
    wb.close()
    with engine.connect() as conn:
        stored = [tuple(r) for r in conn.exec_driver_sql("SELECT k, t, c, n FROM wb_values ORDER BY k")]
    assert stored == [(k, t, c.ljust(3), n) for k, t, c, n in rows]


def test_the_server_refusing_deferred_rows_mid_batch_raises_the_statements_own_error(engine: Engine) -> None:
    wb = WriteBehind(engine)
    with pytest.raises(sa.exc.DataError, match="too long"), wb.batch() as conn:
        bulk.copy_rows(conn, "wb_rows", ("event_id", "payment_id", "partition_no", "offset_no"),
                       [("e", "p" * 13, 0, 1)])
        conn.exec_driver_sql("DELETE FROM wb_rows WHERE event_id = 'none'")
    assert not wb.in_flight
    wb.close()
    assert _payment_ids(engine) == {}


def test_step_does_not_block_other_threads_while_it_waits(pg_settings: Settings, name: str) -> None:
    """settle() waits in select(), not inside libpq holding the interpreter: a thread next to the consumer (the
    e-mail delivery worker, the metrics server) runs while the server holds the batch."""
    svc = _service(name)
    rc.send(pg_settings, [rc.event_record(pg_settings, "PAY-1", "1.00")[0]])
    ticks: list[int] = []
    with ConsumerRuntime(pg_settings, svc, poll_timeout=0.2, write_behind=True) as rt:
        engine = db.engine_for(pg_settings, svc.name)
        with _locked(engine) as locker:
            assert rt.step().in_flight
            done = threading.Event()

            def settle() -> None:
                rt.step()
                done.set()

            t = threading.Thread(target=settle)
            t.start()
            for _ in range(50):
                ticks.append(1)
                if done.wait(0.01):
                    break
            assert not done.is_set()  # still waiting for the lock
            locker.rollback()
            t.join(10)
        assert rt.stats.applied == 1
    assert len(ticks) >= 20


@pytest.mark.timeout(240)
@pytest.mark.parametrize("transport", ["embedded", pytest.param("kafka", marks=pytest.mark.kafka)])
def test_a_batch_in_flight_when_its_partitions_move_is_committed_before_they_go(
        pg_settings: Settings, name: str, transport: str, request: pytest.FixtureRequest) -> None:
    """Member A has a batch in flight, on both partitions of the channel, when member B joins and the group gives B
    one of them: A confirms that batch and commits its offsets before the partition goes (the transport calls the
    runtime back before a revocation), so B starts after it and applies none of it again. Then events keep coming
    and every one is applied once, by one of the two."""
    from payevents.transport import open_transport

    s = dataclasses.replace(pg_settings, partitions=2, kafka_config=dict(FAST_GROUP_CONFIG))  # heartbeats: 0.5 s
    if transport == "kafka":
        s = dataclasses.replace(s, broker=request.getfixturevalue("kafka_broker").url)
    svc = _service(name)
    _sent(s, 0)  # the channel, empty
    a = ConsumerRuntime(s, svc, poll_timeout=0.2, write_behind=True)
    b: ConsumerRuntime | None = None
    try:
        for _ in range(100):  # Kafka: until A has joined the group
            if a.consumer.assignment():
                break
            a.step()
        records = _sent(s, 200, "PAY-A")
        time.sleep(1.0)  # Kafka: A's client has fetched from both partitions by now
        for _ in range(200):  # until A has a batch in flight on both partitions
            a.step()
            if a._in_flight is not None and len(a._in_flight.offsets) == 2:
                break
            assert a.stats.consumed < len(records), "A never had a batch in flight on both partitions"
        b = ConsumerRuntime(s, svc, poll_timeout=0.2, write_behind=True)
        joined = time.monotonic() + 1.5  # B asks for a partition; A, its batch still in flight, has to give one up
        while time.monotonic() < joined:
            assert b.step().consumed == 0
        records += _sent(s, 100, "PAY-B")
        engine = db.engine_for(s, svc.name)
        deadline = time.monotonic() + 120
        while len(_rows(engine)) < len(records) or a._in_flight or b._in_flight:
            assert time.monotonic() < deadline, f"{len(_rows(engine))} of {len(records)} applied"
            a.step()
            b.step()
        assert b.consumer.assignment() and b.stats.applied > 0, "the group never gave B a partition"
        assert (a.stats.duplicates, b.stats.duplicates) == (0, 0)  # nothing read again by its new owner
        assert a.stats.applied + b.stats.applied == len(records)
    finally:
        for rt in (a, b):
            if rt is not None:
                rt.close()
    assert _rows(engine) == sorted(ev["eventId"] for _r, ev in records)
    t = open_transport(s)
    try:
        assert sum(t.group_offsets(svc.group, a.topic).values()) == len(records)
    finally:
        t.close()


# -- reading ahead (ServiceDef.insert_only: the ledger) ---------------------------------------------------------


def test_a_batch_read_ahead_that_missed_the_batch_before_is_refused_by_its_keys_and_applied_again(
        pg_settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    """The ledger reads a batch while the batch before is still committing. A lock held elsewhere (SHARE: reads go
    on, inserts wait) keeps the first batch from committing, so the second batch — which delivers one of the first
    batch's events again — reads before it and misses that event. Its rows then meet the first batch's at the
    keys, the server refuses them, and the batch is applied again, waited for: the event is a duplicate, posted
    once, and every other payment is posted once."""
    from payevents.services.ledger.service import SERVICE as LEDGER

    records = [rc.event_record(pg_settings, f"PAY-AHEAD-{i}", f"{i + 1}.00") for i in range(8)]
    again = rc.record(pg_settings, records[3][0].value, "PAY-AHEAD-3", records[3][1]["eventId"])
    # one partition's order: batch 1 = the first 5, batch 2 = the other 3 and the repeat
    rc.send(pg_settings, [r for r, _ev in records[:5]])
    with ConsumerRuntime(pg_settings, LEDGER, poll_timeout=0.2, max_batch=5) as rt:
        engine = db.engine_for(pg_settings, "ledger")
        locked, release = threading.Event(), threading.Event()

        def hold() -> None:
            with engine.connect() as locker:
                locker.exec_driver_sql("LOCK TABLE journal_entries IN SHARE MODE")
                locked.set()
                release.wait(10)
                locker.rollback()

        holder = threading.Thread(target=hold)
        holder.start()
        assert locked.wait(10)
        first = rt.step()
        assert first.in_flight and first.applied == 5
        rc.send(pg_settings, [r for r, _ev in records[5:]] + [again])
        wb = rt._wb
        assert wb is not None
        settle = wb.settle

        def release_then_settle() -> None:  # the second step has read its batch: let the first one commit
            release.set()
            settle()

        wb.settle = release_then_settle  # type: ignore[method-assign]
        with caplog.at_level("WARNING", logger="payevents.consumer"):
            for _ in range(10):
                rt.step()
                if rt.stats.consumed == 9 and not rt._in_flight:
                    break
        holder.join(10)
        assert rt.stats.applied == 8 and rt.stats.duplicates == 1 and rt.stats.dead_lettered == 0
        assert _committed(rt) == 9
    assert any("did not commit" in r.getMessage() for r in caplog.records), "the second batch was not refused"
    with engine.connect() as conn:
        posted: dict[str, int] = dict(conn.exec_driver_sql(
            "SELECT payment_id, COUNT(*) FROM journal_entries GROUP BY payment_id").all())
    assert posted == {f"PAY-AHEAD-{i}": 1 for i in range(8)}


def _insert_now(conn: Connection, batch: Sequence[tuple[DecodedEvent, Message]]) -> None:
    for d, m in batch:
        conn.exec_driver_sql("INSERT INTO wb_rows VALUES (%s, %s, %s, %s)", (d.event_id, d.payment_id, m.partition,
                                                                           m.offset))


def test_a_service_that_cannot_read_ahead_is_applied_in_its_transaction_from_then_on(pg_settings: Settings,
                                                                                      name: str) -> None:
    """A service declared insert_only whose handler writes a row itself (not a deferred one): that batch cannot be
    read ahead; it is applied in its transaction, as is every batch after it, and nothing is lost."""
    svc = ServiceDef(name=name, description="writes at once (tests)", migrations=[_TABLE],
                     handlers={"PaymentProcessed": lambda conn, d, m: _insert_now(conn, [(d, m)])},
                     batch_handler=_insert_now, insert_only=True)
    records = _sent(pg_settings, 6)
    with ConsumerRuntime(pg_settings, svc, poll_timeout=0.2, max_batch=4) as rt:
        assert rt._ahead
        for _ in range(5):
            rt.step()
        assert not rt._ahead
        assert rt.stats.applied == 6 and _committed(rt) == 6
    assert _rows(db.engine_for(pg_settings, name)) == sorted(ev["eventId"] for _r, ev in records)
