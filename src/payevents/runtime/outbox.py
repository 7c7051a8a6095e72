"""The transactional outbox: events are stored in the producer's own database, in its transaction.

A producing service calls :func:`append` inside the transaction that records its state change, so
the state change and the event commit together or not at all. The relay (:mod:`.relay`) publishes
what is pending. Tables (versions 1..99 of a service's migrations are reserved for the outbox):

* ``outbox_events`` — one immutable row per event: body bytes, type, version, payment id, key,
  topic, headers, ``created_at``, a content hash (idempotency) and a hash chain (``prev_hash``,
  ``hash``). UPDATE, DELETE (and TRUNCATE on PostgreSQL) are refused by triggers.
* ``outbox_chain`` — the single chain-head row (last seq, last hash). Appends lock it, so seqs are
  dense, assigned in chain order, and concurrent writers never fork the chain.
* ``outbox_pending`` — seqs not yet published (deleted once the broker acknowledged them).
* ``outbox_published`` — per published seq: when, the publish delay, partition and offset.
* ``outbox_republished`` — where an operator's ``outbox republish`` put an event again (partition, offset).
* ``outbox_set_aside`` — seqs the broker refused for good (too large, invalid topic): when and why. They
  leave ``outbox_pending`` (nothing behind them waits) but their event rows stay, untouched; an operator
  puts one back to pending deliberately with :func:`resend` (``resent_at`` records it).

PostgreSQL: every connection runs READ COMMITTED, set explicitly (:data:`ISOLATION_LEVEL`, applied by
``store.db.make_engine``): :func:`append_many` reads the idempotency keys *after* it locked the chain head,
and only a fresh per-statement snapshot sees what the writer it waited for committed (under REPEATABLE READ
or SERIALIZABLE the lock wait would end in a serialization failure instead). Serialization failures and
deadlocks that still happen are retried by :func:`retry_serialization` (the API's writes use it).

SQLite note: append's first statement is a write (it takes the database write lock at once). A
caller whose transaction only *read* before calling append may get ``database is locked`` if another
writer committed in between (WAL snapshot upgrade); write first or keep reads after the append.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any, Final, TypeVar

import msgspec
import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from payevents.contracts import channel
from payevents.contracts.cardguard import check_free_text, safe_repr
from payevents.contracts.channel import Env, partition_key, topic_for
from payevents.contracts.events import PaymentEvent
from payevents.errors import ContractError, IdempotencyConflict, TransientError
from payevents.runtime import bulk, tracing
from payevents.store.db import PG_ISOLATION_LEVEL, Migration
from payevents.store.sql import mark as sql_mark

GENESIS_HASH: Final = "0" * 64
#: the isolation level the outbox relies on (PostgreSQL; SQLite transactions are serial anyway)
ISOLATION_LEVEL: Final = PG_ISOLATION_LEVEL
#: SQLSTATEs worth retrying the whole transaction for: serialization_failure, deadlock_detected
RETRY_SQLSTATES: Final = frozenset({"40001", "40P01"})
#: The clock of ``created_at`` (epoch seconds); a module attribute so tests can age an event.
clock = time.time
IMMUTABLE_MESSAGE: Final = "outbox_events is immutable"
_T = TypeVar("_T")

#: the event table, identical on both databases but for the names of the 64-bit integer and bytes types
_EVENTS_TABLE: Final = """CREATE TABLE outbox_events (
        seq {int64} PRIMARY KEY,
        event_id VARCHAR(64) NOT NULL UNIQUE,
        idempotency_key VARCHAR(255) NOT NULL UNIQUE,
        event_type VARCHAR(64) NOT NULL,
        version VARCHAR(32) NOT NULL,
        payment_id VARCHAR(255) NOT NULL,
        partition_key {bytes} NOT NULL,
        topic VARCHAR(255) NOT NULL,
        headers TEXT NOT NULL,
        body {bytes} NOT NULL,
        content_hash CHAR(64) NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        prev_hash CHAR(64) NOT NULL,
        hash CHAR(64) NOT NULL
    )"""
_SQLITE_TABLES: Final = [_EVENTS_TABLE.format(int64="INTEGER", bytes="BLOB")]
_PG_TABLES: Final = [_EVENTS_TABLE.format(int64="BIGINT", bytes="BYTEA")]
_COMMON_TABLES: Final = [
    "CREATE INDEX ix_outbox_events_payment ON outbox_events (payment_id, seq)",
    """CREATE TABLE outbox_chain (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        last_seq BIGINT NOT NULL,
        last_hash CHAR(64) NOT NULL
    )""",
    f"INSERT INTO outbox_chain (id, last_seq, last_hash) VALUES (1, 0, '{GENESIS_HASH}')",
    "CREATE TABLE outbox_pending (seq BIGINT PRIMARY KEY)",
    """CREATE TABLE outbox_published (
        seq BIGINT PRIMARY KEY,
        published_at DOUBLE PRECISION NOT NULL,
        delay_s DOUBLE PRECISION NOT NULL,
        partition INTEGER NOT NULL,
        "offset" BIGINT NOT NULL
    )""",
    "CREATE INDEX ix_outbox_published_at ON outbox_published (published_at)",
]

_SQLITE_TRIGGERS: Final = [
    f"""CREATE TRIGGER outbox_events_no_update BEFORE UPDATE ON outbox_events
        BEGIN SELECT RAISE(ABORT, '{IMMUTABLE_MESSAGE}: UPDATE refused'); END""",
    f"""CREATE TRIGGER outbox_events_no_delete BEFORE DELETE ON outbox_events
        BEGIN SELECT RAISE(ABORT, '{IMMUTABLE_MESSAGE}: DELETE refused'); END""",
]
_PG_TRIGGERS: Final = [
    f"""CREATE OR REPLACE FUNCTION outbox_events_immutable() RETURNS trigger LANGUAGE plpgsql AS $fn$
        BEGIN
            RAISE EXCEPTION USING MESSAGE = '{IMMUTABLE_MESSAGE}: ' || TG_OP || ' refused',
                                  ERRCODE = 'restrict_violation';
        END
        $fn$""",
    """CREATE TRIGGER outbox_events_no_update BEFORE UPDATE ON outbox_events
        FOR EACH ROW EXECUTE FUNCTION outbox_events_immutable()""",
    """CREATE TRIGGER outbox_events_no_delete BEFORE DELETE ON outbox_events
        FOR EACH ROW EXECUTE FUNCTION outbox_events_immutable()""",
    """CREATE TRIGGER outbox_events_no_truncate BEFORE TRUNCATE ON outbox_events
        FOR EACH STATEMENT EXECUTE FUNCTION outbox_events_immutable()""",
]

#: the PostgreSQL notification channel on which an outbox says it has events to publish (the payload: its schema)
OUTBOX_CHANNEL: Final = "payevents_outbox"
_PG_WAKE_RELAY: Final = [
    f"""CREATE OR REPLACE FUNCTION outbox_pending_notify() RETURNS trigger LANGUAGE plpgsql AS $fn$
        BEGIN
            PERFORM pg_notify('{OUTBOX_CHANNEL}', current_schema());
            RETURN NULL;
        END
        $fn$""",
    """CREATE TRIGGER outbox_pending_notify AFTER INSERT ON outbox_pending
        FOR EACH STATEMENT EXECUTE FUNCTION outbox_pending_notify()""",
]

#: The outbox's schema steps; a producing service puts them first in its own migration list
#: (versions 1..99 are reserved for the outbox, the service's own steps use 100+).
OUTBOX_MIGRATIONS: Final[list[Migration]] = [
    Migration(1, "outbox tables", sqlite=[*_SQLITE_TABLES, *_COMMON_TABLES], postgresql=[*_PG_TABLES, *_COMMON_TABLES]),
    Migration(2, "outbox immutability triggers", sqlite=_SQLITE_TRIGGERS, postgresql=_PG_TRIGGERS),
    Migration(3, "outbox set-aside records", both=[
        """CREATE TABLE outbox_set_aside (
            seq BIGINT PRIMARY KEY,
            set_aside_at DOUBLE PRECISION NOT NULL,
            reason TEXT NOT NULL,
            times INTEGER NOT NULL DEFAULT 1,
            resent_at DOUBLE PRECISION
        )""",
    ]),
    # where `payevents outbox republish` put an event again (runtime.relay.republish): a re-sent record that is
    # lost again is found by its new offsets too
    Migration(4, "outbox re-publications", both=[
        """CREATE TABLE outbox_republished (
            partition INTEGER NOT NULL,
            "offset" BIGINT NOT NULL,
            seq BIGINT NOT NULL,
            republished_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (partition, "offset", seq)
        )""",
    ]),
    # every statement that adds pending events — an append, a resend, a republish, anyone's SQL — wakes the relay
    # (when its transaction commits) instead of the relay asking the table over and over (runtime.relay)
    Migration(5, "outbox wakes its relay", postgresql=_PG_WAKE_RELAY),
]


@dataclasses.dataclass(frozen=True, slots=True)
class AppendResult:
    event_id: str
    seq: int
    #: False when the idempotency key was already used with the same content (nothing written)
    created: bool


@dataclasses.dataclass(frozen=True, slots=True)
class StoredEvent:
    """One outbox row with its publish status."""

    seq: int
    event_id: str
    idempotency_key: str
    event_type: str
    version: str
    payment_id: str
    partition_key: bytes
    topic: str
    headers: dict[str, str]
    body: bytes
    content_hash: str
    created_at: float
    prev_hash: str
    hash: str
    published_at: float | None = None
    delay_s: float | None = None
    partition: int | None = None
    offset: int | None = None

    @property
    def published(self) -> bool:
        return self.published_at is not None


_DECIMAL_DECODER = msgspec.json.Decoder(float_hook=Decimal)


def content_hash(body: bytes) -> str:
    """sha256 of the event's eventType + version + data (canonical JSON): eventId and timestamp excluded,
    so a retried command that builds a fresh envelope around the same data hashes the same."""
    doc = _DECIMAL_DECODER.decode(body)
    if not isinstance(doc, dict):
        raise ContractError("body: an encoded event must be a JSON object")
    subject = {"eventType": doc.get("eventType"), "version": doc.get("version"), "data": doc.get("data")}
    return hashlib.sha256(msgspec.json.encode(subject, order="sorted")).hexdigest()


def _canonical(
    seq: int, event_id: str, idempotency_key: str, event_type: str, version: str, payment_id: str,
    partition_key: bytes, topic: str, headers: str, body_sha: str, c_hash: str, created_at: float,
) -> bytes:
    return orjson.dumps(
        [seq, event_id, idempotency_key, event_type, version, payment_id, partition_key.hex(), topic, headers,
         body_sha, c_hash, repr(created_at)]
    )  # fmt: skip


def canonical_row(row: Mapping[str, Any]) -> bytes:
    """The bytes a row's chain hash covers (every stored column except the hashes themselves)."""
    return _canonical(
        int(row["seq"]), row["event_id"], row["idempotency_key"], row["event_type"], row["version"],
        row["payment_id"], bytes(row["partition_key"]), row["topic"], row["headers"],
        hashlib.sha256(bytes(row["body"])).hexdigest(), row["content_hash"], float(row["created_at"]),
    )  # fmt: skip


def chain_hash(prev_hash: str, row: Mapping[str, Any]) -> str:
    """hash = sha256(prev_hash + canonical row content)."""
    return hashlib.sha256(prev_hash.encode("ascii") + canonical_row(row)).hexdigest()


#: the most characters an audit header may hold (the idempotency key's column is as wide)
MAX_AUDIT_HEADER_CHARS: Final = 255
#: a line break or another control character in a header would split a log line or a printed record (a NUL, which
#: PostgreSQL cannot store, is refused by ``check_free_text`` already)
_CONTROL: Final = re.compile(r"[\x01-\x1f\x7f]")


#: header names and (name, value) pairs that passed :func:`_check_headers`' rules, which depend on nothing else: the
#: process's writers skip them (a source, a producer, the names repeat on every event); emptied when it grows past
#: the bound (ids are new on every event)
_CHECKED_HEADERS: Final[set[tuple[str, str]]] = set()
_CHECKED_HEADERS_MAX: Final = 4096


def _check_headers(headers: Mapping[str, str], event: PaymentEvent, idempotency_key: str,
                   checked: set[tuple[str, str]]) -> dict[str, str]:
    """Every header an event is stored and published with, checked once: non-empty strings, no control character,
    held to the rules of free text entering a store (``cardguard.check_free_text``: no NUL, no card number; the
    audit headers at most 255 characters) — except a value that is the event's own eventId or paymentId, which
    passed the event's rules when its body was encoded, and a (name, value) in ``checked`` (headers already checked:
    a source, a producer, a payment's correlation id repeat; ``(name, "")``: the name alone); the transport headers
    are the event's."""
    out: dict[str, str] = {}
    own_ids = (event.eventId, event.data.paymentId)
    for name, value in headers.items():
        if not isinstance(name, str) or not name:
            raise ContractError(f"headers: header names must be non-empty strings, got {safe_repr(name)}")
        if not isinstance(value, str) or not value:
            raise ContractError(f"headers.{name}: required non-empty string")
        if (name, value) not in checked:
            if (name, "") not in checked:  # the name on its own (a value is never empty)
                check_free_text("headers: a header name", name, MAX_AUDIT_HEADER_CHARS)
                if _CONTROL.search(name):
                    raise ContractError(f"headers: the header name {safe_repr(name)} holds a control character")
                checked.add((name, ""))
            if value not in own_ids:
                check_free_text(f"headers.{name}", value,
                                MAX_AUDIT_HEADER_CHARS if name in channel.AUDIT_HEADERS else None)
            if _CONTROL.search(value):
                raise ContractError(f"headers.{name}: holds a control character (a line break, a tab, ...)")
            checked.add((name, value))
        out[name] = value
    for name in channel.AUDIT_HEADERS:
        if name not in out:
            raise ContractError(f"headers.{name}: required audit header (build them with channel.audit_headers)")
    if out[channel.H_IDEMPOTENCY_KEY] != idempotency_key:
        raise ContractError(f"headers.{channel.H_IDEMPOTENCY_KEY}: must equal the idempotency_key argument")
    transport = {
        channel.H_EVENT_TYPE: event.eventType,
        channel.H_VERSION: event.version,
        channel.H_EVENT_ID: event.eventId,
        channel.H_CONTENT_TYPE: channel.CONTENT_TYPE_JSON,
    }
    for name, value in transport.items():
        if name in out and out[name] != value:
            raise ContractError(f"headers.{name}: {out[name]!r} contradicts the event ({value!r})")
        out[name] = value
    return dict(sorted(out.items()))


def _lock_chain(conn: Connection) -> tuple[int, str]:
    """Lock the chain head for the rest of the caller's transaction and read it."""
    from payevents.store.db import dialect

    d = dialect(conn)
    # SQLite: a write first takes its (database-wide) write lock now, before any read; PostgreSQL: FOR UPDATE
    d.write_lock_first(conn, "UPDATE outbox_chain SET last_seq = last_seq WHERE id = 1")
    row = conn.exec_driver_sql(d.for_update("SELECT last_seq, last_hash FROM outbox_chain WHERE id = 1")).one()
    return int(row[0]), str(row[1])


#: an outbox_events row's columns, in the order append_many builds its rows
_EVENT_ROW_COLUMNS: Final = ("seq", "event_id", "idempotency_key", "event_type", "version", "payment_id",
                             "partition_key", "topic", "headers", "body", "content_hash", "created_at", "prev_hash",
                             "hash")
_UPDATE_HEAD_SQL: Final = "UPDATE outbox_chain SET last_seq = {0}, last_hash = {0} WHERE id = 1"
_SELECT_KEYS_SQL: Final = (
    "SELECT idempotency_key, event_id, seq, content_hash FROM outbox_events WHERE idempotency_key IN ({})"
)
_KEYS_PER_SELECT: Final = 500



@dataclasses.dataclass(frozen=True, slots=True)
class OutboxItem:
    """One event to append with :func:`append_many`."""

    event: PaymentEvent
    headers: Mapping[str, str]
    idempotency_key: str


def append(
    conn: Connection,
    event: PaymentEvent,
    *,
    headers: Mapping[str, str],
    idempotency_key: str,
    env: Env | str,
) -> AppendResult:
    """Store ``event`` in the outbox, inside the caller's transaction (``conn`` must be in one).

    Validates and encodes with :func:`payevents.contracts.codec.encode_event`. The idempotency key is
    unique: the same key with the same content returns the first event (``created=False``, nothing
    written); with different content it raises :class:`IdempotencyConflict`.
    """
    return append_many(conn, [OutboxItem(event, headers, idempotency_key)], env=env)[0]


def append_many(conn: Connection, items: Sequence[OutboxItem], *, env: Env | str) -> list[AppendResult]:
    """:func:`append` for many events at once (one lock, a handful of statements for the whole batch):
    results in input order. A key repeated within ``items`` follows the same rule as a key stored before."""
    from payevents.contracts import codec

    if not conn.in_transaction():
        raise ContractError("append: must be called inside the caller's transaction (conn.begin())")
    if not items:
        return []
    topic = topic_for(env)
    sha256 = hashlib.sha256
    dumps = orjson.dumps
    encode_event = codec.encode_event
    creation_headers = tracing.creation_headers
    # Everything of a row that depends neither on its seq, the time nor the chain is made here, before the
    # chain lock and the clock: the time a row is stamped with is then its commit's, not its preparation's.
    prepared = []
    checked = _CHECKED_HEADERS
    if len(checked) > _CHECKED_HEADERS_MAX:
        checked.clear()
    for item in items:
        key = item.idempotency_key
        if not isinstance(key, str) or not key:
            raise ContractError("idempotency_key: required non-empty string")
        if len(key) > 255:
            raise ContractError("idempotency_key: at most 255 characters")
        event = item.event
        body = encode_event(event)
        # the event's creation context (W3C traceparent) is stored as a header while tracing is on
        stored_headers = _check_headers(creation_headers(topic, event.eventId, item.headers), event, key, checked)
        prepared.append((item, body, dumps(stored_headers, option=orjson.OPT_SORT_KEYS).decode(),
                         content_hash(body), sha256(body).hexdigest(), partition_key(event.data.paymentId)))

    last_seq, last_hash = _lock_chain(conn)
    mark = sql_mark(conn)
    # Read after the lock: a concurrent writer of the same key has committed (or rolled back) by now.
    known: dict[str, tuple[str, int, str]] = {}
    keys = sorted({item.idempotency_key for item in items})
    for i in range(0, len(keys), _KEYS_PER_SELECT):
        part = keys[i : i + _KEYS_PER_SELECT]
        sql = _SELECT_KEYS_SQL.format(",".join([mark] * len(part)))
        for k, eid, seq, c in conn.exec_driver_sql(sql, tuple(part)):
            known[k] = (eid, int(seq), c)

    results: list[AppendResult] = []
    rows: list[tuple[Any, ...]] = []
    now = float(clock())
    for item, body, headers_json, c_hash, body_sha, p_key in prepared:
        key = item.idempotency_key
        first = known.get(key)
        if first is not None:
            if first[2] != c_hash:
                raise IdempotencyConflict(
                    f"idempotency_key {key!r}: already used for event {first[0]} with different content "
                    "(the same key must carry the same eventType, version and data)"
                )
            results.append(AppendResult(event_id=first[0], seq=first[1], created=False))
            continue
        event = item.event
        seq = last_seq + 1
        event_id = event.eventId
        payment_id = event.data.paymentId
        # the same bytes canonical_row() gives for the stored row (audit verify recomputes them from it)
        canonical = _canonical(seq, event_id, key, event.eventType, event.version, payment_id, p_key, topic,
                               headers_json, body_sha, c_hash, now)
        row_hash = sha256(last_hash.encode("ascii") + canonical).hexdigest()
        rows.append((seq, event_id, key, event.eventType, event.version, payment_id, p_key, topic, headers_json,
                     body, c_hash, now, last_hash, row_hash))  # fmt: skip
        last_seq, last_hash = seq, row_hash
        known[key] = (event_id, seq, c_hash)
        results.append(AppendResult(event_id=event_id, seq=seq, created=True))
    if rows:
        # one statement per table (runtime.bulk: COPY on PostgreSQL, a driver-level executemany on SQLite)
        bulk.copy_rows(conn, "outbox_events", _EVENT_ROW_COLUMNS, rows)
        bulk.copy_rows(conn, "outbox_pending", ("seq",), [(r[0],) for r in rows])
        conn.exec_driver_sql(_UPDATE_HEAD_SQL.format(mark), (last_seq, last_hash))
    return results


# -- read helpers ---------------------------------------------------------------------------------------

_EVENT_COLUMNS: Final = (
    "e.seq, e.event_id, e.idempotency_key, e.event_type, e.version, e.payment_id, e.partition_key, e.topic,"
    " e.headers, e.body, e.content_hash, e.created_at, e.prev_hash, e.hash,"
    ' p.published_at, p.delay_s, p.partition, p."offset"'
)


def _stored(row: Any) -> StoredEvent:
    return StoredEvent(
        seq=int(row.seq),
        event_id=row.event_id,
        idempotency_key=row.idempotency_key,
        event_type=row.event_type,
        version=row.version,
        payment_id=row.payment_id,
        partition_key=bytes(row.partition_key),
        topic=row.topic,
        headers=orjson.loads(row.headers),
        body=bytes(row.body),
        content_hash=row.content_hash,
        created_at=float(row.created_at),
        prev_hash=row.prev_hash,
        hash=row.hash,
        published_at=None if row.published_at is None else float(row.published_at),
        delay_s=None if row.delay_s is None else float(row.delay_s),
        partition=None if row.partition is None else int(row.partition),
        offset=None if row.offset is None else int(row.offset),
    )


def _events_where(engine: Engine, where: str, params: dict[str, Any]) -> list[StoredEvent]:
    """Stored events (headers and publish status) matching ``where``, in seq order."""
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            f"SELECT {_EVENT_COLUMNS} FROM outbox_events e LEFT JOIN outbox_published p ON p.seq = e.seq"
            f" WHERE {where} ORDER BY e.seq"), params).all()
    return [_stored(r) for r in rows]


def events_for_payment(engine: Engine, payment_id: str) -> list[StoredEvent]:
    """Every stored event of one payment, in seq order, with headers and publish status."""
    return _events_where(engine, "e.payment_id = :pid", {"pid": payment_id})


def get_event(engine: Engine, event_id: str) -> StoredEvent | None:
    """One stored event by eventId (None if the outbox never stored it)."""
    found = _events_where(engine, "e.event_id = :eid", {"eid": event_id})
    return found[0] if found else None


def list_events(engine: Engine, *, after_seq: int = 0, limit: int = 100) -> list[StoredEvent]:
    """Stored events with seq > ``after_seq``, in seq order (paging for tools and dashboards)."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                f"SELECT {_EVENT_COLUMNS} FROM outbox_events e LEFT JOIN outbox_published p ON p.seq = e.seq"
                " WHERE e.seq > :after ORDER BY e.seq LIMIT :lim"
            ),
            {"after": after_seq, "lim": limit},
        ).all()
    return [_stored(r) for r in rows]


def iter_events(conn: Connection, *, batch: int = 1000) -> Iterator[Any]:
    """Every outbox row (raw columns, no status) in seq order, fetched in pages."""
    after = -1
    while True:
        rows = conn.execute(
            sa.text(
                "SELECT seq, event_id, idempotency_key, event_type, version, payment_id, partition_key, topic,"
                " headers, body, content_hash, created_at, prev_hash, hash FROM outbox_events"
                " WHERE seq > :after ORDER BY seq LIMIT :lim"
            ),
            {"after": after, "lim": batch},
        ).all()
        if not rows:
            return
        yield from rows
        after = int(rows[-1].seq)


def pending_count(engine: Engine) -> int:
    """How many stored events the relay has not yet published."""
    with engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT COUNT(*) FROM outbox_pending").scalar_one())


def published_delays(engine: Engine, since: float | None = None) -> list[float]:
    """Publish delays in seconds (broker ack minus outbox created_at) of events published at or after
    ``since`` (epoch seconds; None: all), in publish order."""
    with engine.connect() as conn:
        if since is None:
            rows = conn.exec_driver_sql("SELECT delay_s FROM outbox_published ORDER BY published_at, seq").all()
        else:
            rows = conn.execute(
                sa.text(
                    "SELECT delay_s FROM outbox_published WHERE published_at >= :since ORDER BY published_at, seq"
                ),
                {"since": since},
            ).all()
    return [float(r[0]) for r in rows]


def percentiles(values: Sequence[float], qs: Sequence[float] = (0.5, 0.99)) -> dict[float, float]:
    """Nearest-rank percentiles of ``values`` (empty: {})."""
    if not values:
        return {}
    ordered = sorted(values)
    n = len(ordered)
    return {q: ordered[min(n - 1, max(0, math.ceil(q * n) - 1))] for q in qs}


# -- set aside: records the broker refused for good ----------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class SetAside:
    """An outbox event the broker refused for good, with the reason (``resent_at``: put back to pending)."""

    seq: int
    event_id: str
    event_type: str
    payment_id: str
    topic: str
    size: int
    created_at: float
    set_aside_at: float
    reason: str
    times: int
    resent_at: float | None

    @property
    def waiting(self) -> bool:
        """Still set aside (not re-sent since)."""
        return self.resent_at is None

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "waiting": self.waiting}


def set_aside(conn: Connection, refused: Mapping[int, str], *, now: float | None = None) -> None:
    """Take ``refused`` (seq -> reason) out of pending and record why, in the caller's transaction."""
    if not refused:
        return
    mark = sql_mark(conn)
    t = float(clock() if now is None else now)
    conn.exec_driver_sql(
        f"INSERT INTO outbox_set_aside (seq, set_aside_at, reason, times, resent_at) VALUES ({mark}, {mark}, {mark}, 1,"
        " NULL) ON CONFLICT (seq) DO UPDATE SET set_aside_at = excluded.set_aside_at, reason = excluded.reason,"
        " times = outbox_set_aside.times + 1, resent_at = NULL",
        [(seq, t, reason[:2000]) for seq, reason in sorted(refused.items())])
    conn.exec_driver_sql(f"DELETE FROM outbox_pending WHERE seq IN ({','.join([mark] * len(refused))})",
                         tuple(sorted(refused)))


def list_set_aside(engine: Engine, *, include_resent: bool = False, limit: int = 1000) -> list[SetAside]:
    """Set-aside events in seq order (by default only those still waiting for a deliberate re-send)."""
    where = "" if include_resent else " WHERE s.resent_at IS NULL"
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT s.seq, e.event_id, e.event_type, e.payment_id, e.topic, LENGTH(e.body) AS size, e.created_at,"
            " s.set_aside_at, s.reason, s.times, s.resent_at FROM outbox_set_aside s JOIN outbox_events e"
            f" ON e.seq = s.seq{where} ORDER BY s.seq LIMIT :lim"), {"lim": limit}).all()
    return [SetAside(int(r.seq), r.event_id, r.event_type, r.payment_id, r.topic, int(r.size), float(r.created_at),
                     float(r.set_aside_at), r.reason, int(r.times),
                     None if r.resent_at is None else float(r.resent_at)) for r in rows]


def set_aside_count(engine: Engine) -> int:
    """How many events are set aside and not re-sent."""
    with engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT COUNT(*) FROM outbox_set_aside WHERE resent_at IS NULL").scalar_one())


def resend(engine: Engine, seqs: Sequence[int] | None = None) -> list[int]:
    """Put set-aside events back to pending (``seqs``; None: all waiting), for the relay to try again after
    the cause was fixed (e.g. the broker's size limit raised). Safe: a refused record never reached the
    channel, consumers drop duplicates by eventId anyway, and one refused again is simply set aside again.
    Returns the seqs put back (seqs that are not set aside, or were re-sent already, are ignored)."""
    with engine.begin() as conn:
        mark = sql_mark(conn)
        if seqs is None:
            chosen = [int(s) for (s,) in conn.exec_driver_sql(
                "SELECT seq FROM outbox_set_aside WHERE resent_at IS NULL ORDER BY seq")]
        else:
            if not seqs:
                return []
            wanted = sorted({int(s) for s in seqs})
            marks = ",".join([mark] * len(wanted))
            chosen = [int(s) for (s,) in conn.exec_driver_sql(
                f"SELECT seq FROM outbox_set_aside WHERE resent_at IS NULL AND seq IN ({marks}) ORDER BY seq",
                tuple(wanted))]
        if chosen:
            now = float(clock())
            conn.exec_driver_sql(f"UPDATE outbox_set_aside SET resent_at = {mark} WHERE seq = {mark}",
                                 [(now, s) for s in chosen])
            conn.exec_driver_sql(f"INSERT INTO outbox_pending (seq) VALUES ({mark}) ON CONFLICT (seq) DO NOTHING",
                                 [(s,) for s in chosen])
    return chosen


# -- PostgreSQL: serialization failures are retried -----------------------------------------------------


def is_retryable(exc: BaseException) -> bool:
    """A serialization failure or deadlock (SQLSTATE 40001/40P01): the whole transaction may be retried."""
    orig = getattr(exc, "orig", exc)
    return getattr(orig, "sqlstate", None) in RETRY_SQLSTATES


def retry_serialization(fn: Callable[[], _T], *, attempts: int = 8, base_delay: float = 0.01) -> _T:
    """Run ``fn`` (one whole transaction) again after a serialization failure or deadlock, with jittered
    backoff; after ``attempts`` a TransientError (answered as 503 by the API, never a 500)."""
    from payevents.runtime.backoff import Backoff

    backoff = Backoff(base_delay, base_delay * 2 ** attempts) if base_delay > 0 else None
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except sa.exc.DBAPIError as exc:
            if not is_retryable(exc):
                raise
            if attempt == attempts:
                raise TransientError(f"database: transaction still conflicting after {attempts} attempts "
                                     f"(SQLSTATE {getattr(exc.orig, 'sqlstate', '?')}); retry later") from exc
            if backoff is not None:
                time.sleep(backoff.next())
    raise AssertionError("unreachable")
