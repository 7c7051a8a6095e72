"""SQLite's write lock, taken promptly: the one way every writer of a SQLite file here begins a write transaction
that takes the lock up front (``BEGIN IMMEDIATE``): the stores' writers (``store.db.writer``) and the embedded
log's (``transport.embedded``).

SQLite lets one writer in at a time and makes the others wait in its busy handler, which sleeps longer and longer
between tries (1, 2, 5, 10, … up to 100 ms) and has no queue. A writer that takes the lock again within a
millisecond of releasing it — the payments writer under load, a consumer's next batch — then wins nearly every
time against one that sleeps: measured (2026-12-02), the relay's marks waited up to 1.5 s for a lock that was free
about a tenth of the time, until ``max_inflight`` sends were unmarked and the relay stopped sending; the publish
delay p99 at 2,000 payments/s went to 300–1,900 ms. Here a waiting writer tries again every
:data:`POLL_S` instead (with SQLite's own wait off for the try), until its busy timeout has passed."""

from __future__ import annotations

import sqlite3
import time
from typing import Final

#: how long a writer waiting for the lock sleeps between tries (s). A writer lets the lock go for a few
#: milliseconds between its transactions (the payments writer validates its next call's payments first); every
#: 0.5 ms cost the relay ~0.1 ms of CPU a payment in the end-to-end benchmark (its marks waiting on the writer),
#: every 2 ms nothing measurable
POLL_S: Final = 0.002


def begin_immediate(conn: sqlite3.Connection, timeout_s: float) -> None:
    """``BEGIN IMMEDIATE`` on ``conn`` (autocommit mode: no transaction open), trying every :data:`POLL_S` while
    another connection holds the write lock, for up to ``timeout_s``; then the ``sqlite3.OperationalError``
    ("database is locked") SQLite gives. ``conn``'s busy timeout is ``timeout_s`` again afterwards."""
    conn.execute("PRAGMA busy_timeout=0")
    try:
        deadline: float | None = None
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
                    raise
                now = time.monotonic()
                if deadline is None:
                    deadline = now + timeout_s
                elif now >= deadline:
                    raise
                time.sleep(POLL_S)
    finally:
        conn.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")
