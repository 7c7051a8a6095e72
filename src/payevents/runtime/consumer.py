"""The consumer runtime every downstream service uses: exactly-once effects over at-least-once delivery.

Per batch (:meth:`ConsumerRuntime.step`):

1. poll up to ``max_batch`` records of the service's group;
2. decode each (:func:`payevents.contracts.codec.decode_event`); undecodable bytes, non-UTF-8,
   schema-invalid records, documents past the size or depth limit, anything that looks like a card number
   and a record whose key is not its body's UTF-8 paymentId (:func:`~payevents.contracts.channel.key_problem`,
   the key rule, for every service) are *poison*;
3. in ONE store transaction: bulk-insert the "seen" marks (``processed_events``, unique per service and
   eventId) of the batch's new eventIds, call the handlers in offset order, commit. Already-seen
   eventIds (including repeats inside the batch, and events rejected before) are duplicates and change
   nothing. A new event stating a business fact already applied (same paymentId and eventType, see
   :mod:`payevents.runtime.facts`) is absorbed when its content is the same, dead-lettered as a conflict
   naming the first event when not; rejected events are remembered as such. A service with a
   ``batch_handler`` gets all new handled events of the batch in one call instead; if it raises
   PoisonEvent or a non-transient error, the transaction is rolled back and the batch re-applied per
   event (which isolates the culprit); transient errors are retried like any other;
4. still inside that transaction, just before its commit: produce the poison records to the dead-letter
   channel (original bytes, key and headers + ``dlq.*``; card digits masked; a record too large to copy is
   cut to a prefix with its size and hash, and a letter the channel refuses is resent cut). A failed produce rolls the
   batch back and it is retried, so no later event of a payment is applied while an earlier one's dead
   letter is not yet written; a crash after the produce may only write a dead letter twice;
5. commit the next offset of every partition of the batch.

A crash anywhere before 5 replays the batch, and the replay changes nothing. A handler raising
:class:`~payevents.errors.PoisonEvent` costs one rollback: the batch is re-run without that record, which
is dead-lettered. Transient faults (database unavailable or locked, broker unreachable) roll back,
seek the batch's partitions back, pause them and retry with bounded exponential backoff and jitter
while polling on, so the member stays in its group: no skipping, per-payment order kept. Other
exceptions from a handler are retried the same way up to ``max_handler_attempts`` times, then the
record is dead-lettered with the exception's type and message (digits that could be a card number
are masked) — except a store's refusal of the record's values (``DataError``: too long, out of range),
which no retry changes: that record is dead-lettered at once, like a PoisonEvent.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from payevents.contracts import codec
from payevents.contracts.channel import (
    dead_letter_topic_for,
    event_type_header,
    topic_for,
)
from payevents.contracts.events import EVENT_TYPES
from payevents.errors import ConfigError, PoisonEvent
from payevents.runtime import bulk, facts, metrics, tracing
from payevents.runtime.backoff import Backoff, is_transient
from payevents.runtime.deadletter import dead_letter_record, describe, record_problem, redact
from payevents.runtime.limits import batch_problem, poll_timeout_problem
from payevents.runtime.service import ServiceDef
from payevents.runtime.writebehind import LateFailure, NotAhead, WriteBehind
from payevents.settings import Settings
from payevents.store import db
from payevents.store.db import Migration
from payevents.transport.base import Consumer, Message, Producer, Skipped, TopicPartition, Transport

log = logging.getLogger("payevents.consumer")

#: test-only fault hook: probability of ``os._exit(137)`` right after a batch's store commit
FAULT_KILL_AFTER_STORE_COMMIT = "PAYEVENTS_FAULT_KILL_AFTER_STORE_COMMIT"

RUNTIME_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "processed_events",
        both=[
            "CREATE TABLE IF NOT EXISTS processed_events ("
            " service VARCHAR(64) NOT NULL,"
            " event_id VARCHAR(128) NOT NULL,"
            " event_type VARCHAR(64) NOT NULL,"
            " outcome VARCHAR(16) NOT NULL,"
            " topic VARCHAR(249) NOT NULL,"
            " partition_no INTEGER NOT NULL,"
            " offset_no BIGINT NOT NULL,"
            " applied_at VARCHAR(40) NOT NULL,"
            " PRIMARY KEY (service, event_id))"
        ],
    ),
    facts.RUNTIME_FACT_MIGRATION,
    Migration(
        3,
        "consumer_attempts: records a worker started to apply after its predecessor died",
        both=[
            "CREATE TABLE IF NOT EXISTS consumer_attempts ("
            " topic VARCHAR(249) NOT NULL,"
            " partition_no INTEGER NOT NULL,"
            " offset_no BIGINT NOT NULL,"
            " attempts INTEGER NOT NULL,"
            " attempt_by VARCHAR(64) NOT NULL,"
            " PRIMARY KEY (topic, partition_no, offset_no))"
        ],
    ),
    Migration(
        4,
        "consumer_members: a process that runs a member, until it stops cleanly",
        both=[
            "CREATE TABLE IF NOT EXISTS consumer_members ("
            " service VARCHAR(64) NOT NULL,"
            " member VARCHAR(255) NOT NULL,"
            " run_by VARCHAR(64) NOT NULL,"
            " started_at VARCHAR(40) NOT NULL,"
            " PRIMARY KEY (service, member))"
        ],
    ),
    Migration(
        5,
        "consumer_attempts per service: services may share a database",
        both=[
            "CREATE TABLE consumer_attempts_by_service ("
            " service VARCHAR(64) NOT NULL,"
            " topic VARCHAR(249) NOT NULL,"
            " partition_no INTEGER NOT NULL,"
            " offset_no BIGINT NOT NULL,"
            " attempts INTEGER NOT NULL,"
            " attempt_by VARCHAR(64) NOT NULL,"
            " PRIMARY KEY (service, topic, partition_no, offset_no))",
            # an attempt left by a process that died belongs to a service whose member row it left too
            "INSERT INTO consumer_attempts_by_service (service, topic, partition_no, offset_no, attempts, attempt_by)"
            " SELECT m.service, a.topic, a.partition_no, a.offset_no, a.attempts, a.attempt_by"
            " FROM consumer_attempts a CROSS JOIN (SELECT DISTINCT service FROM consumer_members) m",
            "DROP TABLE consumer_attempts",
            "ALTER TABLE consumer_attempts_by_service RENAME TO consumer_attempts",
        ],
    ),
    Migration(
        6,
        "consumer_lost: ranges of records deleted from the channel before a service read them",
        both=[
            "CREATE TABLE consumer_lost ("
            " service VARCHAR(64) NOT NULL,"
            " topic VARCHAR(249) NOT NULL,"
            " partition_no INTEGER NOT NULL,"
            " first_offset BIGINT NOT NULL,"
            " upto_offset BIGINT NOT NULL,"
            " reported_at VARCHAR(40) NOT NULL,"
            " PRIMARY KEY (service, topic, partition_no, first_offset))"
        ],
    ),
)

#: the runtime's tables serve every service of a database (each row names its service), so their steps are
#: recorded once per database under this key; until 2026-12-02 they were recorded per service (``{name}.runtime``),
#: and a second service on the same database ran them again and failed
RUNTIME_KEY: Final = "payevents.runtime"
#: a database migrated before: its most migrated service's runtime steps are the database's
_ADOPT_RUNTIME_SQL = (
    "INSERT INTO schema_migrations (service, version, name, applied_at, checksum)"
    " SELECT CAST(:key AS VARCHAR(64)), version, name, applied_at, checksum FROM schema_migrations WHERE service = ("
    " SELECT service FROM schema_migrations WHERE service LIKE '%.runtime' AND service <> :key"
    " GROUP BY service ORDER BY count(*) DESC, service LIMIT 1)"
    " AND NOT EXISTS (SELECT 1 FROM schema_migrations WHERE service = :key)"
)


def migrate_runtime(engine: Engine) -> list[int]:
    """The runtime's tables in a service's database (shared by every service that uses it); the versions
    applied now."""
    db.ensure_migrations_table(engine)
    with db.writer(engine).begin() as conn:
        db.dialect(conn).lock_table(conn, "schema_migrations")
        conn.execute(sa.text(_ADOPT_RUNTIME_SQL), {"key": RUNTIME_KEY})
    return db.migrate(engine, RUNTIME_KEY, RUNTIME_MIGRATIONS, complete=True)


#: a record the worker died applying this many times (killed as stuck, or crashed) is dead-lettered, not tried again
CRASH_LIMIT = 3
_ATTEMPT_SQL = ("INSERT INTO consumer_attempts (service, topic, partition_no, offset_no, attempts, attempt_by)"
                " VALUES ({0}, {0}, {0}, {0}, {0}, {0}) ON CONFLICT (service, topic, partition_no, offset_no)"
                " DO UPDATE SET attempts = excluded.attempts, attempt_by = excluded.attempt_by")
_ATTEMPT_NEW_SQL = ("INSERT INTO consumer_attempts (service, topic, partition_no, offset_no, attempts, attempt_by)"
                    " VALUES ({0}, {0}, {0}, {0}, {0}, {0})")
_ATTEMPTS_RANGE_SQL = ("SELECT offset_no, attempts, attempt_by FROM consumer_attempts WHERE service = {0}"
                       " AND topic = {0} AND partition_no = {0} AND offset_no >= {0} AND offset_no <= {0}")
_ATTEMPT_DONE_SQL = ("DELETE FROM consumer_attempts WHERE service = {0} AND topic = {0} AND partition_no = {0}"
                     " AND offset_no = {0}")
_MEMBER_SQL = "SELECT run_by, started_at FROM consumer_members WHERE service = {0} AND member = {0}"
_MEMBER_START_SQL = ("INSERT INTO consumer_members (service, member, run_by, started_at) VALUES ({0}, {0}, {0}, {0})"
                     " ON CONFLICT (service, member) DO UPDATE SET run_by = excluded.run_by,"
                     " started_at = excluded.started_at")
_MEMBER_STOP_SQL = "DELETE FROM consumer_members WHERE service = {0} AND member = {0} AND run_by = {0}"

#: a range seen again (a member that died before its group read past it) keeps its first report, widened
_LOST_SQL = ("INSERT INTO consumer_lost (service, topic, partition_no, first_offset, upto_offset, reported_at)"
             " VALUES ({0}, {0}, {0}, {0}, {0}, {0}) ON CONFLICT (service, topic, partition_no, first_offset)"
             " DO UPDATE SET upto_offset = excluded.upto_offset WHERE consumer_lost.upto_offset < excluded.upto_offset")
_LOST_READ_SQL = ("SELECT topic, partition_no, first_offset, upto_offset, reported_at FROM consumer_lost"
                  " WHERE service = {0} ORDER BY reported_at, topic, partition_no, first_offset")


def republish_command(gap: Skipped) -> str:
    """The command that publishes again the events the relay put where ``gap`` is
    (:func:`payevents.runtime.relay.republish`)."""
    return (f"payevents outbox republish --partition {gap.partition} --from-offset {gap.first}"
            f" --to-offset {gap.upto - 1}")


@dataclasses.dataclass(frozen=True, slots=True)
class LostRange:
    """Records deleted from the channel before the service read them, and when its consumer reported them."""

    gap: Skipped
    reported_at: str

    @property
    def records(self) -> int:
        return self.gap.records

    @property
    def republish(self) -> str:
        return republish_command(self.gap)

    def to_dict(self) -> dict[str, Any]:
        g = self.gap
        return {"topic": g.topic, "partition": g.partition, "firstOffset": g.first, "lastOffset": g.upto - 1,
                "records": g.records, "reportedAt": self.reported_at, "republish": self.republish}


def lost_ranges(engine: Engine, service: str) -> list[LostRange]:
    """What ``service``'s consumers reported deleted from the channel before they read it, oldest report first
    (kept: a record of what happened, also after the events were published again). A store no consumer has
    migrated yet has none (read only: the dashboard asks on every request)."""
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table("consumer_lost"):
            return []
        rows = conn.exec_driver_sql(_LOST_READ_SQL.format(bulk.mark(conn)), (service,)).all()
    return [LostRange(Skipped(r[0], int(r[1]), int(r[2]), int(r[3])), str(r[4])) for r in rows]


_MARK_COLUMNS = ("service", "event_id", "event_type", "outcome", "topic", "partition_no", "offset_no", "applied_at",
                 "reason")
_MARK_DRIVER_SQL = f"INSERT INTO processed_events ({', '.join(_MARK_COLUMNS)}) VALUES ({{}})"
#: a rejected event is remembered (or, re-evaluated after a replay from the dead-letter channel, again)
_REJECT_DRIVER_SQL = _MARK_DRIVER_SQL + (
    " ON CONFLICT (service, event_id) DO UPDATE SET outcome = excluded.outcome, reason = excluded.reason,"
    " topic = excluded.topic, partition_no = excluded.partition_no, offset_no = excluded.offset_no,"
    " applied_at = excluded.applied_at WHERE processed_events.outcome = 'rejected'"
)
_UNREJECT_DRIVER_SQL = "DELETE FROM processed_events WHERE service = {} AND event_id = {} AND outcome = 'rejected'"

# -- results and statistics -------------------------------------------------------------------------


#: what a batch counts, in :class:`BatchResult`, :class:`ConsumerStats` and the consumer metrics alike
_COUNTS = ("consumed", "applied", "duplicates", "absorbed", "ignored", "dead_lettered")


@dataclasses.dataclass
class BatchResult:
    """What one :meth:`ConsumerRuntime.step` did."""

    consumed: int = 0
    applied: int = 0
    duplicates: int = 0
    #: events stating a business fact already applied, with the same content (see payevents.runtime.facts)
    absorbed: int = 0
    ignored: int = 0
    dead_lettered: int = 0
    #: a transient fault rolled the batch back; it will be redelivered after the backoff
    retried: bool = False
    #: the step only polled while partitions were paused for a backoff
    waiting: bool = False
    #: offsets committed by this step (next offset per partition)
    committed: dict[TopicPartition, int] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0
    #: reason of the fault when ``retried``
    fault: str | None = None
    #: applied write-behind (:mod:`payevents.runtime.writebehind`): its commit is not confirmed yet, so it is
    #: counted in the statistics, and its offsets committed, when the next step confirms it
    in_flight: bool = False

    def add(self, other: BatchResult) -> None:
        """Count ``other`` (a part of this batch applied on its own) in this one."""
        for name in _COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.committed.update(other.committed)


@dataclasses.dataclass
class ConsumerStats:
    """Running totals of one runtime (also exported as Prometheus metrics labelled by service)."""

    consumed: int = 0
    applied: int = 0
    duplicates: int = 0
    absorbed: int = 0
    ignored: int = 0
    dead_lettered: int = 0
    retries: int = 0
    #: records the channel deleted (Kafka's retention) before this group read them: reported, never applied
    lost: int = 0
    batches: int = 0
    lag: int = 0
    lag_by_partition: dict[TopicPartition, int] = dataclasses.field(default_factory=dict)
    last_batch_seconds: float = 0.0
    #: latencies of the most recent batches (seconds), for benchmarks
    batch_seconds: collections.deque[float] = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=10_000))

    def as_dict(self) -> dict[str, Any]:
        return {
            "consumed": self.consumed, "applied": self.applied, "duplicates": self.duplicates,
            "absorbed": self.absorbed, "ignored": self.ignored, "dead_lettered": self.dead_lettered,
            "retries": self.retries, "lost": self.lost,
            "batches": self.batches, "lag": self.lag, "last_batch_seconds": self.last_batch_seconds,
        }


class _Transient(Exception):
    def __init__(self, reason: str, messages: Sequence[Message] = ()) -> None:
        super().__init__(reason)
        self.reason = reason
        #: records of an earlier batch to read again too (one applied write-behind that did not commit)
        self.messages = messages


@dataclasses.dataclass
class _InFlight:
    """The batch applied write-behind, waiting for its commit to be confirmed."""

    messages: Sequence[Message]
    result: BatchResult
    offsets: dict[TopicPartition, int]


class _HandlerPoison(Exception):
    def __init__(self, index: int, reason: str) -> None:
        super().__init__(reason)
        self.index = index
        self.reason = reason


class _Conflicts(Exception):
    """Events stating a business fact already stated with other content: dead-letter them (by index)."""

    def __init__(self, reasons: dict[int, str]) -> None:
        super().__init__("; ".join(reasons.values()))
        self.reasons = reasons


class _BatchFallback(Exception):
    """The batch handler rejected the batch (poison or a non-transient error): re-run it per event."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__(str(exc))
        self.exc = exc


class _HandlerFailure(Exception):
    def __init__(self, index: int, exc: BaseException) -> None:
        super().__init__(str(exc))
        self.index = index
        self.exc = exc


@contextlib.contextmanager
def _store_faults() -> Iterator[None]:
    """A store transaction that fails as the store's fault — one that passes (:func:`is_transient`) or any other
    SQLAlchemy error — raises :class:`_Transient` (rolled back, backed off, retried: nothing was applied); anything
    else, the runtime's own signals among them, passes through as it is."""
    try:
        yield
    except Exception as exc:
        if is_transient(exc) or isinstance(exc, sa.exc.SQLAlchemyError):
            raise _Transient(f"store: {describe(exc)}") from exc
        raise


@dataclasses.dataclass
class _Item:
    index: int
    message: Message
    decoded: codec.DecodedEvent | None = None
    reason: str | None = None
    #: passed over unread: its one eventType header names a known type this service has no handler for
    passed: bool = False


# -- the runtime -------------------------------------------------------------------------------------


class ConsumerRuntime:
    """Consumes ``payments.{env}.events`` as ``service.group`` and applies ``service.handlers``."""

    backoff_initial = 0.05
    backoff_max = 5.0
    max_handler_attempts = 5
    lag_interval = 1.0

    def __init__(
        self,
        settings: Settings,
        service: ServiceDef,
        *,
        transport: Transport | None = None,
        max_batch: int = 500,
        poll_timeout: float = 0.2,
        instance: int = 0,
        after_crash: bool = False,
        write_behind: bool | None = None,
    ) -> None:
        if (problem := batch_problem(max_batch)) is not None:
            raise ConfigError(f"max_batch: {problem}")
        if (problem := poll_timeout_problem(poll_timeout)) is not None:
            raise ConfigError(f"poll_timeout: {problem}")
        if service.check is not None:
            service.check(settings)
        self.settings = settings
        self.service = service
        self.max_batch = max_batch
        self.poll_timeout = poll_timeout
        self.topic = topic_for(settings.env)
        self.dlq_topic = dead_letter_topic_for(settings.env)
        self.stats = ConsumerStats()
        self._own_transport = transport is None
        if transport is None:
            from payevents.transport import open_transport  # type: ignore[attr-defined]

            transport = open_transport(settings)
        self.transport: Transport = transport
        self.transport.create_topics([self.topic, self.dlq_topic], settings.partitions)
        self.engine: Engine = db.engine_for(settings, service.name, url=service.database_url)
        self._migrate()
        #: PostgreSQL: a batch's rows and its COMMIT sent without waiting (``write_behind``; by default for a service
        #: that is ``insert_only``, which also reads ahead: without reading ahead only decoding overlaps the server's
        #: work, about what its INSERT ... unnest costs the server more than COPY)
        self._wb = (WriteBehind(self.engine) if db.dialect(self.engine).arrays_and_copy
                    and (write_behind if write_behind is not None else service.insert_only) else None)
        self._in_flight: _InFlight | None = None
        #: a batch reads while the one before commits (``ServiceDef.insert_only``; off once a batch could not)
        self._ahead = self._wb is not None and service.insert_only
        #: this process, in the attempts it records (a retry of its own after a transient fault is not a death)
        self._attempt_by = uuid.uuid4().hex
        #: the member this process runs (host and instance: what a restart of it, by any supervisor, runs again)
        self.member = f"{socket.gethostname()}[{instance}]"
        #: the process that ran this member before did not stop cleanly (:meth:`_start_member`)
        self.after_crash = self._start_member() or after_crash
        self.consumer: Consumer = self.transport.consumer(service.group, [self.topic], from_beginning=True)
        #: a fault applying again, before a revocation, a batch that did not commit: the step backs off with it
        self._revoke_fault: _Transient | None = None
        if self._wb is not None:
            self.consumer.before_revoke = self._before_revoke
        self._producer: Producer | None = None
        #: the known event types this service has no handler for: a record whose one eventType header names one
        #: is passed over unread (no decode, no seen mark; counted ignored, its offset committed with the batch).
        #: The services that handle its type — and analytics, which handles every type — read it in full, and
        #: the header rule (contracts.channel.event_type_header_problem) dead-letters a header that lies.
        self._pass_over = frozenset(EVENT_TYPES) - set(service.handlers)
        self._kill_p = float(os.environ.get(FAULT_KILL_AFTER_STORE_COMMIT) or 0)
        # backoff state (the one policy: runtime.backoff)
        self._backoff = Backoff(self.backoff_initial, self.backoff_max)
        self._retry_at: float | None = None
        self._paused: set[TopicPartition] = set()
        self._handler_failures: dict[tuple[str, int, int], int] = {}
        #: records still to apply with their attempts recorded first (``after_crash``: the process before this one
        #: died, perhaps of one of them; see :meth:`_after_death`)
        self._careful = 2 * max_batch if self.after_crash else 0
        # offsets whose commit failed, retried with the next commit
        self._pending: dict[TopicPartition, int] = {}
        self._lag_at = 0.0
        self._closed = False
        self._m = {
            "consumed": metrics.CONSUMED.labels(service=service.name),
            "retries": metrics.RETRIES.labels(service=service.name),
            **{name: metrics.RECORDS.labels(service=service.name, outcome=outcome)
               for name, outcome in metrics.OUTCOMES.items()},
        }
        self._dead_letters = metrics.DEAD_LETTERED.labels(service=service.name)
        self._lost = metrics.RECORDS_LOST.labels(service=service.name)
        #: ranges reported lost and not stored yet (:meth:`_record_lost`)
        self._lost_unrecorded: list[Skipped] = []
        self._latency = metrics.BATCH_LATENCY.labels(service=service.name)
        #: partitions with a lag series in this process (removed when the member loses them)
        self._lag_series: set[str] = set()
        #: time.monotonic() of the run loop's last step (worker liveness)
        self.progress_at = time.monotonic()

    def _migrate(self) -> None:
        """The runtime's tables, then the service's. Instances starting together on one SQLite file race
        (a deferred transaction that read before the other wrote cannot write): retry, since every step
        is recorded in schema_migrations and skipped once applied."""
        backoff = Backoff(0.05, 1.0)
        for attempt in range(1, 9):
            try:
                migrate_runtime(self.engine)
                db.migrate(self.engine, self.service.name, self.service.migrations, complete=True)
                db.migrate(self.engine, f"{self.service.name}.facts", self._fact_history_migrations())
                return
            except (sa.exc.OperationalError, sa.exc.IntegrityError):
                if attempt == 8:
                    raise
                time.sleep(backoff.next())

    def _start_member(self) -> bool:
        """Record that this process runs :attr:`member` (removed by a clean :meth:`close`); True when the process
        that ran it before left its row: it ended without a clean stop — killed, crashed, its host lost — perhaps
        on one of the records this one is about to read. A supervisor of ours, systemd's ``Restart=`` or a
        pod's restarts start the member again alike; the store remembers for all of them. (Two live processes
        started as one member — another data dir on this host, the same store — each read as the other's
        crash: they watch their first records (:meth:`_after_death`), which costs a statement per batch.)"""
        with db.writer(self.engine).begin() as conn:
            mark = bulk.mark(conn)
            before = conn.exec_driver_sql(_MEMBER_SQL.format(mark), (self.service.name, self.member)).first()
            conn.exec_driver_sql(_MEMBER_START_SQL.format(mark), (self.service.name, self.member, self._attempt_by,
                                                                  datetime.now(UTC).isoformat()))
        if before is not None:
            log.warning("%s: %s did not stop cleanly (its process of %s); watching the first %d records for one"
                        " that kills its worker", self.service.name, self.member, before[1], 2 * self.max_batch)
        return before is not None

    def _stop_member(self) -> None:
        try:
            with db.writer(self.engine).begin() as conn:
                conn.exec_driver_sql(_MEMBER_STOP_SQL.format(bulk.mark(conn)),
                                     (self.service.name, self.member, self._attempt_by))
        except Exception as exc:  # the next start of the member will watch its first records
            log.warning("%s: could not record a clean stop of %s: %s", self.service.name, self.member,
                        describe(exc))

    def _fact_history_migrations(self) -> tuple[Migration, ...]:
        """After the service's own migrations: its history becomes business facts, once (a database that
        applied events before the one-fact rule existed decides their repeats like a new one)."""
        history = self.service.fact_history
        if history is None or not self.service.one_effect_per_fact:
            return ()
        name = self.service.name
        return (Migration(1, "business facts from the service's history",
                          run=lambda conn: log.info("%s: %d business facts recovered from history", name,
                                                    facts.backfill(conn, name, history(conn)))),)

    # -- public API ----------------------------------------------------------------------------------

    def step(self) -> BatchResult:
        """Poll one batch, apply it, commit the store, dead-letter poison, commit offsets."""
        if self._pending:
            self._commit_offsets({})
        if self._retry_at is not None:
            waited = self._wait_step()
            self._update_lag()  # a member held back by a fault shows its lag growing
            return waited
        started = time.perf_counter()
        try:
            # a batch in flight: only what is there now, else it is confirmed at once (not after a wait for more)
            messages = self.consumer.poll(self.max_batch, 0.0 if self._in_flight is not None else self.poll_timeout)
        except Exception as exc:
            if not is_transient(exc):
                raise
            return self._back_off([], f"poll: {describe(exc)}", started)
        if self._revoke_fault is not None:  # its records first (those of the partitions gone are their owner's)
            fault, self._revoke_fault = self._revoke_fault, None
            return self._back_off([*fault.messages, *messages], fault.reason, started)
        for gap in self.consumer.skipped():
            self._report_lost(gap)
        if self._lost_unrecorded and (problem := self._record_lost()) is not None:
            # the batch waits: its offsets must not pass a gap before the gap is on record
            return self._back_off(messages, f"recording records lost: {problem}", started)
        if not messages:
            try:
                committed, _again = self._settle()  # the channel is idle: the batch in flight is confirmed now
            except _Transient as fault:
                return self._back_off(fault.messages, fault.reason, started)
            self._update_lag()
            return BatchResult(committed=committed, seconds=time.perf_counter() - started)
        try:
            with tracing.process_span(self.topic, self.service.group, self.service.name, messages):
                result = self._after_death(messages) if self._careful > 0 else self._process(messages)
        except _Transient as fault:
            return self._back_off([*fault.messages, *messages], fault.reason, started)
        self._backoff.reset()
        result.seconds = time.perf_counter() - started
        if not result.in_flight:
            self._record(result)
        self._update_lag()
        return result

    def settle(self) -> dict[TopicPartition, int]:
        """Confirm the batch in flight now (write-behind, :mod:`payevents.runtime.writebehind`): count it and commit
        its offsets, or apply it again if it did not commit. Returns the offsets committed; a no-op without one (a
        step that finds the channel idle, and :meth:`close`, do it too)."""
        try:
            return self._settle()[0]
        except _Transient as fault:
            return self._back_off(fault.messages, fault.reason, time.perf_counter()).committed

    def _record_lost(self) -> str | None:
        """Store the ranges reported lost (``consumer_lost``) before the batch that follows them is applied, so the
        group's offset never passes a gap that is not on record (one found at a member's start does not move the
        offset by itself: a member that dies first leaves it to the next one). A store that is not answering keeps
        them for the next step; returns why."""
        now = datetime.now(UTC).isoformat()
        try:
            with self.engine.begin() as conn:
                conn.exec_driver_sql(_LOST_SQL.format(bulk.mark(conn)), [
                    (self.service.name, g.topic, g.partition, g.first, g.upto, now) for g in self._lost_unrecorded])
        except Exception as exc:
            if not is_transient(exc):
                raise
            return describe(exc)
        self._lost_unrecorded = []
        return None

    def _report_lost(self, gap: Skipped) -> None:
        """Records deleted from the channel before this group read them: they cannot be applied or dead-lettered
        (they are gone), so they are counted, said loudly and stored (:meth:`_record_lost`). The outbox still
        holds every event the relay published; the line names the command that publishes them again
        (:func:`payevents.runtime.relay.republish`)."""
        self.stats.lost += gap.records
        self._lost.inc(gap.records)
        self._lost_unrecorded.append(gap)
        log.error("%d record(s) of %s[%d] (offsets %d to %d) were deleted from the channel (its retention) before"
                  " %s read them; reading goes on at offset %d (the events the relay published there are still in"
                  " the payments outbox: %s)", gap.records, gap.topic, gap.partition, gap.first, gap.upto - 1,
                  self.service.group, gap.upto, republish_command(gap),
                  extra={"service": self.service.name, "topic": gap.topic, "partition": gap.partition,
                         "offset": gap.first, "outcome": "lost"})

    def start_background(self, stop: threading.Event) -> threading.Thread | None:
        """The service's background work (``ServiceDef.background``, e.g. notifications' delivery) started in a
        thread of its own, which returns once ``stop`` is set; None for a service without one."""
        if self.service.background is None:
            return None
        thread = threading.Thread(target=self.service.background, args=(self.settings, stop),
                                  name=f"{self.service.name}-background", daemon=True)
        thread.start()
        return thread

    def run(self, stop: threading.Event) -> None:
        """Step until ``stop`` is set; then finish the current batch, commit and close."""
        background = self.start_background(stop)
        log.info("%s: consuming %s as group %s", self.service.name, self.topic, self.service.group)
        clean = False
        try:
            while not stop.is_set():
                self.step()
                self.progress_at = time.monotonic()
            clean = True
        finally:
            stop.set()
            self.close(clean=clean)
            if background is not None:
                background.join(timeout=10)
        log.info("%s: stopped %s", self.service.name, self.stats.as_dict())

    def close(self, *, clean: bool = True) -> None:
        """Commit what is pending, leave the group (releasing partitions) and close the clients. ``clean``:
        the member stopped as asked (not on an exception), so its next start need not suspect its records."""
        if self._closed:
            return
        self._closed = True
        try:
            try:
                self._settle()
            except Exception as exc:  # never stored or never confirmed: the next start reads its records again
                log.warning("%s: the last batch's commit was not confirmed (%s); its records are read again at the"
                            " next start", self.service.name, describe(exc))
            if self._wb is not None:
                self._wb.close()
            if self._pending:
                self._commit_offsets({})
            if clean:
                self._stop_member()
        finally:
            self.consumer.close()
            if self._producer is not None:
                self._producer.close()
            if self._own_transport:
                self.transport.close()

    def __enter__(self) -> ConsumerRuntime:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.close(clean=exc_type is None)

    # -- one batch -----------------------------------------------------------------------------------

    def _decode(self, index: int, message: Message) -> _Item:
        item = _Item(index, message)
        if self._pass_over and event_type_header(message.headers) in self._pass_over:
            item.passed = True
            return item
        item.decoded, item.reason = record_problem(message.value, message.key, message.headers)
        return item

    def _process(self, messages: Sequence[Message], *, poison_first: Mapping[int, str] | None = None,
                 also: Callable[[Connection], None] | None = None, write_behind: bool = True) -> BatchResult:
        """Apply a batch: decode, one store transaction (``also(conn)`` in it too), dead letters, offsets.
        ``poison_first``: records (by index) to dead-letter with that reason, whatever they are.

        Write-behind (PostgreSQL, :mod:`payevents.runtime.writebehind`): a batch's first attempt with nothing to
        dead-letter and nothing ``also`` to do commits without waiting; the result comes back ``in_flight`` and the
        next step (or :meth:`close`) confirms it before it touches the store. Any other attempt waits for its
        commit, as do the batches on SQLite."""
        items = [self._decode(i, m) for i, m in enumerate(messages)]
        settled: dict[TopicPartition, int] = {}
        poison: dict[int, str] = {it.index: it.reason for it in items if it.reason is not None}
        poison.update(poison_first or {})
        use_batch = self.service.batch_handler is not None

        def dead_letter_first(conn: Connection) -> None:
            # inside the store transaction, just before its commit: a failed produce rolls the batch back
            # (transient: retried later), so a dead letter is never lost and no later event of the same
            # payment is applied before its predecessor's fate is recorded
            if also is not None:
                also(conn)
            if poison:
                self._send_dead_letters([(messages[i], reason) for i, reason in sorted(poison.items())])

        behind = write_behind and self._wb is not None and also is None
        ahead = behind and self._ahead
        while True:
            behind = behind and not poison
            ahead = ahead and behind
            if not ahead:
                # after decoding: the server commits the batch before while this one decodes
                settled.update(self._settle()[0])
            try:
                # events rejected after decoding (by a handler, as a conflict) are remembered as rejected in
                # the same transaction: a redelivery skips them instead of re-evaluating them later
                rejected = [(it, reason) for it in items if it.decoded is not None
                            and (reason := poison.get(it.index)) is not None]
                result = self._apply([it for it in items if it.index not in poison and not it.passed], use_batch,
                                     before_commit=None if behind else dead_letter_first, rejected=rejected,
                                     write_behind=behind, ahead=ahead)
                if ahead:
                    assert self._wb is not None
                    try:
                        committed, again = self._settle()
                    except BaseException:
                        self._wb.drop_prepared()
                        raise
                    settled.update(committed)
                    if again:  # the batch before was applied again: what this one read may miss it
                        self._wb.drop_prepared()
                        ahead = False
                        continue
                    self._wb.commit_prepared()
                break
            except NotAhead as na:
                log.info("%s: batches are applied one after the other from now on: %s", self.service.name, na)
                self._ahead = ahead = False
            except _Conflicts as c:
                poison.update(c.reasons)
                behind = False
            except _BatchFallback as bf:
                behind = False
                # rolled back; the per-event handlers (the reference semantics) find and isolate the culprit
                log.info("%s: batch handler failed (%s), re-applying the batch per event", self.service.name,
                         describe(bf.exc))
                use_batch = False
            except _HandlerPoison as hp:
                poison[hp.index] = f"rejected: {redact(hp.reason)}"
                behind = False
            except _HandlerFailure as hf:
                m = messages[hf.index]
                key = (m.topic, m.partition, m.offset)
                n = self._handler_failures[key] = self._handler_failures.get(key, 0) + 1
                if n < self.max_handler_attempts:
                    raise _Transient(f"handler error (attempt {n}): {describe(hf.exc)}") from hf.exc
                poison[hf.index] = f"handler-error: failed {n} times: {describe(hf.exc)}"
                self._handler_failures.pop(key, None)
        result.consumed = len(messages)
        result.ignored += sum(1 for it in items if it.passed)
        if self._handler_failures:  # only this batch's records: others keep their failure counts
            for m in messages:
                self._handler_failures.pop((m.topic, m.partition, m.offset), None)
        if self._kill_p and random.random() < self._kill_p:
            os._exit(137)  # test-only: crash between the store commit and the offset commit
        if poison:
            for i, reason in sorted(poison.items()):
                m = messages[i]
                log.warning("dead-lettered: %s", reason, extra=bound_fields(m, self.service.name, "dead_lettered"))
            result.dead_lettered = len(poison)
        offsets: dict[TopicPartition, int] = {}
        for m in messages:
            tp = (m.topic, m.partition)
            offsets[tp] = max(offsets.get(tp, 0), m.offset + 1)
        if behind:
            result.in_flight = True
            result.committed = settled
            self._in_flight = _InFlight(messages, result, offsets)
            return result
        result.committed = {**settled, **self._commit_offsets(offsets)}
        return result

    def _settle(self) -> tuple[dict[TopicPartition, int], bool]:
        """The batch in flight (write-behind), before anything else writes to the store: its commit confirmed, it is
        counted and its offsets are committed; not committed (or its outcome unknown: the server rolled it back or
        the connection failed), it is applied again now through a transaction that is waited for, which finds any
        culprit as usual. Returns the offsets committed, and whether the batch was applied again."""
        flight, self._in_flight = self._in_flight, None
        if flight is None:
            return {}, False
        assert self._wb is not None
        try:
            self._wb.settle()
        except LateFailure as exc:
            log.warning("%s: a batch of %d record(s) did not commit (%s); applying it again", self.service.name,
                        len(flight.messages), describe(exc))
            try:
                result = self._process(flight.messages, write_behind=False)
            except _Transient as fault:
                raise _Transient(fault.reason, [*flight.messages, *fault.messages]) from fault
            again = True
        else:
            result = flight.result
            result.in_flight = False
            result.committed = self._commit_offsets(flight.offsets)
            again = False
        result.seconds = flight.result.seconds
        self._record(result)
        return result.committed, again

    def _before_revoke(self, partitions: Sequence[TopicPartition]) -> None:
        """A rebalance is about to move ``partitions`` to another member (the transport calls this inside the poll,
        while they are still this member's): a batch in flight on any of them is confirmed now, so its offsets are
        committed before they go and their new owner starts after it, instead of reading it again (which the seen
        marks would make a no-op). A fault applying it again is kept for the step, which backs off with it."""
        if self._in_flight is None or not set(self._in_flight.offsets).intersection(partitions):
            return
        try:
            self._settle()
        except _Transient as fault:
            self._revoke_fault = fault

    def _after_death(self, messages: Sequence[Message]) -> BatchResult:
        """A batch among the first records after a worker died (``after_crash``): perhaps of one of them. Before the
        batch is applied, this process records that it begins each of its records (``consumer_attempts``, one
        committed statement) and the transaction that applies the batch removes them again: a death in between
        leaves them there. A batch in which a record was left there by another process goes one record at a time
        (:meth:`_one_by_one`), which finds the one that kills; a death unrelated to the records (a kill by an
        operator, a lost host) costs its successor one statement per batch, not a transaction per record."""
        keys = [(m.topic, m.partition, m.offset) for m in messages]
        self._settle()
        with _store_faults(), db.writer(self.engine).begin() as conn:
            left = self._attempts_left(conn, keys)
            suspect = any(by != self._attempt_by for _n, by in left.values())
            if not suspect and len(left) < len(keys):
                conn.exec_driver_sql(_ATTEMPT_NEW_SQL.format(bulk.mark(conn)),
                                     [(self.service.name, *k, 1, self._attempt_by) for k in keys if k not in left])
        if suspect:
            return self._one_by_one(messages)

        def done_with(conn: Connection) -> None:
            conn.exec_driver_sql(_ATTEMPT_DONE_SQL.format(bulk.mark(conn)), [(self.service.name, *k) for k in keys])

        result = self._process(messages, also=done_with)
        self._careful -= len(messages)
        return result

    def _attempts_left(self, conn: Connection, keys: Sequence[tuple[str, int, int]]) -> dict[tuple[str, int, int],
                                                                                            tuple[int, str]]:
        """The attempts recorded for ``keys`` (topic, partition, offset): one range query per partition."""
        ranges: dict[tuple[str, int], list[int]] = {}
        for topic, partition, offset in keys:
            ranges.setdefault((topic, partition), []).append(offset)
        wanted = set(keys)
        out: dict[tuple[str, int, int], tuple[int, str]] = {}
        sql = _ATTEMPTS_RANGE_SQL.format(bulk.mark(conn))
        for (topic, partition), offsets in ranges.items():
            for offset, attempts, by in conn.exec_driver_sql(sql, (self.service.name, topic, partition, min(offsets),
                                                                  max(offsets))):
                if (topic, partition, int(offset)) in wanted:
                    out[(topic, partition, int(offset))] = (int(attempts), str(by))
        return out

    def _one_by_one(self, messages: Sequence[Message]) -> BatchResult:
        """Records after a worker died on one of them (:meth:`_after_death`), one store transaction each. Before a
        record is applied, this process records that it begins (``consumer_attempts``, committed), and the transaction
        that applies it removes the record again: a record left there by :data:`CRASH_LIMIT` processes that died
        applying it — one whose handler hangs until the supervisor kills the worker, or crashes the process — is
        dead-lettered instead of tried again, and the records after it flow. Without this a partition would stop
        at such a record for ever, its worker restarted again and again. A retry by the same process (after a
        transient fault) is not counted again."""
        total = BatchResult()
        for m in messages:
            key = (m.topic, m.partition, m.offset)
            with _store_faults(), db.writer(self.engine).begin() as conn:
                row = self._attempts_left(conn, [key]).get(key)
                died = 0 if row is None else row[0] - (row[1] == self._attempt_by)
                if died < CRASH_LIMIT and (row is None or row[1] != self._attempt_by):
                    conn.exec_driver_sql(_ATTEMPT_SQL.format(bulk.mark(conn)),
                                         (self.service.name, *key, died + 1, self._attempt_by))
            forced: dict[int, str] | None = None
            if died >= CRASH_LIMIT:
                forced = {0: f"crash-loop: {died} workers died applying this record (killed as stuck, or crashed)"}
                log.error("%s: %s", self.service.name, forced[0],
                          extra=bound_fields(m, self.service.name, "dead_lettered"))

            def done_with(conn: Connection, key: tuple[str, int, int] = key) -> None:
                conn.exec_driver_sql(_ATTEMPT_DONE_SQL.format(bulk.mark(conn)), (self.service.name, *key))

            total.add(self._process([m], poison_first=forced, also=done_with))
            self._careful -= 1
        return total

    def _apply(self, items: Sequence[_Item], use_batch: bool = False,
               before_commit: Callable[[Connection], None] | None = None,
               rejected: Sequence[tuple[_Item, str]] = (), write_behind: bool = False,
               ahead: bool = False) -> BatchResult:
        """One store transaction: rejected marks, seen marks and business facts + handler effects (through the
        service's batch handler when ``use_batch``), then ``before_commit`` (the dead-letter produce). Raises
        _Transient, _BatchFallback, _Conflicts, _HandlerPoison or _HandlerFailure (after rolling back).
        ``write_behind``: the transaction's deferred rows and COMMIT are sent, not waited for (:meth:`_settle`);
        ``ahead``: read while the batch before commits, the rows kept for :meth:`_process` to send (or raises
        NotAhead)."""
        result = BatchResult()
        transaction = (self._wb.batch(ahead=ahead) if write_behind and self._wb is not None
                       else db.writer(self.engine).begin())
        with _store_faults(), transaction as conn:
            self._mark_rejected(conn, rejected)
            fresh = self._mark_seen(conn, items, result)
            handlers = self.service.handlers
            if use_batch:
                batch_handler = self.service.batch_handler
                assert batch_handler is not None
                todo = [(it.decoded, it.message) for it in fresh
                        if it.decoded is not None and it.decoded.event_type in handlers]
                result.ignored += len(fresh) - len(todo)
                if todo:
                    try:
                        with tracing.handler_span(self.service.name, len(todo)):
                            batch_handler(conn, todo)
                    except Exception as exc:
                        if is_transient(exc) or isinstance(exc, NotAhead):
                            raise
                        raise _BatchFallback(exc) from exc
                result.applied += len(todo)
                fresh = []
            for it in fresh:
                assert it.decoded is not None
                handler = handlers.get(it.decoded.event_type)
                if handler is None:
                    result.ignored += 1
                    continue
                try:
                    with tracing.handler_span(self.service.name, 1):
                        handler(conn, it.decoded, it.message)
                except PoisonEvent as exc:
                    raise _HandlerPoison(it.index, exc.reason) from exc
                except Exception as exc:
                    if is_transient(exc) or isinstance(exc, NotAhead):
                        raise
                    if isinstance(exc, sa.exc.DataError):
                        # the store refuses this record's values (SQLSTATE class 22: too long, out of range,
                        # not storable): the same values fail the same way every time, so no retries
                        raise _HandlerPoison(it.index, f"the store refuses its data: {describe(exc)}") from exc
                    raise _HandlerFailure(it.index, exc) from exc
                result.applied += 1
            if before_commit is not None:
                before_commit(conn)
        return result

    def _mark_rejected(self, conn: Connection, rejected: Sequence[tuple[_Item, str]]) -> None:
        rows: list[tuple[Any, ...]] = []
        now = datetime.now(UTC).isoformat()
        for it, reason in rejected:
            d, m = it.decoded, it.message
            assert d is not None
            rows.append((self.service.name, d.event_id, d.event_type, facts.REJECTED, m.topic, m.partition, m.offset,
                         now, redact(reason)))
        if rows:
            conn.exec_driver_sql(_REJECT_DRIVER_SQL.format(",".join([bulk.mark(conn)] * 9)), rows)

    def _mark_seen(self, conn: Connection, items: Sequence[_Item], result: BatchResult) -> list[_Item]:
        """Seen marks for the batch's new eventIds; returns the items for the handlers. Already seen eventIds
        are duplicates — a remembered rejection included, unless the record was replayed from the dead-letter
        channel on purpose. Then the one-fact rule (:mod:`payevents.runtime.facts`): events repeating a fact
        already applied are absorbed; conflicting ones raise _Conflicts."""
        ids = [it.decoded.event_id for it in items if it.decoded is not None]
        mark = bulk.mark(conn)
        # driver level, one primary-key probe per eventId on PostgreSQL (runtime.bulk: never a scan of the
        # service's marks, whatever the table's statistics)
        seen: dict[str, str] = {r[0]: r[1] for r in bulk.lookup(
            conn, "event_id, outcome", "processed_events", f"service = {mark}", "event_id", ids,
            (self.service.name,))}
        fresh: list[_Item] = []
        for it in items:
            d = it.decoded
            assert d is not None
            outcome = seen.get(d.event_id)
            if outcome is not None:
                if outcome != facts.REJECTED or not facts.replayed_on_purpose(it.message.headers):
                    result.duplicates += 1
                    continue
                # replayed from the dead-letter channel: evaluated again (its rejection is forgotten)
                conn.exec_driver_sql(_UNREJECT_DRIVER_SQL.format(mark, mark), (self.service.name, d.event_id))
            seen[d.event_id] = facts.APPLIED
            fresh.append(it)
        handlers = self.service.handlers
        absorbed: dict[int, str] = {}
        if self.service.one_effect_per_fact:
            absorbed = self._business_facts(conn, [it for it in fresh if it.decoded is not None
                                                   and it.decoded.event_type in handlers])
        rows: list[tuple[Any, ...]] = []
        now = datetime.now(UTC).isoformat()
        for it in fresh:
            d, m = it.decoded, it.message
            assert d is not None
            reason = absorbed.get(it.index)
            outcome = facts.ABSORBED if reason else facts.APPLIED if d.event_type in handlers else facts.IGNORED
            rows.append((self.service.name, d.event_id, d.event_type, outcome, m.topic, m.partition, m.offset, now,
                         reason))
        # one COPY on PostgreSQL, a driver-level executemany on SQLite (runtime.bulk)
        bulk.copy_rows(conn, "processed_events", _MARK_COLUMNS, rows)
        result.absorbed += len(absorbed)
        return [it for it in fresh if it.index not in absorbed]

    def _business_facts(self, conn: Connection, items: Sequence[_Item]) -> dict[int, str]:
        """The one-fact rule over the batch's new handled events, in offset order: new facts are recorded;
        returns the absorbed ones (index -> reason); raises _Conflicts for the conflicting ones."""
        keyed = [(it, key) for it in items if it.decoded is not None
                 and (key := facts.fact_key(it.decoded)) is not None]
        if not keyed:
            return {}
        known = facts.load(conn, self.service.name, [k[0] for _it, k in keyed])
        firsts: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {
            k: (eid, facts.decode_content(text)) for k, (eid, text) in known.items()}
        new: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
        learned: dict[tuple[str, str], int] = {}
        absorbed: dict[int, str] = {}
        conflicts: dict[int, str] = {}
        for it, key in keyed:
            assert it.decoded is not None
            content = facts.content_of(it.decoded)
            first = firsts.get(key)
            if first is None:
                firsts[key] = new[key] = (it.decoded.event_id, content)
                continue
            first_id, first_content = first
            if not facts.same_content(key[1], first_content, content):
                conflicts[it.index] = facts.conflict_reason(key[1], key[0], first_id, first_content, content)
                continue
            absorbed[it.index] = f"duplicate: the same {key[1]} of payment {key[0]} as event {first_id}"
            for field, value in content.items():  # what the first event lacked (a legacy envelope)
                first_content.setdefault(field, value)
            learned[key] = learned.get(key, 0) + 1
        if conflicts:
            raise _Conflicts(conflicts)
        now = datetime.now(UTC).isoformat()
        facts.insert(conn, [(self.service.name, k[0], k[1], eid, facts.encode_content(c), learned.pop(k, 0), now)
                            for k, (eid, c) in new.items()])
        facts.absorb(conn, [(n, facts.encode_content(firsts[k][1]), self.service.name, k[0], k[1])
                            for k, n in learned.items()])
        return absorbed

    # -- offsets, backoff, lag -------------------------------------------------------------------------

    def _commit_offsets(self, offsets: Mapping[TopicPartition, int]) -> dict[TopicPartition, int]:
        todo = dict(self._pending)
        for tp, off in offsets.items():
            todo[tp] = max(todo.get(tp, 0), off)
        if not todo:
            return {}
        try:
            self.consumer.commit(todo)
        except Exception as exc:
            # The store already holds the effects; a replay would only find duplicates. Keep the offsets
            # and commit them with the next batch (partitions moved to another member are dropped).
            log.warning("%s: offset commit failed, will retry: %s", self.service.name, describe(exc))
            try:
                assigned = self.consumer.assignment()
                self._pending = {tp: o for tp, o in todo.items() if tp in assigned}
            except Exception:
                self._pending = todo
            return {}
        self._pending = {}
        return todo

    def _back_off(self, messages: Sequence[Message], reason: str, started: float) -> BatchResult:
        first: dict[TopicPartition, int] = {}
        for m in messages:
            tp = (m.topic, m.partition)
            if tp not in first or m.offset < first[tp]:
                first[tp] = m.offset
        self._seek_and_pause(first)
        delay = self._backoff.next()
        self._retry_at = time.monotonic() + delay
        self.stats.retries += 1
        self._m["retries"].inc()
        log.warning("%s: transient fault, retry %d in %.2fs: %s", self.service.name, self._backoff.attempt, delay,
                    reason)
        return BatchResult(consumed=len(messages), retried=True, fault=reason, seconds=time.perf_counter() - started)

    def _seek_and_pause(self, first: Mapping[TopicPartition, int]) -> None:
        for tp, off in first.items():
            try:
                self.consumer.seek(tp, off)
            except Exception as exc:
                if tp in self.consumer.assignment():
                    raise  # never go on past an unapplied batch: crash, and the restart replays it
                # revoked meanwhile: its next owner starts from the committed offset
                log.warning("%s: seek %s to %d failed: %s", self.service.name, tp, off, describe(exc))
        try:
            to_pause = set(self.consumer.assignment()) | set(first)
        except Exception:
            to_pause = set(first)
        to_pause -= self._paused
        if to_pause:
            self.consumer.pause(sorted(to_pause))
            self._paused |= to_pause

    def _wait_step(self) -> BatchResult:
        """Poll while paused (keeps the group membership alive); resume when the backoff is over."""
        assert self._retry_at is not None
        started = time.perf_counter()
        remaining = self._retry_at - time.monotonic()
        timeout = max(0.0, min(self.poll_timeout, remaining))
        try:
            messages = self.consumer.poll(self.max_batch, timeout)
        except Exception as exc:
            if not is_transient(exc):
                raise
            # still unreachable: keep waiting; the poll after the backoff retries (and backs off further)
            log.debug("%s: poll during backoff failed: %s", self.service.name, describe(exc))
            messages = []
        if messages:
            # a partition assigned during the wait (or one that lost its pause in a rebalance)
            first: dict[TopicPartition, int] = {}
            for m in messages:
                tp = (m.topic, m.partition)
                first[tp] = min(first.get(tp, m.offset), m.offset)
            self._paused -= set(first)
            self._seek_and_pause(first)
        elapsed = time.perf_counter() - started
        if elapsed < timeout:
            time.sleep(timeout - elapsed)
        if time.monotonic() >= self._retry_at:
            self._retry_at = None
            paused, self._paused = sorted(self._paused), set()
            if paused:
                try:
                    self.consumer.resume(paused)
                except Exception as exc:
                    log.warning("%s: resume failed: %s", self.service.name, describe(exc))
        return BatchResult(waiting=True, seconds=time.perf_counter() - started)

    def _record(self, r: BatchResult) -> None:
        s = self.stats
        s.batches += 1
        s.last_batch_seconds = r.seconds
        s.batch_seconds.append(r.seconds)
        for name in _COUNTS:
            value = getattr(r, name)
            setattr(s, name, getattr(s, name) + value)
            if value:
                self._m[name].inc(value)
        if r.dead_lettered:
            self._dead_letters.inc(r.dead_lettered)
        self._latency.observe(r.seconds)

    def _update_lag(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._lag_at < self.lag_interval:
            return
        self._lag_at = now
        try:
            lag = self.consumer.lag()
        except Exception as exc:
            log.debug("%s: lag unavailable: %s", self.service.name, describe(exc))
            return
        self.stats.lag_by_partition = dict(lag)
        self.stats.lag = sum(max(0, v) for v in lag.values())
        held = {str(partition) for (_topic, partition) in lag}
        for (_topic, partition), value in lag.items():
            metrics.LAG.labels(service=self.service.name, partition=str(partition)).set(value)
        for lost in self._lag_series - held:  # lost in a rebalance: its new owner reports it
            try:
                metrics.LAG.remove(self.service.name, lost)
            except KeyError:
                pass
        self._lag_series = held

    def _send_dead_letters(self, letters: Sequence[tuple[Message, str]]) -> None:
        """Produce the dead letters of a batch. A refusal that is not transient (e.g. a broker whose record
        limit is below ours) never ends the worker: the letters are sent again cut (prefix, size, hash); if even
        that is refused, the batch is retried like after a transient fault (logged as an error)."""
        records = [dead_letter_record(m, self.service.name, reason, self.settings) for m, reason in letters]
        try:
            self._dlq_producer().send(records)
            return
        except Exception as exc:
            if is_transient(exc):
                raise
            log.error("%s: the dead-letter channel refused %d record(s) (%s); sending them cut",
                      self.service.name, len(records), describe(exc))
        cut = [dead_letter_record(m, self.service.name, reason, self.settings, cut=True) for m, reason in letters]
        try:
            self._dlq_producer().send(cut)
        except Exception as exc:
            if is_transient(exc):
                raise
            log.error("%s: the dead-letter channel refused even cut records: %s", self.service.name,
                      describe(exc))
            raise _Transient(f"dead letter refused: {describe(exc)}") from exc

    def _dlq_producer(self) -> Producer:
        if self._producer is None:
            self._producer = self.transport.producer()
        return self._producer


def bound_fields(m: Message, service: str, outcome: str) -> dict[str, Any]:
    """The log fields of one record (bound with ``extra=``, see :mod:`payevents.runtime.logs`)."""
    from payevents.contracts.channel import H_CORRELATION_ID, H_EVENT_ID

    key = m.key.decode("utf-8", "replace") if m.key is not None else None
    return {"service": service, "eventId": m.header(H_EVENT_ID), "paymentId": key,
            "correlationId": m.header(H_CORRELATION_ID), "topic": m.topic, "partition": m.partition,
            "offset": m.offset, "outcome": outcome}

