"""The outbox relay: publishes pending outbox rows to the channel and marks them published.

One pass (:meth:`Relay.publish_pending`) reads pending rows in seq order (from the pending table, so a
row that committed after a higher seq is never skipped), sends them in ONE producer batch (records of
a payment keep their order; the producer blocks until the broker acknowledged every record), then
records them published in ONE transaction. Killed anywhere, it re-publishes at most the batch in
flight on restart: duplicates are allowed (consumers drop them by eventId), losses are not.

Publish delay = broker acknowledgement (``Delivery.acked_at``) minus outbox ``created_at``, observed
for every event into the Prometheus histogram ``payevents_publish_delay_seconds``, into
:attr:`Relay.stats`, and stored per event in ``outbox_published``. An event past the 5-second rule is
logged (WARNING, logger ``payevents.relay``) as an SLA breach with its eventId.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import signal
import threading
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any, Final

import orjson
import sqlalchemy as sa
from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy.engine import Connection, Engine

from payevents.contracts.channel import dead_letter_topic_for, topic_for
from payevents.errors import TransientError
from payevents.runtime.outbox import OUTBOX_MIGRATIONS, pending_count
from payevents.settings import Settings
from payevents.store.db import engine_for, migrate
from payevents.transport.base import Delivery, Producer, Record, Transport

logger = logging.getLogger("payevents.relay")

#: The event page's rule: published within 5 seconds of payment completion.
SLA_SECONDS: Final = 5.0

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


class DelayStats:
    """An HDR-like histogram: fixed log-spaced buckets (1% wide) from 10 µs to 1000 s, so percentiles
    are within 1% whatever the volume, in constant memory. Thread-safe."""

    LOWEST: Final = 1e-5
    HIGHEST: Final = 1e3
    GROWTH: Final = 1.01

    def __init__(self) -> None:
        self._log_growth = math.log(self.GROWTH)
        self._n_buckets = math.ceil(math.log(self.HIGHEST / self.LOWEST) / self._log_growth) + 2
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
        if value <= self.LOWEST:
            return 0
        return min(self._n_buckets - 1, math.ceil(math.log(value / self.LOWEST) / self._log_growth))

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
        index = self._index
        with self._lock:
            counts = self._counts
            for value in values:
                value = max(0.0, value)
                counts[index(value)] += 1
                self.total += value
                if value > self.max:
                    self.max = value
                if value < self.min:
                    self.min = value
            self.count += len(values)

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
_INSERT_PUBLISHED_SQL: Final = (
    'INSERT INTO outbox_published (seq, published_at, delay_s, partition, "offset")'
    " VALUES ({0}, {0}, {0}, {0}, {0}) ON CONFLICT (seq) DO NOTHING"
)
_DELETE_PENDING_SQL: Final = "DELETE FROM outbox_pending WHERE seq IN ({})"


def _mark(conn: Connection) -> str:
    """The DBAPI's positional placeholder: ``?`` for sqlite3, ``%s`` for psycopg."""
    return "?" if conn.dialect.paramstyle == "qmark" else "%s"


class Relay:
    """Publishes the payments outbox to ``payments.{env}.events``.

    ``transport``/``engine`` default to ``open_transport(settings)`` and the payments database; the
    outbox migrations are applied to the engine. A transport passed in is not closed by :meth:`close`.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        transport: Transport | None = None,
        engine: Engine | None = None,
        batch_size: int = 500,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size: {batch_size} must be a positive integer")
        self.settings = settings
        self.batch_size = batch_size
        self.topic = topic_for(settings.env)
        self._owns_transport = transport is None
        if transport is None:
            from payevents.transport import open_transport  # type: ignore[attr-defined]

            transport = open_transport(settings)
        self.transport: Transport = transport
        self.engine = engine if engine is not None else engine_for(settings, "payments")
        migrate(self.engine, "payments", OUTBOX_MIGRATIONS)
        self._producer: Producer | None = None
        self.delays = DelayStats()
        self._published = 0
        self._batches = 0
        self._breaches = 0
        self._errors = 0

    # -- lifecycle -----------------------------------------------------------------------------------

    def __enter__(self) -> Relay:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._reset_producer()
        if self._owns_transport:
            self.transport.close()

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
        """One pass: publish up to ``limit`` (default ``batch_size``) pending events in seq order and
        mark them published. Returns how many were published. Transport faults propagate
        (:class:`TransientError`); nothing is marked then, so the next pass re-sends them."""
        n = self.batch_size if limit is None else min(limit, self.batch_size)
        if n < 1:
            return 0
        with self.engine.connect() as conn:  # one checkout per pass
            rows = conn.exec_driver_sql(_SELECT_PENDING_SQL.format(_mark(conn)), (n,)).all()
            conn.commit()  # end the read transaction (SQLite: release the snapshot) before the send
            if not rows:
                return 0
            self._send_and_mark(conn, rows)
        return len(rows)

    def _send_and_mark(self, conn: Connection, rows: Sequence[Any]) -> None:
        records = [
            Record(topic=topic, value=bytes(body), key=bytes(key), headers=_headers(headers))
            for _seq, _event_id, topic, key, headers, body, _created in rows
        ]
        try:
            deliveries = self.producer.send(records)
        except TransientError:
            self._reset_producer()
            raise
        if len(deliveries) != len(rows):
            raise TransientError(f"producer returned {len(deliveries)} deliveries for {len(rows)} records")
        self._mark_published(conn, rows, deliveries)

    def _mark_published(self, conn: Connection, rows: Sequence[Any], deliveries: Sequence[Delivery]) -> None:
        published: list[tuple[int, float, float, int, int]] = []
        delays: list[float] = []
        breaches = []
        for (seq, event_id, _topic, _key, _headers, _body, created_at), d in zip(rows, deliveries, strict=True):
            delay = max(0.0, d.acked_at - float(created_at))
            published.append((int(seq), d.acked_at, delay, d.partition, d.offset))
            delays.append(delay)
            if delay > SLA_SECONDS:
                breaches.append((event_id, delay))
        mark = _mark(conn)
        with conn.begin():
            if conn.dialect.name == "postgresql":
                # A mark lost in a server crash only means a re-publish (allowed): skip the WAL flush wait.
                conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
            conn.exec_driver_sql(_INSERT_PUBLISHED_SQL.format(mark), published)
            conn.exec_driver_sql(_DELETE_PENDING_SQL.format(",".join([mark] * len(published))),
                                 tuple(p[0] for p in published))
        # Observe after the commit: a pass that dies before it is re-sent and observed then.
        observe = PUBLISH_DELAY.observe
        for delay in delays:
            observe(delay)
        self.delays.record_many(delays)
        PUBLISHED.inc(len(published))
        self._published += len(published)
        self._batches += 1
        for event_id, delay in breaches:
            SLA_BREACHES.inc()
            self._breaches += 1
            logger.warning(
                "SLA breach: event %s acknowledged %.3f s after its outbox commit (rule: within %.0f s)",
                event_id, delay, SLA_SECONDS,
            )

    def run(self, stop: threading.Event, idle_sleep: float = 0.005, *, create_topics: bool = True) -> None:
        """Publish until ``stop`` is set: passes back to back while there is work, ``idle_sleep``
        between empty passes, bounded exponential backoff (50 ms .. 5 s) after transient faults."""
        backoff = 0.0
        topics_ready = not create_topics
        next_sample = 0.0
        while not stop.is_set():
            try:
                if not topics_ready:
                    self.ensure_topics()
                    topics_ready = True
                n = self.publish_pending()
                if time.monotonic() >= next_sample:
                    PENDING.set(pending_count(self.engine))
                    next_sample = time.monotonic() + 1.0
            except (TransientError, sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
                self._errors += 1
                RELAY_ERRORS.inc()
                backoff = min(5.0, max(0.05, backoff * 2))
                logger.warning("relay pass failed (%s: %s); retrying in %.2f s", type(exc).__name__, exc, backoff)
                stop.wait(backoff)
                continue
            backoff = 0.0
            if n == 0:
                stop.wait(idle_sleep)


def _headers(stored: str) -> tuple[tuple[str, bytes], ...]:
    doc = orjson.loads(stored)
    return tuple(zip(doc.keys(), map(str.encode, doc.values()), strict=True))


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
