"""The limits: raw loops on the same broker and the same events, doing nothing but move and decode bytes.

* Kafka: a confluent-kafka produce loop (idempotent, acks=all, murmur2_random — the settings our
  transport uses) and a consume loop that only decodes each value.
* Embedded: raw ``sqlite3`` inserts of the same rows (batched, WAL, synchronous=NORMAL — the pragmas of
  our stores) and batched selects of them per partition, decoding each value.
* Files: what one e-mail's file costs the filesystem right now (:func:`maildir_files`), the drain's tail.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from payevents.bench.events import BenchEvent

BATCH = 500


def _decoder() -> Callable[[bytes], Any]:
    from payevents.contracts.codec import decode_event

    return decode_event


# -- Kafka -------------------------------------------------------------------------------------------


def kafka_create_topic(bootstrap: str, topic: str, partitions: int, timeout: float = 15.0) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    for fut in futures.values():
        fut.result(timeout=timeout)


def kafka_produce(
    bootstrap: str, topic: str, events: Sequence[BenchEvent], extra: Mapping[str, str] | None = None
) -> float:
    """Produce every event (after one warm-up record) and wait for all acknowledgements; events/s."""
    from confluent_kafka import KafkaException, Producer

    conf: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "partitioner": "murmur2_random",
        "linger.ms": 5,
        "message.timeout.ms": 30000,
    }
    conf.update({k: v for k, v in (extra or {}).items() if not k.startswith(("session.", "heartbeat.", "fetch."))})
    producer = Producer(conf)
    failed: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            failed.append(str(err))

    # warm-up outside the timed loop: connection, metadata and the idempotent producer id (one record that
    # the consume loop reads too)
    producer.produce(topic, events[0].value, events[0].key, headers=list(events[0].headers), on_delivery=on_delivery)
    producer.flush(30)
    start = time.perf_counter()
    for ev in events:
        while True:
            try:
                producer.produce(topic, ev.value, ev.key, headers=list(ev.headers), on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    remaining = producer.flush(60)
    elapsed = time.perf_counter() - start
    if remaining or failed:
        raise KafkaException(f"raw produce: {remaining} unacknowledged, {len(failed)} failed ({failed[:1]})")
    return len(events) / elapsed


def kafka_consume(bootstrap: str, topic: str, n: int, extra: Mapping[str, str] | None = None,
                  timeout: float = 120.0) -> float:
    """Consume ``n`` records from the beginning with a fresh group, decoding each; events/s counted
    from the first record (the group join is not part of the rate)."""
    from confluent_kafka import Consumer

    from payevents.localkafka import bench_kafka_config
    from payevents.transport.kafka import CONSUMER_DEFAULTS

    conf: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "group.id": f"bench-raw-{uuid.uuid4().hex[:8]}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "fetch.wait.max.ms": CONSUMER_DEFAULTS["fetch.wait.max.ms"],  # the services' consumers fetch so
        **bench_kafka_config(),
        **(extra or {}),
    }
    decode = _decoder()
    consumer = Consumer(conf)
    consumer.subscribe([topic])
    seen = 0
    first: float | None = None
    deadline = time.monotonic() + timeout
    try:
        while seen < n and time.monotonic() < deadline:
            # consume() waits for a full batch or the timeout: short once records flow, so the last
            # partial batch is not timed as waiting
            msgs = consumer.consume(BATCH, 0.5 if first is None else 0.01)
            if not msgs:
                continue
            if first is None:
                first = time.perf_counter()
            for m in msgs:
                value = m.value()
                if m.error() is not None or value is None:
                    continue
                decode(value)
                seen += 1
        end = time.perf_counter()
    finally:
        consumer.close()
    if seen < n or first is None:
        raise TimeoutError(f"raw consume: {seen} of {n} records within {timeout}s")
    return n / max(end - first, 1e-9)


# -- embedded (raw SQLite) ------------------------------------------------------------------------------


def _sqlite(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS log (partition INTEGER NOT NULL, offset INTEGER NOT NULL, key BLOB,"
        " value BLOB, headers BLOB, ts INTEGER NOT NULL, PRIMARY KEY (partition, offset))"
    )
    return conn


def _headers_blob(ev: BenchEvent) -> bytes:
    return b"\n".join(k.encode() + b"=" + v for k, v in ev.headers)


def sqlite_insert(path: Path, events: Sequence[BenchEvent], partitions: int) -> float:
    """Insert the events as log rows, ``BATCH`` rows per transaction; rows/s."""
    conn = _sqlite(path)
    next_offset = [0] * partitions
    start = time.perf_counter()
    for i in range(0, len(events), BATCH):
        rows = []
        now = int(time.time() * 1000)
        for ev in events[i : i + BATCH]:
            p = zlib.crc32(ev.key or b"") % partitions
            rows.append((p, next_offset[p], ev.key, ev.value, _headers_blob(ev), now))
            next_offset[p] += 1
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO log VALUES (?, ?, ?, ?, ?, ?)", rows)
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return len(events) / elapsed


def sqlite_select(path: Path, n: int, partitions: int) -> float:
    """Read every row back in ``BATCH``-row selects per partition, decoding each value; rows/s."""
    conn = _sqlite(path)
    decode = _decoder()
    pos = [0] * partitions
    seen = 0
    start = time.perf_counter()
    while seen < n:
        progressed = False
        for p in range(partitions):
            rows = conn.execute(
                "SELECT offset, key, value, headers, ts FROM log WHERE partition = ? AND offset >= ?"
                " ORDER BY offset LIMIT ?",
                (p, pos[p], BATCH),
            ).fetchall()
            for row in rows:
                decode(row[2])
            if rows:
                pos[p] = rows[-1][0] + 1
                seen += len(rows)
                progressed = True
        if not progressed:
            break
    elapsed = time.perf_counter() - start
    conn.close()
    if seen < n:
        raise RuntimeError(f"raw select: read {seen} of {n} rows")
    return n / elapsed


# -- files (a Maildir's) ------------------------------------------------------------------------------


def maildir_files(directory: Path, n: int, size: int = 4096) -> float:
    """CPU µs (user + system) per file of ``n`` files of ``size`` bytes written by the delivery's own Maildir writer
    (:class:`~payevents.services.notifications.delivery.MaildirMailer`: a file made without a name in ``new/``,
    written, linked there under its name) and one ``os.sync`` after them, with no rendering or marks: what a file
    costs this filesystem at this moment. The files stay (they go with the run's directory).

    The cost is mostly the kernel's and is not constant: on ext4 without a journal (this machine's), an inode
    freed within the last 60 s (up to 360 s while its inode-table block is unwritten) is not reused, and every
    new file's allocation walks past each such inode of its block group — after a clean-up of many files, a file
    costs up to ten times as much for about a minute (``docs/architecture.md``, "Measured on 2026-12-03 and not
    adopted")."""
    from payevents.services.notifications.delivery import MaildirMailer, Outgoing

    mailer = MaildirMailer(directory)
    data = b"x" * size
    started = time.process_time()
    try:
        for i in range(n):
            mailer.send(Outgoing(key=f"{i:08d}.raw", recipient="", data=data, first_attempt=True))
    finally:
        mailer.close()  # a failed write is raised here; else the files are synced
    return (time.process_time() - started) / n * 1e6
