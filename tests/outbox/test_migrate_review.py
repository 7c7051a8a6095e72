"""Review finding: a SQLite migration step must not read, then fail to write, when another process wrote
in between (two starters of one service, e.g. the relay and the payments writer on a fresh database)."""

from __future__ import annotations

import sqlite3
import threading

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from payevents.settings import Settings
from payevents.store import db
from payevents.store.db import Migration


def test_sqlite_migration_step_is_not_broken_by_a_write_after_its_check(settings: Settings) -> None:
    engine = db.engine_for(settings, "payments")
    path = engine.url.database
    assert path
    db.migrate(engine, "payments", [])  # schema_migrations exists
    wrote = threading.Event()

    def other_process_writes() -> None:
        other = sqlite3.connect(path, timeout=10, isolation_level=None)
        try:
            other.execute("CREATE TABLE other_starter (x INTEGER)")
            wrote.set()
        finally:
            other.close()

    def step(conn: Connection) -> None:
        # the step has checked schema_migrations; another process writes before the step records itself
        t = threading.Thread(target=other_process_writes)
        t.start()
        t.join(0.5)  # with the step holding the write lock, the other writer waits for its commit

    applied = db.migrate(engine, "payments", [Migration(1, "raced", run=step)])
    assert applied == [1]
    assert wrote.wait(10)
    with engine.connect() as conn:
        tables = set(conn.execute(sa.text("SELECT name FROM sqlite_master WHERE type = 'table'")).scalars())
    assert "other_starter" in tables
