"""Engines and migrations for the services' own databases.

Each service owns one database: on the embedded default a SQLite file ``{data_dir}/{service}.db``;
with ``PAYEVENTS_DATABASE_URL=postgresql+psycopg://...`` a schema ``{prefix}{service}`` in that
database (created on first use). Migrations are ordered, numbered steps with SQL per dialect,
recorded in ``schema_migrations`` and applied on start (``migrate``), each in its own transaction.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import socket
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from payevents.errors import ConfigError, TransientError
from payevents.settings import DATABASE_URL_FORMS, Settings, database_url_problem
from payevents.sqlitelock import begin_immediate
from payevents.store.sql import pg_array

log = logging.getLogger("payevents.store")

#: PostgreSQL transactions run READ COMMITTED, set explicitly on every connection whatever the server's
#: default_transaction_isolation: the outbox's append relies on it (runtime/outbox.py explains why)
PG_ISOLATION_LEVEL = "READ COMMITTED"
#: libpq settings of every PostgreSQL connection whose URL does not set them (``?connect_timeout=30`` does): a
#: server that does not answer the handshake fails the connect after 10 s instead of never; a peer gone without
#: a word (host down, link cut) is found by TCP keepalives within ~60 s of silence, and a connection whose sent
#: data goes unacknowledged for 60 s fails. A query that the server never answers over a link that stays up ends
#: no socket timeout: the supervisor kills a worker stuck on one (``runtime.workers.LivenessWatch``).
PG_CONNECT_DEFAULTS: dict[str, int] = {"connect_timeout": 10, "keepalives": 1, "keepalives_idle": 30,
                                       "keepalives_interval": 10, "keepalives_count": 3, "tcp_user_timeout": 60_000}
#: how long the server lets a session sit idle inside a transaction before it ends it (and rolls it back). A client
#: that stops mid-transaction — a frozen process, a paused VM, a host cut off without a reset — otherwise keeps its
#: row and advisory locks while its connection stays up, and every worker that needs those rows waits behind it.
#: Our longest idle gap inside a transaction is a consumer's dead-letter produce before its commit (up to twice
#: the producer's ``message.timeout.ms``, 10 s by default).
PG_IDLE_IN_TRANSACTION_MS = 60_000
#: server-side settings of every session (libpq ``options``; an ``options`` in the URL comes after them and
#: wins): the idle-in-transaction limit, and the server's own keepalives, which find a client host gone without
#: a word within ~60 s (the server's default is the kernel's: two hours) and end its session and its locks —
#: among them the relay's session advisory lock, which another relay waits to take over
PG_SESSION_DEFAULTS: dict[str, int] = {"idle_in_transaction_session_timeout": PG_IDLE_IN_TRANSACTION_MS,
                                       "tcp_keepalives_idle": 30, "tcp_keepalives_interval": 10,
                                       "tcp_keepalives_count": 3}

#: SQLSTATEs that say the database cannot take this statement now, whatever the statement (the drivers file them
#: as InternalError, not OperationalError like the rest of that kind: connection lost, shutting down, too many
#: connections, disk full, serialization failures): a read-only database (a standby, mid-failover) and a session
#: the server ended for sitting idle in a transaction
_STORE_STATES: dict[str, str] = {"25006": "database read-only", "25P03": "database unreachable"}


def store_state(exc: BaseException) -> str | None:
    """"database read-only" or "database unreachable" when ``exc`` is a refusal of that kind (see above); None
    for any other error. A fault of the store's, which passes: retried, waited for, a 503 — not the record's or
    the request's fault, and not a bug."""
    orig = getattr(exc, "orig", None)
    return _STORE_STATES.get(str(getattr(orig, "sqlstate", None) or ""))


_engines: dict[tuple[str, str | None], Engine] = {}
_lock = threading.Lock()


@dataclasses.dataclass(frozen=True)
class Migration:
    """One schema step. ``sqlite`` and ``postgresql`` are lists of statements (or a callable
    taking the connection, for steps that are not plain SQL). ``both`` applies to either dialect."""

    version: int
    name: str
    both: Sequence[str] = ()
    sqlite: Sequence[str] = ()
    postgresql: Sequence[str] = ()
    run: Callable[[Connection], None] | None = None

    def statements(self, dialect: str) -> Sequence[str]:
        own = self.sqlite if dialect == "sqlite" else self.postgresql
        return [*self.both, *own]

    def checksum(self, dialect: str) -> str:
        """SHA-256 of what this step does on ``dialect``: its name, its SQL statements and whether it has a
        ``run`` callable (whose code cannot be checksummed: renaming a function is not an edit). Recorded when
        applied; a step edited after that no longer matches."""
        doc = json.dumps([self.version, self.name, list(self.statements(dialect)), self.run is not None],
                         ensure_ascii=False)
        return hashlib.sha256(doc.encode("utf-8")).hexdigest()


#: a migration's version and name as ``schema_migrations`` keeps them (INTEGER, VARCHAR(200))
MAX_MIGRATION_VERSION = 2**31 - 1
MAX_MIGRATION_NAME = 200


def migrations_problem(migrations: Sequence[object]) -> str | None:
    """Why a service's ``migrations`` cannot be applied (None when they can): each a :class:`Migration` whose
    version is a whole number from 1 to :data:`MAX_MIGRATION_VERSION`, whose name has 1 to
    :data:`MAX_MIGRATION_NAME` characters and whose statements are lists of strings; versions unique and
    increasing."""
    for m in migrations:
        if not isinstance(m, Migration):
            return f"{m!r} is not a Migration"
        if type(m.version) is not int or not 1 <= m.version <= MAX_MIGRATION_VERSION:
            return f"migration {m.version!r}: its version must be a whole number from 1 to {MAX_MIGRATION_VERSION:,}"
        if not isinstance(m.name, str) or not 1 <= len(m.name) <= MAX_MIGRATION_NAME:
            return f"migration {m.version}: its name must be 1 to {MAX_MIGRATION_NAME} characters"
        for field in ("both", "sqlite", "postgresql"):
            statements = getattr(m, field)
            if isinstance(statements, str):
                return f"migration {m.version} ({m.name!r}): {field} must be a list of SQL statements, not one string"
            if not isinstance(statements, list | tuple) or not all(isinstance(x, str) for x in statements):
                return f"migration {m.version} ({m.name!r}): {field} must be a list of SQL statements"
    versions = [m.version for m in migrations]  # type: ignore[attr-defined]
    if versions != sorted(set(versions)):
        return f"migration versions must be unique and increasing: {versions}"
    return None


class MigrationEdited(ConfigError):
    """An applied migration step is not the step the code holds now (its checksum differs)."""


class Dialect:
    """What differs between the databases, in one class per dialect (:class:`SQLite`, :class:`PostgreSQL`);
    :func:`dialect` gives the one of a connection or engine. Code elsewhere asks these methods instead of
    branching on ``dialect.name``."""

    name = ""
    #: ``COPY ... FROM STDIN`` and array parameters (``unnest(%s::text[])``) for bulk writes and key probes
    arrays_and_copy = False

    def for_update(self, sql: str) -> str:
        """``sql`` (a SELECT) locking the rows it reads for the rest of the transaction."""
        return sql

    def lock_keys(self, conn: Connection, keys: Sequence[str]) -> None:
        """Serialize work on each key (application locks until the transaction ends), taken in one order."""

    def write_lock_first(self, conn: Connection, no_op_write: str) -> None:
        """Take the database's write lock now, before any read, with a write that changes nothing."""

    def lock_table(self, conn: Connection, table: str) -> None:
        """Keep other writers of ``table`` out until the transaction ends."""

    def lock_schema_changes(self, conn: Connection) -> None:
        """Keep other starters from changing the current schema's tables until the transaction ends (DDL's
        ``IF NOT EXISTS`` is not safe against a concurrent creator on PostgreSQL). SQLite's writer transaction
        (:meth:`writer`) already holds the whole database."""

    def writer(self, engine: Engine) -> Engine:
        """The engine whose transactions take the write lock at BEGIN where that matters."""
        return engine

    def add_column(self, conn: Connection, table: str, column: str, ddl: str) -> None:
        """``ALTER TABLE table ADD COLUMN column ddl`` unless the column exists (several starters may race)."""
        if column not in {c["name"] for c in sa.inspect(conn).get_columns(table)}:
            conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {column} {ddl}")

    def trigger_names(self, conn: Connection) -> set[str]:
        raise NotImplementedError

    def non_integers(self, conn: Connection, table: str, key: str, column: str) -> list[tuple[Any, ...]]:
        """``(key, stored type)`` of rows whose ``column`` is not stored as an integer (only SQLite can)."""
        return []

    def skip_locked(self) -> str:
        """The clause of a claim's row lock that passes over rows another worker holds ("" where the whole
        database is locked by the claiming write anyway)."""
        return ""

    def snapshot(self, conn: Connection) -> Connection:
        """``conn`` reading one consistent snapshot for its whole transaction."""
        return conn

    def relaxed_commit(self, conn: Connection) -> None:
        """For this transaction only: do not wait for the commit to reach disk (for writes whose loss in a
        server crash only repeats work)."""

    def process_lock(self, engine: Engine, table: str, role: str) -> ProcessLock:
        """A lock one process at a time holds on ``table`` of ``engine``'s database (e.g. the one relay of an
        outbox), let go by the operating system or the server when the holder dies."""
        raise NotImplementedError

    def change_watch(self, engine: Engine, channel: str, nap: float) -> ChangeWatch:
        """A wait for ``engine``'s database to change (e.g. rows for the relay to publish), on a connection of its
        own: SQLite notices another connection's commit within ``nap`` seconds; PostgreSQL is woken at once by a
        notification on ``channel`` that a trigger of the current schema sends (see :class:`ListenWatch`)."""
        raise NotImplementedError


class ChangeWatch:
    """Waits until a database may have changed (:meth:`Dialect.change_watch`). :meth:`wait` returning True is a
    reason to look, not a promise of news; False: nothing seen within ``timeout``, or ``stop`` was set."""

    def wait(self, timeout: float, stop: threading.Event) -> bool:
        raise NotImplementedError

    def close(self) -> None:
        """Let go of the watch's connection."""


class PollWatch(ChangeWatch):
    """No way to see changes (an in-memory database): every wait of ``nap`` seconds is a reason to look."""

    def __init__(self, nap: float) -> None:
        self.nap = nap

    def wait(self, timeout: float, stop: threading.Event) -> bool:
        return not stop.wait(min(self.nap, timeout))


class DataVersionWatch(ChangeWatch):
    """SQLite: ``PRAGMA data_version`` of a connection of its own changes whenever another connection commits to
    the file. Read after 1 ms, then at intervals doubling up to ``nap`` while nothing changes (a few µs a read,
    where a pass over the tables it guards costs far more)."""

    def __init__(self, path: str, nap: float) -> None:
        self.nap = nap
        try:
            self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise TransientError(f"watching {path}: {exc}") from exc
        self._version = self._read()

    def _read(self) -> int:
        try:
            return int(self._conn.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error as exc:
            raise TransientError(f"watching for changes: {exc}") from exc

    def wait(self, timeout: float, stop: threading.Event) -> bool:
        deadline = time.monotonic() + timeout
        nap = min(0.001, self.nap)
        while True:
            version = self._read()
            if version != self._version:
                self._version = version
                return True
            left = deadline - time.monotonic()
            if left <= 0 or stop.wait(min(nap, left)):
                return False
            nap = min(nap * 2, self.nap)

    def close(self) -> None:
        self._conn.close()


class ListenWatch(ChangeWatch):
    """PostgreSQL: ``LISTEN channel`` on a connection of its own (taken from the engine's pool and never given
    back). A trigger's ``pg_notify(channel, current_schema())``, sent when its transaction commits, wakes the wait
    at once; a notification from another schema's tables on the same database is passed over."""

    def __init__(self, engine: Engine, channel: str) -> None:
        import psycopg

        self._raw = engine.raw_connection()
        try:
            conn = self._raw.driver_connection
            assert conn is not None
            conn.rollback()
            conn.autocommit = True
            self._schema = str(conn.execute("SELECT current_schema()").fetchone()[0])
            conn.execute(f"LISTEN {channel}")
        except BaseException as exc:
            self._raw.invalidate()
            if isinstance(exc, psycopg.Error):
                raise TransientError(f"LISTEN {channel}: {exc}") from exc
            raise
        self._conn = conn
        self._error = psycopg.Error

    def wait(self, timeout: float, stop: threading.Event) -> bool:
        deadline = time.monotonic() + timeout
        try:
            while not stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                # in slices, so that a stop is seen within 0.1 s
                if any(n.payload == self._schema for n in self._conn.notifies(timeout=min(left, 0.1))):
                    return True
        except self._error as exc:
            raise TransientError(f"waiting for a notification: {exc}") from exc
        return False

    def close(self) -> None:
        self._raw.invalidate()  # a listening session is not one to give back to the pool


def _on_disk(path: str | None) -> str | None:
    """A SQLite database's ``path`` when it names a file, None for an in-memory database."""
    return path if path and path != ":memory:" else None


class SQLite(Dialect):
    name = "sqlite"

    def write_lock_first(self, conn: Connection, no_op_write: str) -> None:
        conn.exec_driver_sql(no_op_write)

    def writer(self, engine: Engine) -> Engine:
        # BEGIN IMMEDIATE: a writer that reads first waits for the lock instead of failing to upgrade its snapshot
        return engine.execution_options(sqlite_immediate=True)

    def trigger_names(self, conn: Connection) -> set[str]:
        return set(conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'trigger'").scalars())

    def non_integers(self, conn: Connection, table: str, key: str, column: str) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in conn.exec_driver_sql(
            f"SELECT {key}, typeof({column}) FROM {table} WHERE typeof({column}) <> 'integer'")]

    def process_lock(self, engine: Engine, table: str, role: str) -> ProcessLock:
        # an exclusive flock on <database>.<role>.lock; an in-memory database is private to its process anyway
        path = _on_disk(engine.url.database)
        return FileLock(f"{path}.{role}.lock" if path else None, role)

    def change_watch(self, engine: Engine, channel: str, nap: float) -> ChangeWatch:
        path = _on_disk(engine.url.database)
        return DataVersionWatch(path, nap) if path else PollWatch(nap)


class PostgreSQL(Dialect):
    name = "postgresql"
    arrays_and_copy = True

    def for_update(self, sql: str) -> str:
        return f"{sql} FOR UPDATE"

    def skip_locked(self) -> str:
        return " FOR UPDATE SKIP LOCKED"

    def snapshot(self, conn: Connection) -> Connection:
        return conn.execution_options(isolation_level="REPEATABLE READ")

    def relaxed_commit(self, conn: Connection) -> None:
        conn.exec_driver_sql("SET LOCAL synchronous_commit = off")

    def lock_keys(self, conn: Connection, keys: Sequence[str]) -> None:
        if keys:  # one statement (not one per key), the keys locked in sorted order
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) FROM"
                                 " (SELECT k FROM unnest(%s::text[]) AS u(k) ORDER BY k OFFSET 0) AS s",
                                 (pg_array(sorted(set(keys))),))

    def lock_table(self, conn: Connection, table: str) -> None:
        conn.exec_driver_sql(f"LOCK TABLE {table} IN EXCLUSIVE MODE")

    def lock_schema_changes(self, conn: Connection) -> None:
        # current_schema() is NULL while the search path names no existing schema: then "public" is created in
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(hashtextextended("
                             "'payevents.schema_changes:' || coalesce(current_schema(), 'public'), 0))")

    def add_column(self, conn: Connection, table: str, column: str, ddl: str) -> None:
        if column not in {c["name"] for c in sa.inspect(conn).get_columns(table)}:
            conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {ddl}")

    def trigger_names(self, conn: Connection) -> set[str]:
        return set(conn.exec_driver_sql(
            "SELECT t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
            " WHERE c.relnamespace = current_schema()::regnamespace AND NOT t.tgisinternal").scalars())

    def process_lock(self, engine: Engine, table: str, role: str) -> ProcessLock:
        # a session advisory lock keyed by the table's oid (so one per schema)
        return AdvisoryLock(engine, table)

    def change_watch(self, engine: Engine, channel: str, nap: float) -> ChangeWatch:
        return ListenWatch(engine, channel)


class ProcessLock:
    """One holder at a time (:meth:`Dialect.process_lock`). :meth:`try_acquire` never blocks; ``holder`` says
    who holds it when it is not ours."""

    held = False
    holder = "unknown"

    def try_acquire(self) -> bool:
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def verify(self) -> bool:
        """Whether the lock is still ours (a lock that lives in a server session goes with that session)."""
        return self.held


class FileLock(ProcessLock):
    """An exclusive ``flock`` on ``path``, which names the holder (None: always ours)."""

    def __init__(self, path: str | None, role: str) -> None:
        self.path, self.role = path, role
        self._file: IO[str] | None = None

    def describe(self) -> str:
        return self.path or "an in-memory database"

    def try_acquire(self) -> bool:
        if self.held:
            return True
        if self.path is None:
            self.held = True
            return True
        f = open(self.path, "a+")  # kept open while the lock is held
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            self.holder = f.read().strip() or "unknown"
            f.close()
            return False
        f.seek(0)
        f.truncate()
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        f.write(f"{self.role} pid {os.getpid()} on {socket.gethostname()} since {since}\n")
        f.flush()
        self._file, self.held = f, True
        return True

    def release(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None
        self.held = False


class AdvisoryLock(ProcessLock):
    """A PostgreSQL session advisory lock (class 1919, the oid of ``table`` in the current schema), held by a
    connection of its own."""

    CLASS_ID = 1919

    def __init__(self, engine: Engine, table: str) -> None:
        self.engine, self.table = engine, table
        self._key = f"'{table}'::regclass::oid::int"
        self._conn: Connection | None = None

    def describe(self) -> str:
        return f"PostgreSQL advisory lock on {self.engine.url.render_as_string(hide_password=True)}"

    def try_acquire(self) -> bool:
        if self.held:
            return True
        conn = self.engine.connect()
        try:
            got = bool(conn.exec_driver_sql(
                f"SELECT pg_try_advisory_lock({self.CLASS_ID}, {self._key})").scalar_one())
            if not got:
                pid = conn.exec_driver_sql(
                    f"SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = {self.CLASS_ID}"
                    f" AND objsubid = 2 AND objid = '{self.table}'::regclass::oid AND granted").scalar()
                conn.commit()
                self.holder = f"PostgreSQL backend pid {pid}"
                conn.close()
                return False
            conn.commit()  # the advisory lock is the session's: it outlives the transaction
        except BaseException:
            conn.close()
            raise
        self._conn, self.held = conn, True
        return True

    def verify(self) -> bool:
        """A session lock is held as long as its session lives: one round trip on the lock's own connection, which
        nothing else uses. A session the server ended (its keepalives found the link dead, ``pg_terminate_backend``,
        a restart) freed the lock for another holder: then it is no longer ours, and this says so."""
        if not self.held or self._conn is None:
            return False
        try:
            self._conn.exec_driver_sql("SELECT 1")
            self._conn.commit()
            return True
        except Exception:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn, self.held = None, False
            return False

    def release(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.exec_driver_sql(f"SELECT pg_advisory_unlock({self.CLASS_ID}, {self._key})")
                self._conn.commit()
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
        self.held = False


_DIALECTS: dict[str, Dialect] = {d.name: d for d in (SQLite(), PostgreSQL())}


def dialect(bind: Connection | Engine) -> Dialect:
    """The :class:`Dialect` of a connection or engine."""
    try:
        return _DIALECTS[bind.dialect.name]
    except KeyError:
        raise ConfigError(f"database: {bind.dialect.name!r} is not supported (SQLite or PostgreSQL)") from None


#: how long a SQLite statement waits for a lock another connection holds (s)
SQLITE_BUSY_TIMEOUT_S = 10.0


def _sqlite_begin(conn: Connection) -> None:
    if not conn.get_execution_options().get("sqlite_immediate"):
        conn.exec_driver_sql("BEGIN")
        return
    try:
        begin_immediate(conn.connection.dbapi_connection, SQLITE_BUSY_TIMEOUT_S)  # type: ignore[arg-type]
    except sqlite3.Error as exc:  # as a statement's error would be: transient ("database is locked")
        raise sa.exc.OperationalError("BEGIN IMMEDIATE", (), exc) from exc


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")  # a commit is on disk when it returns (docs/architecture.md)
    cur.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def make_engine(url: str, schema: str | None = None, **kwargs: Any) -> Engine:
    """A new engine. SQLite gets WAL + a busy timeout; PostgreSQL gets ``search_path=schema``,
    :data:`PG_CONNECT_DEFAULTS` and :data:`PG_SESSION_DEFAULTS`. A URL of another database is a ConfigError (a
    service's own ``database_url`` comes here without the settings' check)."""
    if (problem := database_url_problem(url)) is not None:
        raise ConfigError(f"database URL: {problem} ({DATABASE_URL_FORMS})")
    if url.startswith("sqlite"):
        path = _on_disk(url.split("///", 1)[1] if "///" in url else None)
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S},
                                  **kwargs)
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        # Let SQLAlchemy emit BEGIN itself, so a transaction is really one SQLite transaction. A writer that
        # reads first should use writer(engine): BEGIN IMMEDIATE takes the write lock up front (waiting for it,
        # promptly: payevents.sqlitelock), instead of failing at once when its read snapshot cannot be upgraded.
        sa.event.listen(engine, "begin", _sqlite_begin)

        @sa.event.listens_for(engine, "connect")
        def _no_pysqlite_tx(dbapi_conn: Any, _rec: Any) -> None:
            dbapi_conn.isolation_level = None

        return engine
    connect_args: dict[str, Any] = dict(kwargs.pop("connect_args", {}))
    given = sa.engine.make_url(url).query
    connect_args.update({k: v for k, v in PG_CONNECT_DEFAULTS.items() if k not in given and k not in connect_args})
    options = [f"-c{k}={v}" for k, v in PG_SESSION_DEFAULTS.items()]
    if schema:
        options.append(f"-csearch_path={schema}")
    for theirs in (given.get("options"), connect_args.get("options")):  # later settings win
        options.extend([theirs] if isinstance(theirs, str) else theirs or ())
    connect_args["options"] = " ".join(options)
    kwargs.setdefault("isolation_level", PG_ISOLATION_LEVEL)
    engine = sa.create_engine(url, connect_args=connect_args, pool_pre_ping=True, **kwargs)
    if schema:
        with engine.begin() as conn:
            # starters of one schema wait for each other: CREATE SCHEMA IF NOT EXISTS can fail on a concurrent one
            PostgreSQL().lock_keys(conn, [f"payevents.create_schema:{schema}"])
            conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    return engine


def writer(engine: Engine) -> Engine:
    """The same engine, whose transactions take SQLite's write lock at BEGIN (no-op on PostgreSQL)."""
    return dialect(engine).writer(engine)


def engine_for(settings: Settings, service: str, *, url: str | None = None) -> Engine:
    """The (cached, per process) engine of one service's own database (``url``: one the service chose)."""
    schema = settings.schema_for(service) if url is None else None
    url = url or settings.database_url_for(service)
    key = (url, schema)
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _engines[key] = make_engine(url, schema)
        return engine


def dispose_engines() -> None:
    """Close every cached engine (tests, and before a fork)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


#: per engine: service -> highest migration version known to be applied (by this process)
_migrated: weakref.WeakKeyDictionary[Engine, dict[str, int]] = weakref.WeakKeyDictionary()


def connect(settings: Settings, service: str, migrations: Sequence[Migration]) -> Engine:
    """The service's engine with its migrations applied (checked once per engine and process)."""
    engine = engine_for(settings, service)
    newest = max((m.version for m in migrations), default=0)
    with _lock:
        done = _migrated.get(engine, {}).get(service, -1)
    if done < newest:
        migrate(engine, service, migrations, complete=True)
        with _lock:
            _migrated.setdefault(engine, {})[service] = newest
    return engine


def ensure_migrations_table(engine: Engine) -> None:
    """``schema_migrations`` in the engine's database (schema), from before checksums or not."""
    db = dialect(engine)
    with writer(engine).begin() as conn:
        db.lock_schema_changes(conn)  # two starters on a fresh schema: the second waits, then finds the table
        conn.exec_driver_sql(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " service VARCHAR(64) NOT NULL, version INTEGER NOT NULL, name VARCHAR(200) NOT NULL,"
            " applied_at VARCHAR(40) NOT NULL, checksum VARCHAR(64), PRIMARY KEY (service, version))"
        )
        db.add_column(conn, "schema_migrations", "checksum", "VARCHAR(64)")  # a table from before checksums


def migrate(engine: Engine, service: str, migrations: Sequence[Migration], *, complete: bool = False) -> list[int]:
    """Apply the migrations not yet recorded; return the versions applied now. ``complete``: ``migrations`` is
    every step of ``service`` this code knows (a service's start), so a step recorded above the newest was made by
    a newer payevents, and is said as a warning; not for a caller that applies a part of them (the relay and the
    audit apply the outbox's steps of the payments store, which holds the service's own too).

    Each applied step is recorded with its checksum (:meth:`Migration.checksum`); a recorded step whose
    checksum differs from the code's raises :class:`MigrationEdited` before anything is applied (a step
    recorded before checksums existed gets the code's checksum recorded, once)."""
    if (problem := migrations_problem(migrations)) is not None:
        raise ConfigError(f"service {service}: {problem}")
    versions = [m.version for m in migrations]
    applied_now: list[int] = []
    db = dialect(engine)
    ensure_migrations_table(engine)
    with writer(engine).begin() as conn:
        recorded = {int(r[0]): r[1] for r in conn.execute(
            sa.text("SELECT version, checksum FROM schema_migrations WHERE service = :s"), {"s": service})}
        newest = max(versions, default=0)
        ahead = sorted(v for v in recorded if v > newest) if complete else []
        if ahead:
            log.warning("%s: the database holds migration%s %s, which this payevents does not know (its newest is"
                        " %d): a newer payevents migrated it; run that version", service,
                        "s" if len(ahead) > 1 else "", ", ".join(map(str, ahead)), newest)
        for m in migrations:
            if m.version not in recorded:
                continue
            want = m.checksum(db.name)
            if recorded[m.version] is None:
                conn.execute(sa.text("UPDATE schema_migrations SET checksum = :c WHERE service = :s AND version = :v"
                                     " AND checksum IS NULL"), {"c": want, "s": service, "v": m.version})
            elif recorded[m.version] != want:
                raise MigrationEdited(
                    f"{service}: migration {m.version} ({m.name!r}) was applied as another step than the code holds"
                    f" now (checksum {recorded[m.version][:12]}… recorded, {want[:12]}… in the code): an applied"
                    " migration must never be edited; add a new step instead")
    for m in migrations:
        # SQLite: take the write lock before the check (BEGIN IMMEDIATE), so a starter racing another one
        # waits for it instead of failing to upgrade its read snapshot to a write ("database is locked")
        with writer(engine).begin() as conn:
            db.lock_table(conn, "schema_migrations")  # serialize concurrent starters of the same service
            done = conn.execute(
                sa.text("SELECT 1 FROM schema_migrations WHERE service = :s AND version = :v"),
                {"s": service, "v": m.version},
            ).first()
            if done:
                continue
            for stmt in m.statements(db.name):
                conn.exec_driver_sql(stmt)
            if m.run is not None:
                m.run(conn)
            conn.execute(
                sa.text("INSERT INTO schema_migrations (service, version, name, applied_at, checksum)"
                        " VALUES (:s, :v, :n, :t, :c)"),
                {"s": service, "v": m.version, "n": m.name, "t": datetime.now(UTC).isoformat(),
                 "c": m.checksum(db.name)},
            )
            applied_now.append(m.version)
    return applied_now
