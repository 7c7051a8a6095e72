"""A writer waiting for SQLite's write lock gets it at the next moment it is free (payevents.sqlitelock).

SQLite's busy handler sleeps longer and longer between tries (up to 100 ms) and keeps no queue: against a writer
that holds the lock nearly all the time and lets it go only briefly (the payments writer under load, between two
calls), a waiting writer can miss every free moment for seconds. These tests run such a writer — the lock held
98 ms, free 1 ms, again and again — and ask whether the waiting writer got in before it stopped."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from payevents.sqlitelock import begin_immediate
from payevents.store.db import make_engine, writer
from payevents.transport.embedded import _Db

#: how long the hog runs at most: 40 free moments of 1 ms
HOG_CYCLES = 40


def _hog(path: Path, started: threading.Event, done: threading.Event) -> None:
    """Hold the write lock 98 ms, let it go for 1 ms, until ``done`` is set or HOG_CYCLES have passed."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        for i in range(HOG_CYCLES):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("UPDATE t SET n = n + 1")
            if i == 0:
                started.set()
            time.sleep(0.098)
            conn.execute("COMMIT")
            if done.is_set():
                return
            time.sleep(0.001)
    finally:
        conn.close()


def _with_hog(path: Path, write: Callable[[], None]) -> bool:
    """Whether ``write`` got the lock while the hog still ran."""
    setup = sqlite3.connect(path, isolation_level=None)
    setup.execute("PRAGMA journal_mode=WAL")
    setup.execute("CREATE TABLE IF NOT EXISTS t (n INTEGER)")
    setup.execute("INSERT INTO t VALUES (0)")
    setup.close()
    started, done = threading.Event(), threading.Event()
    hog = threading.Thread(target=_hog, args=(path, started, done))
    hog.start()
    try:
        assert started.wait(10)
        write()
        in_time = hog.is_alive()
    finally:
        done.set()
        hog.join()
    return in_time


def test_a_store_writer_gets_the_lock_between_another_writers_transactions(tmp_path: Path) -> None:
    # store.db.writer(engine): the consumers' batches, the relay's marks, the migrations
    path = tmp_path / "store.db"
    engine = make_engine(f"sqlite:///{path}")

    def write() -> None:
        with writer(engine).begin() as conn:
            conn.exec_driver_sql("UPDATE t SET n = n + 1000")

    try:
        assert _with_hog(path, write)
    finally:
        engine.dispose()


def test_an_embedded_log_writer_gets_the_lock_between_another_writers_transactions(tmp_path: Path) -> None:
    # transport.embedded: the relay's appends, the consumers' offset commits and leases
    path = tmp_path / "channel.db"
    sqlite3.connect(path).close()
    db = _Db(path)

    def write() -> None:
        with db.tx("test") as conn:
            conn.execute("UPDATE t SET n = n + 1000")

    try:
        assert _with_hog(path, write)
    finally:
        db.close()


def test_a_lock_never_let_go_is_reported_after_the_busy_timeout(tmp_path: Path) -> None:
    path = tmp_path / "held.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("CREATE TABLE t (n INTEGER)")
    holder.execute("BEGIN IMMEDIATE")
    waiter = sqlite3.connect(path, isolation_level=None)
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            begin_immediate(waiter, 0.2)
        assert not waiter.in_transaction
        assert waiter.execute("PRAGMA busy_timeout").fetchone()[0] == 200  # its own wait back as it was
        holder.execute("COMMIT")
        begin_immediate(waiter, 0.2)
        assert waiter.in_transaction
        waiter.execute("COMMIT")
    finally:
        holder.close()
        waiter.close()


def test_the_store_reports_a_lock_never_let_go_as_a_transient_fault(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from payevents.runtime.backoff import is_transient
    from payevents.store import db

    monkeypatch.setattr(db, "SQLITE_BUSY_TIMEOUT_S", 0.2)
    path = tmp_path / "held.db"
    engine = make_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (n INTEGER)")
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(sa.exc.OperationalError, match="locked") as caught, writer(engine).begin():
            pass
        assert is_transient(caught.value)
    finally:
        holder.close()
        engine.dispose()
