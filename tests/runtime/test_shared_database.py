"""Two services of a team's own code may share one database (``ServiceDef.database_url``): what the runtime
records per service stays that service's. The seen marks always were (``processed_events.service``); the records a
worker began after its predecessor died (``consumer_attempts``, the crash-loop isolation) were not: a service
started after an unrelated death counted another service's deaths on the same channel offsets as its own, and
dead-lettered a record that never harmed it."""

from __future__ import annotations

import dataclasses

import runtime_counter as rc
import sqlalchemy as sa
from test_consumer_faults import produce

from payevents.contracts.codec import DecodedEvent
from payevents.runtime.consumer import CRASH_LIMIT, ConsumerRuntime
from payevents.settings import Settings
from payevents.store import db
from payevents.transport.base import Message


class _Died(BaseException):
    """The worker's process ends here (an exception no handler catches: the runtime is left as a death leaves it)."""


def test_a_service_does_not_count_another_services_deaths(tmp_path: object, unique: str) -> None:
    settings = Settings(env="dev", data_dir=tmp_path / "data")  # type: ignore[operator,arg-type]
    shared = f"sqlite:///{tmp_path}/shared.db"
    events = produce(settings, 12, "S")
    killer = str(events[5]["eventId"])

    def dies_on_one(conn: object, decoded: DecodedEvent, message: Message) -> None:
        if decoded.event.eventId == killer:
            raise _Died
        rc.on_processed(conn, decoded, message)  # type: ignore[arg-type]

    a = dataclasses.replace(rc.service(f"_a_{unique}"), handlers={"PaymentProcessed": dies_on_one},
                            database_url=shared)
    b = dataclasses.replace(rc.service(f"_b_{unique}"), migrations=(), database_url=shared,
                            handlers={"PaymentProcessed": lambda conn, decoded, message: None})
    # service a: its worker dies on one record, again and again (each successor knows the one before died)
    for _ in range(CRASH_LIMIT):
        rt = ConsumerRuntime(settings, a, max_batch=20, poll_timeout=0.2, after_crash=True)
        try:
            for _step in range(20):
                rt.step()
            raise AssertionError("service a's worker did not die on its record")
        except _Died:
            rt.close(clean=False)  # as a death leaves it: the member not stopped cleanly, its partitions free
    # meanwhile service b, on the same channel and database, after a death of its own unrelated to any record
    with ConsumerRuntime(settings, b, max_batch=20, poll_timeout=0.2, after_crash=True) as rt:
        for _ in range(30):
            rt.step()
        assert rt.stats.dead_lettered == 0
        assert rt.stats.applied == 12
    with ConsumerRuntime(settings, a, max_batch=20, poll_timeout=0.2, after_crash=True) as rt:
        for _ in range(30):
            rt.step()
        assert rt.stats.dead_lettered == 1  # a's own crash loop is broken: its killer is dead-lettered
    applied = {r[1] for r in rc.counter_rows(db.engine_for(settings, a.name, url=shared))}
    assert applied == {str(e["eventId"]) for e in events} - {killer}


def _shared_url(settings: Settings) -> str:
    """One database for two services: a SQLite file, or a PostgreSQL schema of this test named in the URL."""
    url = settings.database_url_for("shared")
    if not url.startswith("postgresql"):
        return url
    schema = settings.schema_for("shared")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    engine.dispose()
    return f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"


def test_a_second_service_starts_on_a_database_another_service_migrated(store_settings: Settings,
                                                                        unique: str) -> None:
    """The runtime's steps are the database's, recorded once: a second service does not run them again (its
    first start failed, ``duplicate column name: reason``)."""
    url = _shared_url(store_settings)
    a = dataclasses.replace(rc.service(f"_a_{unique}"), database_url=url)
    b = dataclasses.replace(rc.service(f"_b_{unique}"), migrations=(), database_url=url,
                            handlers={"PaymentProcessed": lambda conn, decoded, message: None})
    ConsumerRuntime(store_settings, a, poll_timeout=0.1).close()
    ConsumerRuntime(store_settings, b, poll_timeout=0.1).close()


def test_a_database_migrated_per_service_keeps_its_steps_and_its_attempts(store_settings: Settings,
                                                                         unique: str) -> None:
    """A database whose runtime steps were recorded under ``{service}.runtime`` (before 2026-12-02) adopts them
    under one key and applies only what is new; an attempt a dead worker left is kept for its service."""
    from payevents.runtime.consumer import RUNTIME_KEY, RUNTIME_MIGRATIONS, migrate_runtime

    name = f"_old_{unique}"
    engine = db.engine_for(store_settings, name)
    db.migrate(engine, f"{name}.runtime", [m for m in RUNTIME_MIGRATIONS if m.version <= 4])
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO consumer_members (service, member, run_by, started_at)"
                             f" VALUES ('{name}', 'host[0]', 'dead', '2026-12-01T00:00:00+00:00')")
        conn.exec_driver_sql("INSERT INTO consumer_attempts (topic, partition_no, offset_no, attempts, attempt_by)"
                             " VALUES ('payments.dev.events', 2, 41, 2, 'dead')")
    assert migrate_runtime(engine) == [5, 6]
    assert migrate_runtime(engine) == []
    with engine.connect() as conn:
        steps = conn.exec_driver_sql("SELECT version FROM schema_migrations WHERE service = "
                                     f"'{RUNTIME_KEY}' ORDER BY version").scalars().all()
        attempts = conn.exec_driver_sql("SELECT service, topic, partition_no, offset_no, attempts, attempt_by"
                                        " FROM consumer_attempts").all()
    assert steps == [1, 2, 3, 4, 5, 6]
    assert [tuple(r) for r in attempts] == [(name, "payments.dev.events", 2, 41, 2, "dead")]
