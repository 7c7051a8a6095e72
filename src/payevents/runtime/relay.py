"""The outbox relay: publishes pending outbox rows to the channel and marks them published.

One pass reads pending rows in seq order (from the pending table, so a row that committed after a higher
seq is never skipped) and sends them in ONE producer batch (records of a payment keep their order; the
producer blocks until the broker acknowledged every record, and passes are sequential). The marks
(published/delay rows in, pending rows out) are ONE transaction per group of passes. Killed anywhere, a
restarted relay re-publishes what was acknowledged but not yet marked: duplicates are allowed (consumers
drop them by eventId), losses are not.

:meth:`Relay.publish_pending` is one synchronous pass (send, then mark). :meth:`Relay.run` marks in a
marker thread with its own connection, so waiting for the database's write lock (held by the payments
writer) never delays the next select and send: seqs sent but not yet marked are kept in an in-flight set
(bounded by ``max_inflight``) that the select skips; they leave it when their mark commits.

Publish delay = broker acknowledgement (``Delivery.acked_at``) minus outbox ``created_at``, observed
for every event into the Prometheus histogram ``payevents_publish_delay_seconds``, into
:attr:`Relay.stats`, and stored per event in ``outbox_published``. An event past the 5-second rule is
logged (WARNING, logger ``payevents.relay``) as an SLA breach with its eventId.

A record the broker refuses for good (:class:`~payevents.transport.base.RecordsRefused`: larger than
``message.max.bytes``, an invalid topic name) is *set aside* (:func:`payevents.runtime.outbox.set_aside`):
out of pending with its reason, counted in ``payevents_relay_set_aside_total``, logged; the records acknowledged
with it are marked as usual and the relay goes on, so nothing behind it waits.

One relay per outbox (:class:`OutboxLock`): PostgreSQL, a session advisory lock on the schema's outbox;
SQLite, an exclusive ``flock`` on ``<database>.relay.lock``. Both are let go by the operating system or the
server when the holder dies. A second relay logs that it waits, and who holds the lock, and publishes
nothing until it gets it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import signal
import threading
import time
from bisect import bisect_left
from collections.abc import Sequence
from types import FrameType
from typing import Any, Final

import orjson
import sqlalchemy as sa
from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy.engine import Connection, Engine

from payevents.contracts.channel import dead_letter_topic_for, topic_for
from payevents.errors import TransientError
from payevents.runtime import bulk, tracing
from payevents.runtime.backoff import Backoff, is_transient
from payevents.runtime.outbox import OUTBOX_CHANNEL, OUTBOX_MIGRATIONS, pending_count, set_aside, set_aside_count
from payevents.settings import Settings
from payevents.store.db import ChangeWatch, dialect, engine_for, migrate, writer
from payevents.store.sql import mark as sql_mark
from payevents.transport.base import Delivery, Producer, Record, RecordsRefused, Transport

logger = logging.getLogger("payevents.relay")

#: The event page's rule: published within 5 seconds of payment completion.
SLA_SECONDS: Final = 5.0
#: the longest an idle relay waits for the outbox to change before it looks anyway (:meth:`Relay._idle`)
IDLE_PASS_S: Final = 1.0

DELAY_BUCKETS: Final = (
    0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075,
    0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.5, 10.0,
)  # fmt: skip

PUBLISH_DELAY = Histogram(
    "payevents_publish_delay_seconds",
    "Outbox commit (created_at) to broker acknowledgement, per published event",
    buckets=DELAY_BUCKETS,
)
PUBLISHED = Counter("payevents_relay_published", "Events sent and acknowledged by the broker (re-sends included)")
SLA_BREACHES = Counter("payevents_publish_sla_breaches", "Events acknowledged more than 5 s after their outbox commit")
PENDING = Gauge("payevents_outbox_pending",
                "Outbox events not yet published (sampled by the relay about once a second)")
RELAY_ERRORS = Counter("payevents_relay_errors", "Relay passes that failed on a transient fault and were retried")
SET_ASIDE = Counter("payevents_relay_set_aside",
                    "Outbox events set aside because the broker refused them for good (see payevents outbox set-aside)",
                    ["cause"])
SET_ASIDE_WAITING = Gauge("payevents_outbox_set_aside",
                          "Outbox events set aside and not re-sent (sampled by the relay about once a second)")
LOCK_WAITING = Gauge("payevents_relay_waiting_for_lock", "1 while this relay waits for another relay's outbox lock")


def _cause(reason: str) -> str:
    """A low-cardinality label for a refusal reason."""
    low = reason.lower()
    if "too large" in low or "size" in low:
        return "too_large"
    if "topic" in low:
        return "invalid_topic"
    return "other"


class OutboxLock:
    """The one-relay-per-outbox lock (see the module doc): the dialect's :class:`~payevents.store.db.ProcessLock`
    on ``outbox_pending``. :meth:`try_acquire` never blocks; ``holder`` says who holds it when it is not ours."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = dialect(engine).process_lock(engine, "outbox_pending", "relay")

    @property
    def held(self) -> bool:
        return self._lock.held

    @property
    def holder(self) -> str:
        return self._lock.holder

    def describe(self) -> str:
        return self._lock.describe()

    def try_acquire(self) -> bool:
        return self._lock.try_acquire()

    def release(self) -> None:
        self._lock.release()

    def verify(self) -> bool:
        return self._lock.verify()


class DelayStats:
    """An HDR-like histogram: fixed log-spaced buckets (1% wide) from 10 µs to 1000 s, so percentiles
    are within 1% whatever the volume, in constant memory. Thread-safe."""

    LOWEST: Final = 1e-5
    HIGHEST: Final = 1e3
    GROWTH: Final = 1.01

    def __init__(self) -> None:
        self._log_growth = math.log(self.GROWTH)
        self._n_buckets = math.ceil(math.log(self.HIGHEST / self.LOWEST) / self._log_growth) + 2
        #: the buckets' upper bounds: a value's bucket is the first bound at or above it (bisect, in C)
        self._bounds = [self._upper(i) for i in range(self._n_buckets - 1)]
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._counts = [0] * self._n_buckets
            self.count = 0
            self.total = 0.0
            self.max = 0.0
            self.min = math.inf

    def _index(self, value: float) -> int:
        return bisect_left(self._bounds, value)

    def _upper(self, index: int) -> float:
        return float(self.LOWEST * self.GROWTH**index)

    def record(self, value: float) -> None:
        value = max(0.0, value)
        with self._lock:
            self._counts[self._index(value)] += 1
            self.count += 1
            self.total += value
            self.max = max(self.max, value)
            self.min = min(self.min, value)

    def record_many(self, values: Sequence[float]) -> None:
        """:meth:`record` for many values under one lock acquisition."""
        if not values:
            return
        bounds = self._bounds
        clipped = [value if value > 0.0 else 0.0 for value in values]
        with self._lock:
            counts = self._counts
            for value in clipped:
                counts[bisect_left(bounds, value)] += 1
            self.total += math.fsum(clipped)
            self.max = max(self.max, max(clipped))
            self.min = min(self.min, min(clipped))
            self.count += len(clipped)

    def percentile(self, q: float) -> float:
        """The value at quantile ``q`` (0..1): the bucket's upper bound, capped by the true max."""
        with self._lock:
            if self.count == 0:
                return 0.0
            rank = max(1, math.ceil(q * self.count))
            seen = 0
            for i, c in enumerate(self._counts):
                seen += c
                if seen >= rank:
                    return min(self._upper(i), self.max)
            return self.max

    def summary(self) -> dict[str, float]:
        """count, mean, min, p50, p90, p99, p999, max (seconds)."""
        return {
            "count": float(self.count),
            "mean": self.total / self.count if self.count else 0.0,
            "min": self.min if self.count else 0.0,
            "p50": self.percentile(0.5),
            "p90": self.percentile(0.9),
            "p99": self.percentile(0.99),
            "p999": self.percentile(0.999),
            "max": self.max,
        }


@dataclasses.dataclass(frozen=True, slots=True)
class RelayStats:
    """A snapshot of one relay's counters (delays in seconds)."""

    published: int
    batches: int
    sla_breaches: int
    errors: int
    delay: dict[str, float]

    @property
    def p50(self) -> float:
        return self.delay["p50"]

    @property
    def p99(self) -> float:
        return self.delay["p99"]

    @property
    def max(self) -> float:
        return self.delay["max"]


# Driver-level SQL ({} = the DBAPI's positional placeholder): no per-row parameter processing by SQLAlchemy.
_SELECT_PENDING_SQL: Final = (
    "SELECT e.seq, e.event_id, e.topic, e.partition_key, e.headers, e.body, e.created_at"
    " FROM outbox_pending p JOIN outbox_events e ON e.seq = p.seq ORDER BY p.seq LIMIT {}"
)
#: an outbox_published row (a seq already marked keeps its first mark: ``bulk.copy_rows(..., or_ignore="seq")``)
_PUBLISHED_COLUMNS: Final = ("seq", "published_at", "delay_s", "partition", '"offset"')
_DELETE_PENDING_SQL: Final = "DELETE FROM outbox_pending WHERE seq IN ({})"
_SELECT_PENDING_AFTER_SQL: Final = (
    "SELECT e.seq, e.event_id, e.topic, e.partition_key, e.headers, e.body, e.created_at"
    " FROM outbox_pending p JOIN outbox_events e ON e.seq = p.seq WHERE p.seq > {0} ORDER BY p.seq LIMIT {0}"
)
_SELECT_PENDING_SEQS_SQL: Final = "SELECT seq FROM outbox_pending ORDER BY seq LIMIT {}"
_SELECT_EVENTS_SQL: Final = (
    "SELECT seq, event_id, topic, partition_key, headers, body, created_at"
    " FROM outbox_events WHERE seq IN ({}) ORDER BY seq"
)

#: what the mark needs of a sent row: (seq, event_id, created_at)
_Sent = tuple[int, str, float]



class Relay:
    """Publishes the payments outbox to ``payments.{env}.events``.

    ``transport``/``engine`` default to ``open_transport(settings)`` and the payments database; the
    outbox migrations are applied to the engine. A transport passed in is not closed by :meth:`close`.
    """

    #: while events are in flight, a select reads the pending rows after the highest seq in flight; at least
    #: this often (seconds) it scans every pending seq instead (an event put back below them is found)
    FULL_SCAN_S: float = 1.0

    def __init__(
        self,
        settings: Settings,
        *,
        transport: Transport | None = None,
        engine: Engine | None = None,
        batch_size: int = 500,
        max_inflight: int = 10_000,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size: {batch_size} must be a positive integer")
        if max_inflight < batch_size:
            raise ValueError(f"max_inflight: {max_inflight} must be at least batch_size ({batch_size})")
        self.settings = settings
        self.batch_size = batch_size
        #: most events sent but not yet marked published (run(): the loop waits for the marker past it)
        self.max_inflight = max_inflight
        self.topic = topic_for(settings.env)
        self._owns_transport = transport is None
        self.transport: Transport = transport if transport is not None else _open_transport(settings)
        self.engine = engine if engine is not None else engine_for(settings, "payments")
        migrate(self.engine, "payments", OUTBOX_MIGRATIONS)
        self._producer: Producer | None = None
        self.delays = DelayStats()
        self._published = 0
        self._batches = 0
        self._breaches = 0
        self._errors = 0
        # run()'s hand-off to the marker thread, under _cond: seqs sent and not yet marked, queued marks
        self._cond = threading.Condition()
        self._inflight: set[int] = set()
        self._marks: list[tuple[list[_Sent], Sequence[Delivery]]] = []
        self._marker_error: BaseException | None = None
        #: worker status (read by payevents.runtime.workers): time.monotonic() of run()'s last loop turn,
        #: whether its last pass reached the store and the broker, the last pending count it sampled
        self.progress_at = time.monotonic()
        self.last_pass_ok = False
        self.pending: int | None = None
        self.lock = OutboxLock(self.engine)
        #: events this relay set aside (refused for good by the broker)
        self.set_aside = 0
        #: time.monotonic() after which the next select with seqs in flight scans the whole pending table
        self._next_full_scan = 0.0
        #: what an idle relay waits on (:meth:`_idle`), opened at its first wait
        self._watch: ChangeWatch | None = None
        self._watch_again_at = 0.0

    # -- lifecycle -----------------------------------------------------------------------------------

    def __enter__(self) -> Relay:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._reset_producer()
        self.lock.release()
        if self._owns_transport:
            self.transport.close()

    def acquire(self, stop: threading.Event | None = None, poll: float = 1.0) -> bool:
        """Take the outbox lock; while another relay holds it, say so (once) and wait, until ``stop`` is set.
        Without ``stop``, one try. Returns whether this relay holds the lock."""
        if self.lock.try_acquire():
            return True
        logger.warning("relay waiting: another relay publishes this outbox (%s, lock %s); this one publishes "
                       "nothing until it stops", self.lock.holder, self.lock.describe())
        if stop is None:
            return False
        LOCK_WAITING.set(1)
        try:
            while not stop.wait(poll):
                if self.lock.try_acquire():
                    logger.info("relay took over the outbox lock (%s)", self.lock.describe())
                    return True
            return False
        finally:
            LOCK_WAITING.set(0)

    def _reset_producer(self) -> None:
        if self._producer is not None:
            try:
                self._producer.close()
            except Exception:  # a producer that already failed may fail to close as well
                logger.debug("producer close failed", exc_info=True)
            self._producer = None

    @property
    def producer(self) -> Producer:
        if self._producer is None:
            self._producer = self.transport.producer()
        return self._producer

    @property
    def lease_held(self) -> bool:
        """Whether this relay holds its outbox's lock (read by the worker's readiness probe)."""
        return bool(self.lock.held)

    def ensure_topics(self) -> None:
        """Create the channel and its dead-letter topic if missing (ConfigError on a partition mismatch)."""
        env = self.settings.env
        self.transport.create_topics([topic_for(env), dead_letter_topic_for(env)], self.settings.partitions)

    @property
    def stats(self) -> RelayStats:
        return RelayStats(
            published=self._published,
            batches=self._batches,
            sla_breaches=self._breaches,
            errors=self._errors,
            delay=self.delays.summary(),
        )

    # -- work ----------------------------------------------------------------------------------------

    def publish_pending(self, limit: int | None = None) -> int:
        """One synchronous pass: publish up to ``limit`` (default ``batch_size``) pending events in seq
        order and mark them published before returning. Returns how many were published. Transport faults
        propagate (:class:`TransientError`); nothing is marked then, so the next pass re-sends them."""
        n = self.batch_size if limit is None else min(limit, self.batch_size)
        if n < 1 or not self.acquire():
            return 0
        sent = self._send_pending(n)
        if sent is None or not sent[0]:
            return 0
        with writer(self.engine).connect() as conn:
            self._mark_published(conn, [sent])
        return len(sent[0])

    def _send_pending(self, n: int) -> tuple[list[_Sent], Sequence[Delivery]] | None:
        """Select up to ``n`` pending events that are not in flight, send them (blocks until the broker
        acknowledged every one) and return what the mark needs; None when there was nothing to send."""
        with self._cond:  # copied BEFORE the select: a seq leaves the set only once its mark committed,
            exclude = set(self._inflight)  # so a row pending in the select's snapshot and not in it is unsent
        with self.engine.connect() as conn:  # a read: a WAL reader never waits for the writer
            rows = self._select(conn, n, exclude)
            conn.commit()  # end the read transaction (SQLite: release the snapshot) before the send
        if not rows:
            return None
        records = _records(rows)
        try:
            with tracing.send_span(records[0].topic, records):
                deliveries = self.producer.send(records)
        except TransientError:
            self._reset_producer()
            raise
        except RecordsRefused as exc:
            if len(exc.deliveries) != len(rows):
                raise TransientError(f"producer reported {len(exc.deliveries)} records for {len(rows)}") from exc
            self._set_aside({int(rows[i][0]): (rows[i][1], why) for i, why in exc.refused.items()})
            acked = [(i, d) for i, d in enumerate(exc.deliveries) if d is not None and i not in exc.refused]
            return [(int(rows[i][0]), rows[i][1], float(rows[i][6])) for i, _ in acked], [d for _, d in acked]
        if len(deliveries) != len(rows):
            raise TransientError(f"producer returned {len(deliveries)} deliveries for {len(rows)} records")
        return [(int(r[0]), r[1], float(r[6])) for r in rows], deliveries

    def _set_aside(self, refused: dict[int, tuple[str, str]]) -> None:
        """Take records refused for good out of pending, with their reasons (seq -> (eventId, reason))."""
        with self.engine.begin() as conn:
            set_aside(conn, {seq: why for seq, (_eid, why) in refused.items()})
        for seq, (event_id, why) in sorted(refused.items()):
            SET_ASIDE.labels(_cause(why)).inc()
            self.set_aside += 1
            logger.error("set aside outbox seq %d (event %s): the broker refuses it for good: %s; the relay goes "
                         "on (see: payevents outbox set-aside; re-send after a fix: payevents outbox resend %d)",
                         seq, event_id, why, seq)

    def _select(self, conn: Connection, n: int, exclude: set[int]) -> Sequence[Any]:
        mark = sql_mark(conn)
        if not exclude:
            return conn.exec_driver_sql(_SELECT_PENDING_SQL.format(mark), (n,)).all()
        now = time.monotonic()
        if now < self._next_full_scan:
            # Seqs are given out in commit order (under the chain lock), so what is pending at or below the
            # highest seq in flight is in flight — but for an event put back by `outbox resend`. The rows
            # after it are read directly; the full scan below, at least every FULL_SCAN_S, finds those.
            return conn.exec_driver_sql(_SELECT_PENDING_AFTER_SQL.format(mark), (max(exclude), n)).all()
        self._next_full_scan = now + self.FULL_SCAN_S
        # Seqs only (the pending table's index), then the bodies of the first n not in flight.
        seqs = [s for (s,) in conn.exec_driver_sql(_SELECT_PENDING_SEQS_SQL.format(mark), (n + len(exclude),))
                if s not in exclude][:n]
        if not seqs:
            return []
        return conn.exec_driver_sql(_SELECT_EVENTS_SQL.format(",".join([mark] * len(seqs))), tuple(seqs)).all()

    def _mark_published(self, conn: Connection, groups: Sequence[tuple[Sequence[_Sent], Sequence[Delivery]]]) -> None:
        """Record the sends of ``groups`` (one per pass) published in ONE transaction, then observe them."""
        published: list[tuple[int, float, float, int, int]] = []
        delays: list[float] = []
        breaches = []
        for sent, deliveries in groups:
            for (seq, event_id, created_at), d in zip(sent, deliveries, strict=True):
                delay = max(0.0, d.acked_at - created_at)
                published.append((seq, d.acked_at, delay, d.partition, d.offset))
                delays.append(delay)
                if delay > SLA_SECONDS:
                    breaches.append((event_id, delay))
        mark = sql_mark(conn)
        with conn.begin():
            # A mark lost in a server crash only means a re-publish (allowed): skip the WAL flush wait.
            dialect(conn).relaxed_commit(conn)
            bulk.copy_rows(conn, "outbox_published", _PUBLISHED_COLUMNS, published, or_ignore="seq")
            for sent, _deliveries in groups:  # at most batch_size parameters per statement
                conn.exec_driver_sql(_DELETE_PENDING_SQL.format(",".join([mark] * len(sent))),
                                     tuple(s[0] for s in sent))
        # Observe after the commit: a send whose mark dies is re-sent and observed then.
        observe_many(PUBLISH_DELAY, delays)
        self.delays.record_many(delays)
        PUBLISHED.inc(len(published))
        self._published += len(published)
        self._batches += len(groups)
        for event_id, delay in breaches:
            SLA_BREACHES.inc()
            self._breaches += 1
            logger.warning(
                "SLA breach: event %s acknowledged %.3f s after its outbox commit (rule: within %.0f s)",
                event_id, delay, SLA_SECONDS, extra={"eventId": event_id, "outcome": "sla_breach"},
            )

    def _count_error(self) -> None:
        with self._cond:
            self._errors += 1
        RELAY_ERRORS.inc()

    def _marker_loop(self, done: threading.Event, abandon: threading.Event) -> None:
        """The marker thread: takes every queued group at once, marks them in one transaction (its own
        connection), then lets their seqs leave the in-flight set. Retries transient database faults with
        backoff (the seqs stay in flight meanwhile, so they are not re-sent by this process)."""
        backoff = Backoff(0.05, 5.0)
        try:
            while True:
                with self._cond:
                    while not self._marks and not done.is_set():
                        self._cond.wait()
                    if not self._marks or abandon.is_set():
                        return
                    groups, self._marks = self._marks, []
                try:
                    with writer(self.engine).connect() as conn:  # the lock at BEGIN, promptly (sqlitelock)
                        self._mark_published(conn, groups)
                except Exception as exc:
                    if not is_transient(exc):
                        raise
                    self._count_error()
                    with self._cond:
                        self._marks[:0] = groups  # keep seq order; retried with whatever arrives meanwhile
                    delay = backoff.next()
                    logger.warning("relay mark failed (%s: %s); retrying in %.2f s", type(exc).__name__, exc,
                                   delay)
                    abandon.wait(delay)
                    continue
                backoff.reset()
                with self._cond:
                    for sent, _deliveries in groups:
                        self._inflight.difference_update(s[0] for s in sent)
                    self._cond.notify_all()
        except BaseException as exc:  # not a database fault: a bug; run() re-raises it
            with self._cond:
                self._marker_error = exc
                self._cond.notify_all()

    def _idle(self, stop: threading.Event, idle_sleep: float) -> None:
        """After a pass that found nothing to send: wait until the outbox may have changed — on SQLite another
        connection's commit, seen within ``idle_sleep``; on PostgreSQL the notification its trigger sends when
        pending events are committed — or :data:`IDLE_PASS_S` has passed (the lock check and the sampled gauges
        run on passes). Asking the table every ``idle_sleep`` instead cost an idle relay ~10 % of a core. A watch
        that fails (its connection lost) is dropped, and the relay looks every ``idle_sleep`` for
        :data:`IDLE_PASS_S` before it opens one again."""
        if self._watch is None and time.monotonic() < self._watch_again_at:
            stop.wait(idle_sleep)
            return
        try:
            if self._watch is None:
                self._watch = dialect(self.engine).change_watch(self.engine, OUTBOX_CHANNEL, idle_sleep)
            self._watch.wait(IDLE_PASS_S, stop)
        except Exception as exc:
            if not is_transient(exc):
                raise
            logger.warning("relay: waiting for new events failed (%s: %s); looking every %.3f s meanwhile",
                           type(exc).__name__, exc, idle_sleep)
            self._close_watch()
            self._watch_again_at = time.monotonic() + IDLE_PASS_S
            stop.wait(idle_sleep)

    def _close_watch(self) -> None:
        watch, self._watch = self._watch, None
        if watch is not None:
            with contextlib.suppress(Exception):
                watch.close()

    def run(self, stop: threading.Event, idle_sleep: float = 0.005, *, create_topics: bool = True,
            drain_timeout: float = 30.0) -> None:
        """Publish until ``stop`` is set: passes back to back while there is work, after an empty pass a wait
        for the outbox to change (:meth:`_idle`; ``idle_sleep``: how soon SQLite's change is seen), bounded
        exponential backoff (50 ms .. 5 s) after transient faults.

        Marking runs in a marker thread, so a pass never waits for the database's write lock: the next
        select (which skips the seqs sent but not yet marked) and send go ahead while the previous sends
        are being marked. At most ``max_inflight`` events are sent and unmarked; past that the loop waits
        for the marker. On stop, the marks still queued are committed (for up to ``drain_timeout`` s;
        any left then are re-published by the next relay) before this returns."""
        if not self.acquire(stop):
            return
        backoff = Backoff(0.05, 5.0)
        topics_ready = not create_topics
        next_sample = 0.0
        done, abandon = threading.Event(), threading.Event()
        marker = threading.Thread(target=self._marker_loop, args=(done, abandon), name="relay-marker", daemon=True)
        marker.start()
        try:
            while not stop.is_set():
                with self._cond:  # bounded memory: wait while the marker is behind
                    while (len(self._inflight) >= self.max_inflight and self._marker_error is None
                           and not stop.is_set()):
                        self._cond.wait(0.05)
                    if self._marker_error is not None:
                        raise self._marker_error
                    room = self.max_inflight - len(self._inflight)
                if room <= 0:
                    continue
                try:
                    if not topics_ready:
                        self.ensure_topics()
                        topics_ready = True
                    sent = self._send_pending(min(self.batch_size, room))
                    if sent is not None and sent[0]:
                        with self._cond:
                            self._inflight.update(s[0] for s in sent[0])
                            self._marks.append(sent)
                            self._cond.notify_all()
                    if time.monotonic() >= next_sample:
                        if not self.lock.verify():
                            # another relay may hold it now: publish nothing until this one holds it again
                            logger.error("relay lost the outbox lock (%s: its session ended); waiting to take it"
                                         " again", self.lock.describe())
                            if not self.acquire(stop):
                                break
                        self.pending = pending_count(self.engine)
                        PENDING.set(self.pending)
                        SET_ASIDE_WAITING.set(set_aside_count(self.engine))
                        next_sample = time.monotonic() + 1.0
                    self.last_pass_ok = True
                    self.progress_at = time.monotonic()
                except Exception as exc:
                    if not is_transient(exc):
                        raise
                    self.last_pass_ok = False
                    self.progress_at = time.monotonic()
                    self._count_error()
                    delay = backoff.next()
                    logger.warning("relay pass failed (%s: %s); retrying in %.2f s", type(exc).__name__, exc,
                                   delay)
                    stop.wait(delay)
                    continue
                backoff.reset()
                if sent is None:
                    self._idle(stop, idle_sleep)
        finally:
            self._close_watch()
            done.set()
            with self._cond:
                self._cond.notify_all()
            marker.join(drain_timeout)
            if marker.is_alive():
                abandon.set()
                marker.join(10)
            with self._cond:
                left = len(self._inflight)
                self._inflight.clear()
                self._marks.clear()
            if left:
                logger.warning("relay stopped with %d sent events not marked published; the next relay "
                               "re-publishes them", left)
            self.lock.release()
        if self._marker_error is not None:
            raise self._marker_error


def _records(rows: Sequence[Any]) -> list[Record]:
    """The channel's records of outbox rows (seq, event_id, topic, partition_key, headers, body, created_at)."""
    return [Record(topic=topic, value=bytes(body), key=bytes(key), headers=_headers(headers))
            for _seq, _event_id, topic, key, headers, body, _created in rows]


def _headers(stored: str) -> tuple[tuple[str, bytes], ...]:
    return tuple([(name, value.encode()) for name, value in orjson.loads(stored).items()])


def observe_many(histogram: Histogram, values: Sequence[float]) -> None:
    """``histogram.observe(v)`` for every value, counted per bucket first: one increment per bucket touched
    and one of the sum, instead of a locked increment of a bucket and of the sum per value (same exposition).
    A histogram whose internals are not the ones this knows is observed value by value."""
    buckets = getattr(histogram, "_buckets", None)
    bounds = getattr(histogram, "_upper_bounds", None)
    total = getattr(histogram, "_sum", None)
    if buckets is None or bounds is None or total is None or len(bounds) != len(buckets):
        for value in values:
            histogram.observe(value)
        return
    counts: dict[int, int] = {}
    for value in values:
        i = bisect_left(bounds, value)  # observe(): the first bucket whose upper bound is >= the value
        counts[i] = counts.get(i, 0) + 1
    for i, n in counts.items():
        buckets[i].inc(n)
    total.inc(math.fsum(values))


def serve(settings: Settings, *, batch_size: int = 500, idle_sleep: float = 0.005) -> RelayStats:
    """Run a relay in this process until SIGTERM or SIGINT (the ``payevents relay`` command)."""
    stop = threading.Event()

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, _stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        with Relay(settings, batch_size=batch_size) as relay:
            logger.info("relay publishing %s (batch %d)", relay.topic, batch_size)
            started = time.monotonic()
            relay.run(stop, idle_sleep)
            stats = relay.stats
            logger.info(
                "relay stopped after %.1f s: %d published, p99 %.1f ms, %d SLA breaches",
                time.monotonic() - started, stats.published, stats.p99 * 1000, stats.sla_breaches,
            )
            return stats
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


# -- deliberate re-publishing of what the channel lost --------------------------------------------------

#: most outbox events read and sent in one producer batch by :func:`republish`
REPUBLISH_BATCH: Final = 500
#: the events placed at a range of a partition's offsets: by the relay, or by an earlier republish
_SELECT_PUBLISHED_AT_SQL: Final = (
    'SELECT p.seq, p."offset" FROM outbox_published p JOIN outbox_events e ON e.seq = p.seq WHERE e.topic = {0}'
    ' AND p.partition = {0} AND p."offset" >= {0} AND p."offset" <= {0}'
    ' UNION ALL SELECT r.seq, r."offset" FROM outbox_republished r JOIN outbox_events e ON e.seq = r.seq'
    ' WHERE e.topic = {0} AND r.partition = {0} AND r."offset" >= {0} AND r."offset" <= {0} ORDER BY 1'
)
_INSERT_REPUBLISHED_SQL: Final = (
    'INSERT INTO outbox_republished (partition, "offset", seq, republished_at) VALUES ({0}, {0}, {0}, {0})'
    ' ON CONFLICT DO NOTHING'
)


@dataclasses.dataclass(frozen=True, slots=True)
class Republished:
    """What :func:`republish` did with the offsets it was given."""

    #: outbox seqs whose events went to the channel again (in seq order)
    sent: list[int]
    #: outbox seq -> why it was not sent (the broker refused it for good, or never acknowledged it)
    refused: dict[int, str]
    #: offsets of the range that this outbox never published (another producer's records, or none at all)
    not_ours: int


_COUNT_REPUBLISHED_SQL: Final = (
    "SELECT count(*), count(x.seq) FROM (SELECT DISTINCT seq FROM (" + _SELECT_PUBLISHED_AT_SQL.removesuffix(
        " ORDER BY 1") + ") u) r LEFT JOIN (SELECT DISTINCT seq FROM outbox_republished WHERE partition = {0}"
    ' AND "offset" > {0}) x ON x.seq = r.seq'
)


def published_again(engine: Engine, topic: str, partition: int, first: int, last: int) -> tuple[int, int] | None:
    """(how many outbox events the relay put at offsets ``first`` to ``last`` of ``partition``, how many of them
    :func:`republish` has put on the channel again since: after ``last``), for a range a consumer reported lost;
    None when this database holds no outbox that can say (read only: nothing is migrated or created)."""
    with engine.connect() as conn:
        tables = sa.inspect(conn)
        if not all(tables.has_table(t) for t in ("outbox_events", "outbox_published", "outbox_republished")):
            return None
        row = conn.exec_driver_sql(_COUNT_REPUBLISHED_SQL.format(sql_mark(conn)),
                                   (topic, partition, first, last) * 2 + (partition, last)).one()
    return int(row[0]), int(row[1])


def republish(settings: Settings, partition: int, first: int, last: int, *, engine: Engine | None = None,
              transport: Transport | None = None) -> Republished:
    """Publish again the outbox events the relay published to ``partition`` of the channel at offsets ``first`` to
    ``last`` (both included) — the records a consumer reported deleted by the channel's retention before its group
    read them (:meth:`payevents.runtime.consumer.ConsumerRuntime` says which). They go to the end of their
    partition (same key, headers and body); a group that had read them already drops them by eventId, one that
    lost them applies them. The publish marks and delays stay the first publication's (this is an operator's re-send,
    not a publication); where each event landed again is recorded in ``outbox_republished``, so a re-sent record
    lost in turn is found by its new offsets. Only what the outbox placed there is found; the rest of the range is
    counted in ``not_ours``."""
    if partition < 0 or first < 0 or last < first:
        raise ValueError(f"partition {partition}, offsets {first} to {last}: want partition ≥ 0 and 0 ≤ first ≤ last")
    engine = engine if engine is not None else engine_for(settings, "payments")
    migrate(engine, "payments", OUTBOX_MIGRATIONS)
    topic = topic_for(settings.env)
    with engine.connect() as conn:
        mark = sql_mark(conn)
        found = conn.exec_driver_sql(_SELECT_PUBLISHED_AT_SQL.format(mark),
                                     (topic, partition, first, last) * 2).all()
    seqs = list(dict.fromkeys(int(r[0]) for r in found))
    owned = transport is None
    transport = transport if transport is not None else _open_transport(settings)
    sent: list[int] = []
    refused: dict[int, str] = {}
    producer = None
    try:
        for i in range(0, len(seqs), REPUBLISH_BATCH):
            chunk = seqs[i:i + REPUBLISH_BATCH]
            with engine.connect() as conn:
                rows = conn.exec_driver_sql(_SELECT_EVENTS_SQL.format(",".join([sql_mark(conn)] * len(chunk))),
                                            tuple(chunk)).all()
            if producer is None:
                producer = transport.producer()
            deliveries: Sequence[Delivery | None]
            try:
                deliveries = producer.send(_records(rows))
            except RecordsRefused as exc:
                deliveries = exc.deliveries
                for j, row in enumerate(rows):
                    if j in exc.refused:
                        refused[int(row[0])] = exc.refused[j]
                    elif deliveries[j] is None:
                        refused[int(row[0])] = "not acknowledged by the broker (the command may be run again)"
            placed = [(d.partition, d.offset, int(row[0]), d.acked_at) for row, d in zip(rows, deliveries, strict=True)
                      if d is not None and int(row[0]) not in refused]
            if placed:
                with engine.begin() as conn:
                    conn.exec_driver_sql(_INSERT_REPUBLISHED_SQL.format(sql_mark(conn)), placed)
            sent.extend(seq for _p, _o, seq, _at in placed)
    finally:
        if producer is not None:
            producer.close()
        if owned:
            transport.close()
    if sent:
        logger.warning("re-published %d outbox event(s) (seqs %d to %d) of %s[%d] offsets %d to %d", len(sent),
                       sent[0], sent[-1], topic, partition, first, last)
    return Republished(sent=sent, refused=refused, not_ours=(last - first + 1) - len({r[1] for r in found}))


def _open_transport(settings: Settings) -> Transport:
    from payevents.transport import open_transport  # type: ignore[attr-defined]

    return open_transport(settings)  # type: ignore[no-any-return]
