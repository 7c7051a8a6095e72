"""Issue #12: every applied migration step is recorded with a checksum, so a step edited after it was
applied is detected (on SQLite and PostgreSQL), and a database from before checksums gets them once."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from payevents.settings import Settings
from payevents.store import db
from payevents.store.db import Migration

STEPS = [
    Migration(1, "things", both=["CREATE TABLE things (id INTEGER PRIMARY KEY, name VARCHAR(40))"]),
    Migration(2, "thing index", both=["CREATE INDEX ix_things_name ON things (name)"]),
]


def _engine(settings: Settings) -> sa.Engine:
    return db.engine_for(settings, "checksums")


def test_an_edited_migration_is_detected(store_settings: Settings) -> None:
    engine = _engine(store_settings)
    assert db.migrate(engine, "checksums", STEPS) == [1, 2]
    assert db.migrate(engine, "checksums", STEPS) == []
    edited = [STEPS[0], Migration(2, "thing index", both=["CREATE INDEX ix_things_name ON things (name, id)"])]
    with pytest.raises(db.MigrationEdited, match=r"checksums: migration 2 \('thing index'\) was applied as another"):
        db.migrate(engine, "checksums", edited)
    renamed = [Migration(1, "stuff", both=STEPS[0].both), STEPS[1]]
    with pytest.raises(db.MigrationEdited, match="migration 1"):
        db.migrate(engine, "checksums", renamed)
    # a new step after the applied ones is fine, and nothing was applied by the refused runs
    more = [*STEPS, Migration(3, "more", both=["CREATE TABLE more_things (id INTEGER PRIMARY KEY)"])]
    assert db.migrate(engine, "checksums", more) == [3]


def test_a_database_from_before_checksums_gets_them_once(store_settings: Settings) -> None:
    engine = _engine(store_settings)
    with engine.begin() as conn:  # the table as it was before checksums, with step 1 applied
        conn.exec_driver_sql(
            "CREATE TABLE schema_migrations (service VARCHAR(64) NOT NULL, version INTEGER NOT NULL,"
            " name VARCHAR(200) NOT NULL, applied_at VARCHAR(40) NOT NULL, PRIMARY KEY (service, version))")
        conn.exec_driver_sql(STEPS[0].both[0])
        conn.exec_driver_sql("INSERT INTO schema_migrations VALUES ('checksums', 1, 'things', 't')")
    assert db.migrate(engine, "checksums", STEPS) == [2]
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT version, checksum FROM schema_migrations ORDER BY version").all()
    assert [(v, c) for v, c in rows] == [(1, STEPS[0].checksum(engine.dialect.name)),
                                         (2, STEPS[1].checksum(engine.dialect.name))]
    with pytest.raises(db.MigrationEdited):
        db.migrate(engine, "checksums", [Migration(1, "things", both=["CREATE TABLE x (id INTEGER)"]), STEPS[1]])


def test_a_database_a_newer_payevents_migrated_is_said_at_start(store_settings: Settings,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """An older payevents started on a database a newer one migrated runs what it knows, and says so (until
    2026-12-02 it said nothing)."""
    engine = _engine(store_settings)
    assert db.migrate(engine, "checksums", STEPS) == [1, 2]
    caplog.set_level("WARNING", logger="payevents.store")
    assert db.migrate(engine, "checksums", STEPS[:1], complete=True) == []
    assert [r.getMessage() for r in caplog.records] == [
        "checksums: the database holds migration 2, which this payevents does not know (its newest is 1): a newer"
        " payevents migrated it; run that version"]
    caplog.clear()
    assert db.migrate(engine, "checksums", STEPS, complete=True) == []
    # a caller applying a part of a service's steps (the relay, the audit: the outbox's of the payments store)
    assert db.migrate(engine, "checksums", STEPS[:1]) == []
    assert caplog.records == []
