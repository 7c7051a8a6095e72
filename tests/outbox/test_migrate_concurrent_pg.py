"""Found by the soak on PostgreSQL (seed 542087): two processes starting one service on a fresh schema both ran
``CREATE TABLE IF NOT EXISTS schema_migrations`` and one failed with a unique violation on ``pg_type`` (IF NOT
EXISTS is not safe against a concurrent creator on PostgreSQL); ``CREATE SCHEMA IF NOT EXISTS`` races the same
way. Starters of one schema must wait for each other instead."""

from __future__ import annotations

import threading
import uuid

import sqlalchemy as sa

from payevents.store import db
from payevents.store.db import Migration

STARTERS = 6
ROUNDS = 4


def _race(url: str, schema: str, steps: list[Migration]) -> tuple[list[BaseException], list[sa.Engine]]:
    """STARTERS threads, each with its own engine, migrating ``schema`` at the same moment."""
    barrier = threading.Barrier(STARTERS)
    errors: list[BaseException] = []
    engines: list[sa.Engine] = []

    def start() -> None:
        try:
            barrier.wait(10)
            engine = db.make_engine(url, schema)
            engines.append(engine)
            db.migrate(engine, "svc", steps)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(STARTERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return errors, engines


def test_starters_racing_on_a_fresh_schema_all_succeed_and_apply_each_step_once(pg_available: str) -> None:
    steps = [Migration(1, "one", both=["CREATE TABLE IF NOT EXISTS things (id INTEGER PRIMARY KEY)"]),
             Migration(2, "two", both=["ALTER TABLE things ADD COLUMN name VARCHAR(20)"])]
    for _ in range(ROUNDS):
        schema = f"race_{uuid.uuid4().hex[:12]}"
        errors, engines = _race(pg_available, schema, steps)
        try:
            assert errors == []
            with engines[0].connect() as conn:
                rows = conn.exec_driver_sql("SELECT version FROM schema_migrations WHERE service = 'svc'"
                                            " ORDER BY version").scalars().all()
            assert rows == [1, 2]
        finally:
            for engine in engines:
                engine.dispose()
            cleanup = sa.create_engine(pg_available)
            with cleanup.begin() as conn:
                conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            cleanup.dispose()
