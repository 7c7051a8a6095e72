"""The store goes away while the consumer runs: a locked SQLite file, an unreachable PostgreSQL."""

from __future__ import annotations

import collections
import contextlib
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import runtime_counter as rc
import sqlalchemy as sa
from test_consumer_runtime import assert_order_per_payment

from payevents.bench.core import drop_schemas
from payevents.localkafka import free_port
from payevents.runtime.consumer import ConsumerRuntime
from payevents.runtime.service import ServiceDef
from payevents.settings import Settings
from payevents.store import db

PG_URL = os.environ.get("PAYEVENTS_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@contextlib.contextmanager
def running(rt: ConsumerRuntime) -> Iterator[threading.Thread]:
    stop = threading.Event()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            rt.run(stop)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not errors, errors
    assert not thread.is_alive()


def produce(settings: Settings, n: int, tag: str) -> list[dict[str, object]]:
    records, events = [], []
    for i in range(n):
        rec, ev = rc.event_record(settings, f"PAY-{tag}-{i % 11}", f"{i + 1}.00")
        records.append(rec)
        events.append(ev)
    rc.send(settings, records)
    return events


def check_exactly_once(rows: list[tuple[int, str, str, int, int, int]], events: list[dict[str, object]]) -> None:
    ids = {str(e["eventId"]) for e in events}
    mine = [r for r in rows if r[1] in ids]
    per_id = collections.Counter(r[1] for r in mine)
    assert set(per_id) == ids
    assert max(per_id.values()) == 1
    assert_order_per_payment(mine)


def test_locked_sqlite_store_is_retried_without_loss_or_duplicates(
    transport_settings: Settings, counter: ServiceDef
) -> None:
    settings = transport_settings
    engine = db.engine_for(settings, counter.name)

    @sa.event.listens_for(engine, "connect")
    def _short_busy_timeout(dbapi_conn: sqlite3.Connection, _rec: object) -> None:
        # wait 100 ms for the lock (instead of 10 s), so that the 2 s lock below is a fault, not a pause
        dbapi_conn.execute("PRAGMA busy_timeout=100")

    engine.dispose()
    rt = ConsumerRuntime(settings, counter, max_batch=50, poll_timeout=0.1)
    first = produce(settings, 100, "A")
    ids = {str(e["eventId"]) for e in first}

    def applied() -> int:  # on Kafka the topic is shared with other tests: count ours only
        return sum(1 for r in rc.counter_rows(engine) if r[1] in ids)

    with running(rt):
        wait_for(lambda: applied() == 100, "the first 100 events")
        db_path = Path(settings.data_dir) / f"{counter.name}.db"
        locker = sqlite3.connect(db_path, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        try:
            second = produce(settings, 200, "B")
            ids.update(str(e["eventId"]) for e in second)
            wait_for(lambda: rt.stats.retries >= 2, "retries while the file is locked")
            time.sleep(1.5)
            assert applied() == 100  # nothing applied, nothing skipped while locked
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        wait_for(lambda: applied() == 300, "all 300 events after the lock")
    assert rt.stats.retries >= 2
    check_exactly_once(rc.counter_rows(engine), first + second)


class TcpProxy:
    """A loopback TCP proxy to PostgreSQL that can be stopped (refusing and cutting every connection)
    and started again on the same port, or frozen (every connection, old and new, stays open and carries
    nothing: a server or a link gone silent) and thawed; the shared server itself is never touched."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._flowing = threading.Event()
        self._flowing.set()

    def freeze(self) -> None:
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()

    def start(self) -> None:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        self._listener = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def stop(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                self._flowing.wait()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def proxied_pg(tmp_path: Path, pg_available: str) -> Iterator[tuple[Settings, TcpProxy, str]]:
    url = sa.engine.make_url(pg_available)
    proxy = TcpProxy((url.host or "127.0.0.1", url.port or 5432))
    proxy.start()
    prefix = f"t{uuid.uuid4().hex[:10]}_"
    proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    yield (Settings(env="dev", data_dir=tmp_path / "data", database_url=proxied,  # type: ignore[arg-type]
                    db_schema_prefix=prefix), proxy, prefix)
    proxy.stop()
    db.dispose_engines()
    drop_schemas(pg_available, prefix)


@pytest.mark.postgres
def test_postgresql_unreachable_for_a_while_is_retried_without_loss_or_duplicates(
    proxied_pg: tuple[Settings, TcpProxy, str], pg_available: str, counter: ServiceDef
) -> None:
    settings, proxy, _prefix = proxied_pg
    direct = db.make_engine(pg_available, settings.schema_for(counter.name))  # reads bypass the proxy
    try:
        rt = ConsumerRuntime(settings, counter, max_batch=50, poll_timeout=0.1)
        first = produce(settings, 100, "A")
        with running(rt):
            wait_for(lambda: len(rc.counter_rows(direct)) == 100, "the first 100 events")
            proxy.stop()
            second = produce(settings, 200, "B")
            wait_for(lambda: rt.stats.retries >= 2, "retries while PostgreSQL is unreachable")
            time.sleep(1.5)
            assert len(rc.counter_rows(direct)) == 100
            proxy.start()
            wait_for(lambda: len(rc.counter_rows(direct)) == 300, "all 300 events after the outage")
        assert rt.stats.retries >= 2
        check_exactly_once(rc.counter_rows(direct), first + second)
        assert rc.counter_total(direct)[1] == 300
    finally:
        direct.dispose()


@pytest.mark.postgres
def test_a_worker_hung_on_a_silent_postgresql_is_killed_restarted_and_loses_nothing(
    proxied_pg: tuple[Settings, TcpProxy, str], pg_available: str, counter: ServiceDef,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """PostgreSQL stops answering over connections that stay open: the worker's query waits for ever (no
    socket timeout ends it). ``payevents run``'s supervisor sees its /livez fail, kills it and starts it again;
    the new one waits at start-up (its connect times out) until the server answers, then applies the rest."""
    from payevents.runtime import runner
    from payevents.runtime.workers import read_registry

    settings, proxy, _prefix = proxied_pg
    monkeypatch.setenv("PAYEVENTS_TEST_COUNTER_NAME", counter.name)
    monkeypatch.setenv("PAYEVENTS_LIVE_AFTER_S", "3")  # the workers' liveness limit (30 s by default)
    monkeypatch.setenv("PAYEVENTS_RESTART_BACKOFF", "0.5")
    direct = db.make_engine(pg_available, settings.schema_for(counter.name))  # reads bypass the proxy

    def applied() -> int:
        try:
            return len(rc.counter_rows(direct))
        except sa.exc.DBAPIError:  # the worker has not created its tables yet
            return 0

    stop, ready = threading.Event(), threading.Event()
    exits: list[runner.WorkerExit] = []
    thread = threading.Thread(target=lambda: exits.extend(runner.run_workers(
        settings, ["runtime_counter:SERVICE"], max_batch=20, stop=stop, ready=ready)))
    thread.start()
    try:
        first = produce(settings, 100, "A")
        wait_for(lambda: applied() == 100, "the first 100 events", timeout=120)
        proxy.freeze()
        second = produce(settings, 200, "B")
        wait_for(lambda: any(v.restarts >= 1 for v in read_registry(settings)), "the stuck worker restarted",
                 timeout=120)
        assert applied() < 300
        proxy.thaw()
        wait_for(lambda: applied() == 300, "all 300 events once PostgreSQL answers again", timeout=120)
    finally:
        proxy.thaw()
        stop.set()
        thread.join(timeout=90)
        direct_rows = rc.counter_rows(direct)
        direct.dispose()
    assert [(e.exitcode, e.restarts >= 1) for e in exits] == [(0, True)]
    check_exactly_once(direct_rows, first + second)
    out = capsys.readouterr().out
    assert "is stuck (/livez 503: consumer made no progress for" in out and "killing it" in out


@pytest.mark.postgres
def test_records_applied_one_at_a_time_after_a_crash_back_off_while_postgresql_is_unreachable(
    proxied_pg: tuple[Settings, TcpProxy, str], pg_available: str, counter: ServiceDef
) -> None:
    # after a worker died its successor records each attempt before applying the record; a store that cannot
    # take that record is a transient fault like any other (backed off, retried), not the end of the worker
    settings, proxy, _prefix = proxied_pg
    direct = db.make_engine(pg_available, settings.schema_for(counter.name))
    rt = ConsumerRuntime(settings, counter, max_batch=20, poll_timeout=0.1, after_crash=True)
    try:
        events = produce(settings, 30, "K")
        proxy.stop()
        result = rt.step()
        assert result.retried and (result.fault or "").startswith("store:")
        proxy.start()
        deadline = time.monotonic() + 60
        while len(rc.counter_rows(direct)) < 30:
            assert time.monotonic() < deadline, "the 30 records after the outage"
            rt.step()
        check_exactly_once(rc.counter_rows(direct), events)
        assert rt.stats.dead_lettered == 0
        with direct.connect() as conn:  # every attempt recorded was removed by the transaction that applied it
            assert conn.exec_driver_sql("SELECT count(*) FROM consumer_attempts").scalar() == 0
    finally:
        rt.close()
        direct.dispose()
