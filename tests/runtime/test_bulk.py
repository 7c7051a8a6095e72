"""runtime.bulk: COPY / executemany writes and per-key lookups give the same rows on SQLite and PostgreSQL;
an ``or_ignore`` COPY that meets an existing row keeps the INSERT ... ON CONFLICT DO NOTHING outcome; a
conflicting plain COPY is an SQLAlchemy IntegrityError (the runtime retries the batch)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from payevents.runtime import bulk
from payevents.settings import Settings
from payevents.store import db

COLUMNS = ("service", "event_id", "note", "n")


def _engine(settings: Settings) -> sa.Engine:
    engine = db.engine_for(settings, "bulktest")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS t (service VARCHAR(64) NOT NULL,"
                             " event_id VARCHAR(128) NOT NULL, note TEXT, n BIGINT, PRIMARY KEY (service, event_id))")
    return engine


def test_copy_rows_and_lookup(store_settings: Settings) -> None:
    engine = _engine(store_settings)
    rows = [("s", f"e{i}", None if i % 3 else f"é\t\\n{i}", i) for i in range(1200)]
    with engine.begin() as conn:
        bulk.copy_rows(conn, "t", COLUMNS, rows)
        bulk.copy_rows(conn, "t", COLUMNS, [])
    with engine.begin() as conn:
        m = bulk.mark(conn)
        keys = [f"e{i}" for i in range(0, 1300, 7)] + ["e7"]
        got = {r[0]: (r[1], r[2]) for r in bulk.lookup(conn, "event_id, note, n", "t", f"service = {m}", "event_id",
                                                         keys, ("s",))}
        assert got == {f"e{i}": (None if i % 3 else f"é\t\\n{i}", i) for i in range(0, 1200, 7)}
        assert list(bulk.lookup(conn, "event_id", "t", f"service = {m}", "event_id", [], ("s",))) == []
        several = list(bulk.lookup(conn, "event_id", "t", "n >= 0", "service", ["s"], (), unique=False))
        assert len(several) == 1200


def test_or_ignore_keeps_on_conflict_do_nothing(store_settings: Settings) -> None:
    engine = _engine(store_settings)
    with engine.begin() as conn:
        bulk.copy_rows(conn, "t", COLUMNS, [("s", "a", "first", 1)])
    with engine.begin() as conn:
        bulk.copy_rows(conn, "t", COLUMNS, [("s", "b", "new", 2), ("s", "a", "second", 3)],
                       or_ignore="service, event_id")
        conn.exec_driver_sql("INSERT INTO t (service, event_id, note, n) VALUES ('s', 'c', 'after', 4)")
    with engine.connect() as conn:
        rows = sorted(tuple(r) for r in conn.exec_driver_sql("SELECT event_id, note, n FROM t"))
    assert rows == [("a", "first", 1), ("b", "new", 2), ("c", "after", 4)]


def test_a_conflicting_copy_is_an_integrity_error(store_settings: Settings) -> None:
    engine = _engine(store_settings)
    with engine.begin() as conn:
        bulk.copy_rows(conn, "t", COLUMNS, [("s", "a", None, 1)])
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        bulk.copy_rows(conn, "t", COLUMNS, [("s", "a", None, 1)])
