"""The embedded transport: a durable partitioned log in one SQLite file (``{data_dir}/channel.db``).

Not an in-memory fake: records get real per-partition offsets starting at 0, keys are placed with the
Java client's murmur2 (same partition numbers as Kafka), consumer groups keep committed offsets, and
everything survives process restarts. Several processes (relay, service consumers, ``tail``) share the
file safely: WAL mode, short write transactions (``BEGIN IMMEDIATE``), a busy timeout.

Layout: ``log.id = (partition_id << 40) | offset`` so a partition is one contiguous rowid range and a
fetch is a rowid range scan. A whole :meth:`EmbeddedProducer.send` batch is one transaction.

Consumer groups: each member has a row in ``members`` with a lease expiry it renews from ``poll`` and
``commit`` (heartbeat); ``leases`` maps each partition to at most one live member. Every heartbeat
computes a balanced assignment over the live members, releases the partitions it should no longer
own and takes free ones it should own. A member whose lease expired, or whose process is gone (same
host, checked through /proc), loses its partitions; ``close`` releases them at once. Commits only
apply to partitions the member still owns (others are skipped with a warning: the new owner re-reads
from the last committed offset, at-least-once).

Producing to a topic that was not created is a :class:`ConfigError` (no auto-creation: the partition
count must be chosen on purpose).

Retention (``retention_ms``, Kafka's ``retention.ms``; -1: keep everything): a record is removed once it
is older than that AND every consumer group that ever committed on its partition has committed past it (a
partition no group has committed on keeps everything: nothing proves it was read). A group that has no member and
has not committed for ``offsets_retention_ms`` (Kafka's ``offsets.retention.minutes``, 7 days by default) loses
its offsets first, as on Kafka, so a retired or renamed service does not keep the log forever; should it come
back it reads from the log start (its effects stay exactly once: the seen marks absorb what it had applied).
The partition's log start
offset (``partitions.start_offset``) moves up; offsets are never reused. Freed pages are reused by new records,
so the file stops growing once retention keeps pace. The producer applies it about once a minute
(:data:`RETENTION_CHECK_INTERVAL`); :meth:`EmbeddedTransport.enforce_retention` applies it now.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec

from payevents.contracts.channel import partitions_problem, retention_problem, topic_config
from payevents.errors import ConfigError, TransientError
from payevents.sqlitelock import begin_immediate
from payevents.transport.base import (
    DEFAULT_MAX_RECORD_BYTES,
    Delivery,
    Message,
    Record,
    RecordsRefused,
    Skipped,
    TopicInfo,
    TopicPartition,
    record_size,
    topic_name_problem,
)
from payevents.transport.murmur2 import partition_for

log = logging.getLogger(__name__)

OFFSET_BITS = 40
OFFSET_MASK = (1 << OFFSET_BITS) - 1
DEFAULT_SESSION_TIMEOUT = 10.0
DEFAULT_HEARTBEAT_INTERVAL = 0.5
#: the producer restarts the WAL after this many records (keeps the -wal file at tens of MB)
CHECKPOINT_EVERY = 20000
#: how long a write waits for another process's write transaction before it is a TransientError
DEFAULT_BUSY_TIMEOUT = 30.0
#: while a member waits for partitions another member must release, it heartbeats this often
PENDING_HEARTBEAT_INTERVAL = 0.05
#: Kafka's default retention.ms (7 days)
DEFAULT_RETENTION_MS = 7 * 24 * 3600 * 1000
#: Kafka's default offsets.retention.minutes (7 days): a group with no member that has not committed for this long
#: loses its committed offsets, so it no longer holds back retention
DEFAULT_OFFSETS_RETENTION_MS = 7 * 24 * 3600 * 1000
#: how often (seconds) a producer applies retention
RETENTION_CHECK_INTERVAL = 60.0

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS topics (
        name TEXT PRIMARY KEY, partitions INTEGER NOT NULL, config TEXT NOT NULL, created_at REAL NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS partitions (
        id INTEGER PRIMARY KEY, topic TEXT NOT NULL, partition INTEGER NOT NULL,
        next_offset INTEGER NOT NULL DEFAULT 0, UNIQUE (topic, partition))""",
    """CREATE TABLE IF NOT EXISTS log (
        id INTEGER PRIMARY KEY, key BLOB, value BLOB, headers BLOB, ts INTEGER NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS offsets (
        grp TEXT NOT NULL, pid INTEGER NOT NULL, next_offset INTEGER NOT NULL, updated_at REAL NOT NULL,
        PRIMARY KEY (grp, pid)) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS members (
        grp TEXT NOT NULL, member TEXT NOT NULL, topics TEXT NOT NULL, expires REAL NOT NULL,
        PRIMARY KEY (grp, member)) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS leases (
        grp TEXT NOT NULL, pid INTEGER NOT NULL, member TEXT NOT NULL, PRIMARY KEY (grp, pid)) WITHOUT ROWID""",
)
#: added after the first release: applied to older files too (a duplicate column is ignored)
_ADD_COLUMNS = ("ALTER TABLE partitions ADD COLUMN start_offset INTEGER NOT NULL DEFAULT 0",)

_FETCH = "SELECT id, key, value, headers, ts FROM log WHERE id >= ? AND id < ? ORDER BY id LIMIT ?"
_enc_headers = msgspec.msgpack.Encoder()
_dec_headers = msgspec.msgpack.Decoder(tuple[tuple[str, bytes], ...])
_HOST = socket.gethostname()


def _process_start(pid: int) -> str | None:
    """The process start time (jiffies since boot) from /proc, None if unknown/gone/zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    rest = stat[stat.rfind(b")") + 2:].split()
    if not rest or rest[0] in (b"Z", b"X"):
        return None
    return rest[19].decode()


def _member_alive(member: str) -> bool | None:
    """False if ``member`` ran on this host and its process is gone; None when it cannot be told."""
    parts = member.split("|")
    if len(parts) != 4 or parts[0] != _HOST or parts[2] == "?" or not os.path.isdir("/proc/self"):
        return None
    started = _process_start(int(parts[1]))
    return started is not None and started == parts[2]


def _wrap(exc: sqlite3.Error, what: str) -> Exception:
    if isinstance(exc, sqlite3.OperationalError):
        return TransientError(f"embedded log {what}: {exc}")
    return exc


class _Db:
    """One SQLite connection with a lock (objects may be used from more than one thread)."""

    def __init__(self, path: Path, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> None:
        self.path = path
        self.lock = threading.RLock()
        self.busy_timeout = busy_timeout
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(str(path), timeout=busy_timeout, isolation_level=None,
                                        check_same_thread=False)
            self.conn.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")  # an appended record is on disk before its ack
            self.conn.execute("PRAGMA journal_size_limit=67108864")
        except sqlite3.Error as exc:
            raise _wrap(exc, f"open {path}") from exc

    @contextlib.contextmanager
    def tx(self, what: str) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE); SQLite busy/locked/IO errors become TransientError."""
        with self.lock:
            try:
                begin_immediate(self.conn, self.busy_timeout)
            except sqlite3.Error as exc:
                raise _wrap(exc, what) from exc
            try:
                yield self.conn
                self.conn.execute("COMMIT")
            except BaseException as exc:
                with contextlib.suppress(sqlite3.Error):
                    self.conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise _wrap(exc, what) from exc
                raise

    def query(self, sql: str, params: Sequence[Any] = (), what: str = "read") -> list[Any]:
        with self.lock:
            try:
                return self.conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise _wrap(exc, what) from exc

    def data_version(self) -> int:
        with self.lock:
            return int(self.conn.execute("PRAGMA data_version").fetchone()[0])

    def close(self) -> None:
        with self.lock, contextlib.suppress(sqlite3.Error):
            self.conn.close()


def _topic_pids(db: _Db, topic: str) -> list[int] | None:
    rows = db.query("SELECT partition, id FROM partitions WHERE topic = ? ORDER BY partition", (topic,))
    return [pid for _, pid in rows] or None


def _expire_offsets(conn: sqlite3.Connection, offsets_retention_ms: int, now: float) -> None:
    """Delete the offsets of every group with no live member (leases judged on the real clock) whose last commit
    is older than ``offsets_retention_ms`` at ``now``."""
    cutoff = now - offsets_retention_ms / 1000
    expired = [g for (g,) in conn.execute(
        "SELECT grp FROM offsets GROUP BY grp HAVING MAX(updated_at) < ?"
        " AND grp NOT IN (SELECT grp FROM members WHERE expires > ?)", (cutoff, time.time()))]
    for group in expired:
        conn.execute("DELETE FROM offsets WHERE grp = ?", (group,))
        conn.execute("DELETE FROM leases WHERE grp = ?", (group,))
        log.warning("embedded log: consumer group %s has had no member and no commit for %d ms: its offsets "
                    "expired (offsets.retention.minutes); it no longer holds back retention", group,
                    offsets_retention_ms)


def _kept_for_ever(topic: str) -> bool:
    """The topic's own configuration keeps its records whatever the log's retention (a dead-letter channel),
    decided by its name (``contracts.channel.topic_config``), so a log created before the rule keeps them too."""
    return topic_config(topic).get("retention.ms") == "-1"


def enforce_retention(db: _Db, retention_ms: int, now: float | None = None,
                      offsets_retention_ms: int = DEFAULT_OFFSETS_RETENTION_MS) -> dict[TopicPartition, int]:
    """Expire the offsets of abandoned groups; remove records older than ``retention_ms`` that every group
    committed on their partition has committed past; move the log start offsets. Returns the removed count per
    partition that lost records. ``now`` (epoch seconds) ages records and commits."""
    if retention_ms < 0:
        return {}
    now = time.time() if now is None else now
    cutoff_ms = int(now * 1000 - retention_ms)
    removed: dict[TopicPartition, int] = {}
    with db.tx("retention") as conn:
        if offsets_retention_ms >= 0:
            _expire_offsets(conn, offsets_retention_ms, now)
        parts = conn.execute(
            "SELECT p.id, p.topic, p.partition, p.start_offset, p.next_offset, MIN(o.next_offset) FROM partitions p"
            " JOIN offsets o ON o.pid = p.id GROUP BY p.id").fetchall()
        for pid, topic, partition, start, end, committed in parts:
            if _kept_for_ever(topic):
                continue
            upto = min(int(committed), int(end))  # every group has committed past the offsets below this
            if upto <= start:
                continue
            base = pid << OFFSET_BITS
            n = conn.execute("DELETE FROM log WHERE id >= ? AND id < ? AND ts < ?",
                             (base | start, base | upto, cutoff_ms)).rowcount
            first = conn.execute("SELECT MIN(id) FROM log WHERE id >= ? AND id < ?",
                                 (base, base + OFFSET_MASK + 1)).fetchone()[0]
            new_start = int(end) if first is None else int(first) & OFFSET_MASK
            if new_start != start:
                conn.execute("UPDATE partitions SET start_offset = ? WHERE id = ?", (new_start, pid))
            if n:
                removed[(topic, partition)] = n
    if removed:
        log.info("embedded log retention removed %d records (%s)", sum(removed.values()),
                 ", ".join(f"{t}[{p}]: {n}" for (t, p), n in sorted(removed.items())))
    return removed


def _messages(topic: str, partition: int, rows: list[Any]) -> list[Message]:
    dec = _dec_headers.decode
    return [
        Message(topic, partition, rid & OFFSET_MASK, key, value, dec(headers) if headers else (), ts)
        for rid, key, value, headers, ts in rows
    ]


class EmbeddedTransport:
    """The SQLite log at ``path``. ``session_timeout``/``heartbeat_interval`` (seconds) govern group
    membership; they can also come from ``session.timeout.ms``/``heartbeat.interval.ms`` in kafka_config.
    ``busy_timeout``: seconds a write waits for the file's write lock before raising TransientError.
    ``max_record_bytes``: the producer refuses larger records for good, as Kafka's ``message.max.bytes`` does."""

    name = "embedded"

    def __init__(self, path: Path | str, *, session_timeout: float = DEFAULT_SESSION_TIMEOUT,
                 heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
                 busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
                 max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
                 retention_ms: int = DEFAULT_RETENTION_MS,
                 offsets_retention_ms: int = DEFAULT_OFFSETS_RETENTION_MS) -> None:
        if (problem := retention_problem(retention_ms)) is not None:
            raise ConfigError(f"retention_ms: {problem}")
        self.path = Path(path)
        self.max_record_bytes = max_record_bytes
        self.retention_ms = retention_ms
        self.offsets_retention_ms = offsets_retention_ms
        self.session_timeout = session_timeout
        self.heartbeat_interval = heartbeat_interval
        self.busy_timeout = busy_timeout
        self._db = _Db(self.path, busy_timeout)
        with self._db.tx("create schema") as conn:
            for stmt in _SCHEMA:
                conn.execute(stmt)
            for stmt in _ADD_COLUMNS:
                try:
                    conn.execute(stmt)
                except sqlite3.OperationalError as exc:
                    if "duplicate column" not in str(exc):
                        raise

    def enforce_retention(self, now: float | None = None) -> dict[TopicPartition, int]:
        """Apply retention now (see the module doc); ``now`` in epoch seconds. Removed records per partition."""
        return enforce_retention(self._db, self.retention_ms, now, self.offsets_retention_ms)

    def producer(self) -> EmbeddedProducer:
        return EmbeddedProducer(self.path, self.busy_timeout, self.max_record_bytes, self.retention_ms,
                                self.offsets_retention_ms)

    def consumer(self, group: str, topics: Sequence[str], *, from_beginning: bool = True) -> EmbeddedConsumer:
        return EmbeddedConsumer(self.path, group, topics, from_beginning=from_beginning,
                                session_timeout=self.session_timeout, heartbeat_interval=self.heartbeat_interval,
                                busy_timeout=self.busy_timeout)

    def create_topics(self, topics: Sequence[str], partitions: int) -> None:
        if (problem := partitions_problem(partitions)) is not None:
            raise ConfigError(f"partitions: {problem}")
        with self._db.tx("create topics") as conn:
            for topic in topics:
                if not topic:
                    raise ConfigError("topic: a topic name must not be empty")
                row = conn.execute("SELECT partitions FROM topics WHERE name = ?", (topic,)).fetchone()
                if row is not None:
                    if row[0] != partitions:
                        raise ConfigError(
                            f"topic {topic!r} exists with {row[0]} partitions, but {partitions} are configured; "
                            "a different partition count would break per-payment order")
                    continue
                conn.execute("INSERT INTO topics (name, partitions, config, created_at) VALUES (?, ?, ?, ?)",
                             (topic, partitions, msgspec.json.encode(topic_config(topic)).decode(), time.time()))
                conn.executemany("INSERT INTO partitions (topic, partition) VALUES (?, ?)",
                                 [(topic, p) for p in range(partitions)])

    def describe(self, topic: str) -> TopicInfo:
        rows = self._db.query("SELECT t.config, p.partition, p.next_offset, p.start_offset FROM topics t "
                              "JOIN partitions p ON p.topic = t.name WHERE t.name = ? ORDER BY p.partition", (topic,))
        if not rows:
            raise ConfigError(f"topic {topic!r} does not exist in the embedded log {self.path} (create it first)")
        config = msgspec.json.decode(rows[0][0], type=dict[str, str])
        # the retention this log applies: the settings', or the topic's own "keep for ever" (the dead letters)
        config["retention.ms"] = "-1" if _kept_for_ever(topic) else str(self.retention_ms)
        return TopicInfo(topic, len(rows), {p: end for _, p, end, _s in rows}, config,
                         start_offsets={p: start for _, p, _e, start in rows}, storage_bytes=self.storage_bytes())

    def storage_bytes(self) -> int:
        """The bytes the log takes: the database pages in use or free for reuse (what the file holds once
        checkpointed), not counting the write-ahead log."""
        rows = self._db.query("SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()")
        return int(rows[0][0])

    def topics(self) -> list[str]:
        """Names of the topics in the log."""
        return [name for (name,) in self._db.query("SELECT name FROM topics ORDER BY name")]

    def read(self, topic: str, partition: int, offset: int, max_records: int = 500) -> list[Message]:
        pids = _topic_pids(self._db, topic)
        if pids is None:
            raise ConfigError(f"topic {topic!r} does not exist in the embedded log {self.path}")
        if not 0 <= partition < len(pids):
            raise ConfigError(f"partition: {partition} is not a partition of {topic!r} (0..{len(pids) - 1})")
        base = pids[partition] << OFFSET_BITS
        rows = self._db.query(_FETCH, (base | max(offset, 0), base + OFFSET_MASK + 1, max_records))
        return _messages(topic, partition, rows)

    def group_offsets(self, group: str, topic: str) -> dict[int, int]:
        rows = self._db.query("SELECT p.partition, o.next_offset FROM offsets o JOIN partitions p ON p.id = o.pid "
                              "WHERE o.grp = ? AND p.topic = ?", (group, topic))
        return {int(p): int(o) for p, o in rows}

    def close(self) -> None:
        self._db.close()


class EmbeddedProducer:
    """Appends batches to the log; one transaction per :meth:`send`."""

    def __init__(self, path: Path, busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
                 max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES, retention_ms: int = DEFAULT_RETENTION_MS,
                 offsets_retention_ms: int = DEFAULT_OFFSETS_RETENTION_MS) -> None:
        self._db = _Db(path, busy_timeout)
        self.max_record_bytes = max_record_bytes
        self.retention_ms = retention_ms
        self.offsets_retention_ms = offsets_retention_ms
        self._next_retention = time.monotonic() + RETENTION_CHECK_INTERVAL
        self._topics: dict[str, list[int]] = {}
        self._since_checkpoint = 0

    def _checkpoint(self) -> None:
        """Restart the WAL from its beginning. With readers polling all the time SQLite's automatic
        (passive) checkpoints never get to restart it, and the WAL file would grow with the whole log."""
        self._since_checkpoint = 0
        with self._db.lock:
            try:
                self._db.conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
            except sqlite3.Error as exc:  # not fatal: the next one will do
                log.debug("embedded log checkpoint: %s", exc)

    def _pids(self, topic: str) -> list[int]:
        pids = self._topics.get(topic)
        if pids is None:
            pids = _topic_pids(self._db, topic)
            if pids is None:
                raise ConfigError(f"topic {topic!r} does not exist; create it first (payevents topics create)")
            self._topics[topic] = pids  # a topic's partition count never changes
        return pids

    def _refusal(self, r: Record) -> str | None:
        """Why Kafka would refuse ``r`` for good (an invalid topic name, larger than message.max.bytes)."""
        problem = topic_name_problem(r.topic)
        if problem is None and (size := record_size(r)) > self.max_record_bytes:
            problem = (f"record of {size} bytes is larger than the producer's message.max.bytes "
                       f"({self.max_record_bytes}): MSG_SIZE_TOO_LARGE")
        return problem

    def send(self, records: Sequence[Record]) -> list[Delivery]:
        if not records:
            return []
        enc = _enc_headers.encode
        encoded = [enc(r.headers) if r.headers else None for r in records]
        refused: dict[int, str] = {}
        legal: dict[str, bool] = {}
        limit = self.max_record_bytes
        for i, (r, h) in enumerate(zip(records, encoded, strict=True)):
            ok = legal.get(r.topic)
            if ok is None:
                ok = legal[r.topic] = topic_name_problem(r.topic) is None
            # the encoded headers are at least as long as the header bytes counted: a record within the
            # limit with them is within it without them (the exact count only for those near the limit)
            if ok and len(r.value) + len(r.key or b"") + (len(h) if h else 0) <= limit:
                continue
            if (why := self._refusal(r)) is not None:
                refused[i] = why
        if refused:
            keep = [i for i in range(len(records)) if i not in refused]
            sent = self.send([records[i] for i in keep]) if keep else []
            deliveries: list[Delivery | None] = [None] * len(records)
            for i, d in zip(keep, sent, strict=True):
                deliveries[i] = d
            raise RecordsRefused(refused, deliveries)
        targets: list[tuple[int, int]] = []  # (pid, partition) per record
        for r in records:
            pids = self._pids(r.topic)
            n = len(pids)
            if r.partition is not None:
                if not 0 <= r.partition < n:
                    raise ConfigError(f"partition: {r.partition} is not a partition of {r.topic!r} (0..{n - 1})")
                p = r.partition
            elif r.key is not None:
                p = partition_for(r.key, n)
            else:
                p = random.randrange(n)
            targets.append((pids[p], p))
        distinct = sorted({pid for pid, _ in targets})
        ts = int(time.time() * 1000)
        with self._db.tx("send") as conn:
            marks = ",".join("?" * len(distinct))
            nxt = dict(conn.execute(f"SELECT id, next_offset FROM partitions WHERE id IN ({marks})",
                                    distinct).fetchall())
            rows = []
            offsets = []
            for r, h, (pid, _) in zip(records, encoded, targets, strict=True):
                o = nxt[pid]
                nxt[pid] = o + 1
                offsets.append(o)
                rows.append(((pid << OFFSET_BITS) | o, r.key, r.value, h, ts))
            conn.executemany("INSERT INTO log (id, key, value, headers, ts) VALUES (?, ?, ?, ?, ?)", rows)
            conn.executemany("UPDATE partitions SET next_offset = ? WHERE id = ?", [(o, pid) for pid, o in nxt.items()])
        acked = time.time()
        self._since_checkpoint += len(records)
        if time.monotonic() >= self._next_retention:
            self._next_retention = time.monotonic() + RETENTION_CHECK_INTERVAL
            try:
                enforce_retention(self._db, self.retention_ms, None, self.offsets_retention_ms)
            except TransientError as exc:  # not fatal: the next check will do
                log.debug("embedded log retention: %s", exc)
        if self._since_checkpoint >= CHECKPOINT_EVERY:
            self._checkpoint()
        return [Delivery(r.topic, p, o, acked) for r, (_, p), o in zip(records, targets, offsets, strict=True)]

    def close(self) -> None:
        self._db.close()


def _assign(members: list[tuple[str, set[str]]], partitions: list[tuple[int, str]],
            owners: Mapping[int, str]) -> dict[int, str]:
    """Balanced, sticky, deterministic assignment of partitions (pid, topic) to members, per topic.

    Each eligible member gets ``n // m`` or ``n // m + 1`` of a topic's ``n`` partitions; members keep
    what they own (``owners``) up to that quota, so a join or leave moves as few partitions as possible."""
    out: dict[int, str] = {}
    by_topic: dict[str, list[int]] = {}
    for pid, topic in partitions:
        by_topic.setdefault(topic, []).append(pid)
    for t_index, (topic, pids) in enumerate(sorted(by_topic.items())):
        eligible = [m for m, topics in members if topic in topics]
        if not eligible:
            continue
        current = {m: [pid for pid in pids if owners.get(pid) == m] for m in eligible}
        base, extra = divmod(len(pids), len(eligible))
        # the "extra" slots go to members already holding the most (fewest moves), then rotate per topic
        order = sorted(range(len(eligible)), key=lambda i: (-len(current[eligible[i]]), (i - t_index) % len(eligible)))
        quota = {eligible[i]: base + (1 if rank < extra else 0) for rank, i in enumerate(order)}
        free: list[int] = []
        taken: dict[str, int] = dict.fromkeys(eligible, 0)
        for pid in pids:
            owner = owners.get(pid)
            if owner in quota and taken[owner] < quota[owner]:
                out[pid] = owner
                taken[owner] += 1
            else:
                free.append(pid)
        for m in eligible:
            while taken[m] < quota[m] and free:
                out[free.pop(0)] = m
                taken[m] += 1
    return out


class EmbeddedConsumer:
    """A member of a consumer group on the embedded log."""

    def __init__(self, path: Path, group: str, topics: Sequence[str], *, from_beginning: bool = True,
                 session_timeout: float = DEFAULT_SESSION_TIMEOUT,
                 heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
                 busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> None:
        if not group:
            raise ConfigError("group: a consumer group id must not be empty")
        if not topics:
            raise ConfigError("topics: a consumer needs at least one topic")
        self._db = _Db(path, busy_timeout)
        self.group = group
        self.topics = tuple(dict.fromkeys(topics))
        self.from_beginning = from_beginning
        self.session_timeout = session_timeout
        self.heartbeat_interval = min(heartbeat_interval, session_timeout / 3)
        pid = os.getpid()
        self.member_id = f"{_HOST}|{pid}|{_process_start(pid) or '?'}|{uuid.uuid4().hex[:12]}"
        self._topics_text = "\n".join(self.topics)
        self._assigned: dict[int, TopicPartition] = {}  # pid -> (topic, partition)
        self._by_tp: dict[TopicPartition, int] = {}
        self._positions: dict[int, int] = {}
        self._starts: dict[int, int] = {}  # where reading began (lag base while nothing is committed)
        self._paused: set[int] = set()
        self._pending = False
        self._next_heartbeat = 0.0
        self._rr = 0
        self._closed = False
        self.before_revoke: Callable[[Sequence[TopicPartition]], None] | None = None
        self._heartbeat()

    # -- group membership ------------------------------------------------------------------------
    def _heartbeat(self) -> None:
        """Renew this member's lease on the group and follow the group's plan: take the partitions it gives this
        member that are free, release those it gives another. Partitions to release are first offered to
        :attr:`before_revoke`, still held (its commits count), then released by a second pass."""
        held = self._beat(hold=self.before_revoke is not None)
        if held and self.before_revoke is not None:
            try:
                self.before_revoke(held)
            finally:
                self._beat(hold=False)

    def _beat(self, *, hold: bool) -> list[TopicPartition]:
        """One heartbeat; with ``hold``, the partitions to release are kept and returned instead."""
        now = time.time()
        g = self.group
        with self._db.tx("heartbeat") as conn:
            conn.execute("INSERT INTO members (grp, member, topics, expires) VALUES (?, ?, ?, ?) "
                         "ON CONFLICT (grp, member) DO UPDATE SET expires = excluded.expires, topics = excluded.topics",
                         (g, self.member_id, self._topics_text, now + self.session_timeout))
            rows = conn.execute("SELECT member, topics, expires FROM members WHERE grp = ? ORDER BY member",
                                (g,)).fetchall()
            dead = [m for m, _, exp in rows
                    if m != self.member_id and (exp < now or _member_alive(m) is False)]
            if dead:
                conn.executemany("DELETE FROM leases WHERE grp = ? AND member = ?", [(g, m) for m in dead])
                conn.executemany("DELETE FROM members WHERE grp = ? AND member = ?", [(g, m) for m in dead])
            gone = set(dead)
            members = [(m, set(t.split("\n"))) for m, t, _ in rows if m not in gone]
            wanted = sorted({t for _, ts in members for t in ts})
            marks = ",".join("?" * len(wanted))
            parts = conn.execute(f"SELECT id, topic, partition FROM partitions WHERE topic IN ({marks}) "
                                 "ORDER BY topic, partition", wanted).fetchall()
            tp_of = {pid: (topic, p) for pid, topic, p in parts}
            leases = dict(conn.execute("SELECT pid, member FROM leases WHERE grp = ?", (g,)).fetchall())
            plan = _assign(members, [(pid, t) for pid, t, _ in parts], leases)
            target = {pid for pid, m in plan.items() if m == self.member_id}
            mine = {pid for pid, m in leases.items() if m == self.member_id}
            release = mine - target
            kept: set[int] = set()
            if hold:
                kept, release = release, set()
            take = [pid for pid in target if pid not in leases]
            if release:
                conn.executemany("DELETE FROM leases WHERE grp = ? AND pid = ? AND member = ?",
                                 [(g, pid, self.member_id) for pid in release])
            if take:
                conn.executemany("INSERT INTO leases (grp, pid, member) VALUES (?, ?, ?)",
                                 [(g, pid, self.member_id) for pid in take])
            owned = (mine - release) | set(take)
            added = owned - self._assigned.keys()
            starts: dict[int, int] = {}
            if added:
                marks = ",".join("?" * len(added))
                committed = dict(conn.execute(
                    f"SELECT pid, next_offset FROM offsets WHERE grp = ? AND pid IN ({marks})",
                    [g, *added]).fetchall())
                bounds = {pid: (start, end) for pid, start, end in conn.execute(
                    f"SELECT id, start_offset, next_offset FROM partitions WHERE id IN ({marks})",
                    list(added)).fetchall()}
                for pid in added:
                    c = committed.get(pid)
                    first, end = bounds[pid]
                    starts[pid] = c if c is not None else (first if self.from_beginning else end)
        revoked = self._assigned.keys() - owned
        for pid in revoked:
            tp = self._assigned.pop(pid)
            self._by_tp.pop(tp, None)
            self._positions.pop(pid, None)
            self._starts.pop(pid, None)
            self._paused.discard(pid)
        for pid in added:
            tp = tp_of[pid]
            self._assigned[pid] = tp
            self._by_tp[tp] = pid
            self._positions[pid] = self._starts[pid] = starts[pid]
        if revoked or added:
            log.debug("group %s member %s: +%s -%s", g, self.member_id, sorted(added), sorted(revoked))
        self._pending = len(owned) < len(target)
        interval = PENDING_HEARTBEAT_INTERVAL if self._pending else self.heartbeat_interval
        self._next_heartbeat = time.monotonic() + interval
        return sorted(self._assigned[pid] for pid in kept if pid in self._assigned)

    def _maybe_heartbeat(self) -> None:
        if time.monotonic() >= self._next_heartbeat:
            self._heartbeat()

    # -- consuming -------------------------------------------------------------------------------
    def _fetch(self, max_records: int) -> list[Message]:
        active = [pid for pid in self._assigned if pid not in self._paused]
        if not active:
            return []
        self._rr = (self._rr + 1) % len(active)
        active = active[self._rr:] + active[:self._rr]
        out: list[Message] = []
        for pid in active:
            room = max_records - len(out)
            if room <= 0:
                break
            base = pid << OFFSET_BITS
            rows = self._db.query(_FETCH, (base | self._positions[pid], base + OFFSET_MASK + 1, room), "poll")
            if rows:
                topic, partition = self._assigned[pid]
                out.extend(_messages(topic, partition, rows))
                self._positions[pid] = (rows[-1][0] & OFFSET_MASK) + 1
        return out

    def poll(self, max_records: int = 500, timeout: float = 0.5) -> list[Message]:
        self._check_open()
        deadline = time.monotonic() + max(timeout, 0.0)
        nap = 0.001
        while True:
            version = self._db.data_version()
            self._maybe_heartbeat()
            msgs = self._fetch(max_records)
            if msgs:
                return msgs
            # wait until another connection commits (data_version changes), a heartbeat is due, or timeout
            while True:
                now = time.monotonic()
                if now >= deadline:
                    return []
                if now >= self._next_heartbeat:
                    break
                time.sleep(min(nap, deadline - now, max(self._next_heartbeat - now, 0.0)))
                nap = min(nap * 2, 0.01)
                if self._db.data_version() != version:
                    nap = 0.001
                    break

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        self._check_open()
        if not offsets:
            return
        now = time.time()
        g = self.group
        wanted: dict[int, int] = {}
        unknown: list[TopicPartition] = []
        for tp, off in offsets.items():
            pid = self._by_tp.get(tp)
            if pid is None:
                unknown.append(tp)
            else:
                wanted[pid] = off
        with self._db.tx("commit") as conn:
            conn.execute("UPDATE members SET expires = ? WHERE grp = ? AND member = ?",
                         (now + self.session_timeout, g, self.member_id))
            marks = ",".join("?" * len(wanted))
            owned = {pid for (pid,) in conn.execute(
                f"SELECT pid FROM leases WHERE grp = ? AND member = ? AND pid IN ({marks})",
                [g, self.member_id, *wanted]).fetchall()} if wanted else set()
            conn.executemany(
                "INSERT INTO offsets (grp, pid, next_offset, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (grp, pid) DO UPDATE SET next_offset = excluded.next_offset, "
                "updated_at = excluded.updated_at",
                [(g, pid, off, now) for pid, off in wanted.items() if pid in owned])
        lost = unknown + [self._assigned[pid] for pid in wanted if pid not in owned]
        if lost:
            log.warning("group %s: not committing %s: no longer assigned to this member (the new owner "
                        "re-reads from the last committed offset)", g, sorted(lost))

    def committed(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int | None]:
        self._check_open()
        out: dict[TopicPartition, int | None] = {}
        for topic, partition in partitions:
            rows = self._db.query(
                "SELECT o.next_offset FROM offsets o JOIN partitions p ON p.id = o.pid "
                "WHERE o.grp = ? AND p.topic = ? AND p.partition = ?", (self.group, topic, partition))
            out[(topic, partition)] = rows[0][0] if rows else None
        return out

    def seek(self, partition: TopicPartition, offset: int) -> None:
        """Move the position of an assigned partition (ignored for a partition not assigned here)."""
        pid = self._by_tp.get(partition)
        if pid is not None:
            self._positions[pid] = max(offset, 0)

    def pause(self, partitions: Sequence[TopicPartition]) -> None:
        self._paused.update(self._by_tp[tp] for tp in partitions if tp in self._by_tp)

    def resume(self, partitions: Sequence[TopicPartition]) -> None:
        self._paused.difference_update(self._by_tp[tp] for tp in partitions if tp in self._by_tp)

    def assignment(self) -> set[TopicPartition]:
        return set(self._assigned.values())

    def position(self, partition: TopicPartition) -> int | None:
        """The next offset ``poll`` reads from an assigned partition."""
        pid = self._by_tp.get(partition)
        return None if pid is None else self._positions[pid]

    def skipped(self) -> list[Skipped]:
        """Never any: the embedded log removes a record only once every group that committed on its partition has
        committed past it (a group whose offsets expired has none, and reads from the log start)."""
        return []

    def lag(self) -> dict[TopicPartition, int]:
        if not self._assigned:
            return {}
        pids = list(self._assigned)
        marks = ",".join("?" * len(pids))
        ends = dict(self._db.query(f"SELECT id, next_offset FROM partitions WHERE id IN ({marks})", pids))
        committed = dict(self._db.query(f"SELECT pid, next_offset FROM offsets WHERE grp = ? AND pid IN ({marks})",
                                        [self.group, *pids]))
        return {self._assigned[pid]: max(ends[pid] - committed.get(pid, self._starts[pid]), 0) for pid in pids}

    def _check_open(self) -> None:
        if self._closed:
            raise ConfigError("consumer: used after close()")

    def close(self) -> None:
        """Leave the group: release every partition at once."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(TransientError), self._db.tx("leave group") as conn:
            conn.execute("DELETE FROM leases WHERE grp = ? AND member = ?", (self.group, self.member_id))
            conn.execute("DELETE FROM members WHERE grp = ? AND member = ?", (self.group, self.member_id))
        self._assigned.clear()
        self._by_tp.clear()
        self._db.close()
