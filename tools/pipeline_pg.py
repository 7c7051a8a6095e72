"""How far one thread can overlap a consumer's client work with PostgreSQL's (issue #14, the ledger on PostgreSQL).

Today a batch's client work and the server's work on it run one after the other (``tools/consume_pg.py``: the wall
is the client's CPU plus the server's), and a second thread gained nothing (the interpreter lock; see
``docs/benchmarks.md``). This tool measures the other way: **one thread, libpq's pipeline mode**. For N bench
PaymentProcessed events on fresh ledger tables (the runtime's migrations, a unique PostgreSQL schema, dropped
after) it writes, per batch of 500, the rows the runtime writes per event — a seen mark, a business fact, the
entry's two lines, the entry — after the client work the runtime does for them (decode + validate, the fact's
content, ``journal.decide``, the entry id, the rows). Four ways, in the order given:

* ``copy``: as the runtime does today: one COPY per table, then COMMIT, each waited for;
* ``pipelined``: the batch's client work first; then its lookups (seen marks, facts, payments already posted: the
  three the ledger's batch needs, each answered empty here) sent behind the previous batch's writes and waited
  for; then its writes (one ``INSERT … SELECT FROM unnest(arrays)`` per table) and COMMIT sent **without waiting**:
  the server writes batch k while the client works on batch k+1, and batch k's results are read just before batch
  k+1's lookups (an error there would fail batch k before anything of k+1 is sent). The batch is decided before
  its lookups answer, as if they find nothing (every bench event is new; the tool checks that they found nothing);
* ``after``: ``pipelined``, but the batch decided once its lookups answered (only decode + validate before them),
  as the runtime and the ledger decide today;
* ``bound``: ``pipelined`` without the lookups (what overlapping could give at most).

Per event it prints the client's CPU, the server backend's CPU and the wall, as ``consume_pg.py`` does. It is a
bound for a design, not the runtime: no poll, no offsets, no SQLAlchemy; compare its modes within one run::

    .venv/bin/python tools/pipeline_pg.py --n 20000 copy pipelined after bound copy pipelined after bound
"""

from __future__ import annotations

import argparse
import importlib
import os
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import consume_pg

BATCH = 500
_INTS = {"partition_no", "offset_no", "absorbed", "line_no", "amount_minor", "legacy", "line_count"}
_LOOKUPS = (  # the shape of runtime.bulk.lookup on PostgreSQL: one index probe per key
    ("processed_events", "service = 'ledger' AND event_id = k.key LIMIT 1", 0),
    ("business_facts", "service = 'ledger' AND payment_id = k.key OFFSET 0", 1),
    ("journal_entries", "kind = 'payment' AND payment_id = k.key LIMIT 1", 1),
)

Table = tuple[str, Sequence[str], list[tuple[Any, ...]]]


def _decode(batch: Sequence[Any]) -> list[Any]:
    """Decode + validate, as the runtime's ``_decode`` does (a bench event is never refused)."""
    from payevents.runtime.deadletter import record_problem

    out = []
    for ev in batch:
        decoded, reason = record_problem(ev.value, ev.key, ev.headers)
        if decoded is None:
            raise RuntimeError(f"bench event refused: {reason}")
        out.append(decoded)
    return out


def _rows(decoded: Sequence[Any], first_offset: int) -> list[Table]:
    """The rest of a batch's client work (the facts' content, ``journal.decide``, the entry ids) and the rows it
    writes, every event new: nothing is looked up here."""
    from payevents.runtime import facts
    from payevents.runtime.consumer import _MARK_COLUMNS

    journal = importlib.import_module("payevents.services.ledger.journal")
    now = datetime.now(UTC).isoformat()
    marks, fact_rows, postings = [], [], []
    for i, d in enumerate(decoded):
        marks.append(("ledger", d.event_id, d.event_type, "applied", "t", 0, first_offset + i, now, None))
        key = facts.fact_key(d)
        assert key is not None
        fact_rows.append(("ledger", key[0], key[1], d.event_id, facts.encode_content(facts.content_of(d)), 0, now))
        postings.append(journal.decide(d, None))
    for p in postings:
        journal.check_balanced(p.lines)
    ids = [journal._entry_id(p.event_id) for p in postings]
    lines = [(eid, i, ln.account, ln.currency, ln.side, ln.amount_minor)
             for eid, p in zip(ids, postings, strict=True) for i, ln in enumerate(p.lines, start=1)]
    entries = [(eid, p.event_id, p.payment_id, p.kind, p.description, int(p.legacy), len(p.lines),
                p.occurred_at.isoformat(), now, p.corrects) for eid, p in zip(ids, postings, strict=True)]
    return [("processed_events", _MARK_COLUMNS, marks), ("business_facts", facts.FACT_COLUMNS, fact_rows),
            ("journal_lines", journal._LINE_COLUMNS, lines), ("journal_entries", journal._ENTRY_COLUMNS, entries)]


def _insert(table: str, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> tuple[bytes, list[bytes]]:
    """The runtime's own ``INSERT … SELECT * FROM unnest($1::type[], …)`` of deferred rows (``runtime.bulk``), the
    columns typed ``bigint`` or ``text`` (the runtime reads the table's types from the catalog)."""
    from payevents.runtime import bulk

    sql, params = bulk.unnest_insert(bulk.Deferred(table, tuple(columns), list(rows), None),
                                     {c: "bigint" if c in _INTS else "text" for c in columns})
    return sql.encode(), [p.encode() for p in params]


class _Pipeline:
    """libpq's pipeline mode on one connection: send now, read the results at the next :meth:`results`."""

    def __init__(self, pgconn: Any) -> None:
        self.pg = pgconn
        self.pending = False

    def send(self, statements: Sequence[tuple[bytes, Sequence[bytes] | None]]) -> None:
        for sql, params in statements:
            self.pg.send_query_params(sql, params)
        self.pg.pipeline_sync()
        while self.pg.flush() == 1:
            pass
        self.pending = True

    def results(self) -> int:
        """Wait for what was sent; returns the rows the queries found (raises on an error)."""
        from psycopg import pq

        found = 0
        while self.pending:
            r = self.pg.get_result()
            if r is None:
                continue
            if r.status == pq.ExecStatus.PIPELINE_SYNC:
                self.pending = False
            elif r.status == pq.ExecStatus.TUPLES_OK:
                found += r.ntuples
            elif r.status != pq.ExecStatus.COMMAND_OK:
                raise RuntimeError(r.error_message.decode(errors="replace"))
        return found


def _run(mode: str, settings: Any, events: Sequence[Any]) -> None:
    from payevents.contracts.money import MINOR_UNITS
    from payevents.runtime.consumer import ConsumerRuntime
    from payevents.services import load_service
    from payevents.store.sql import pg_array

    journal = importlib.import_module("payevents.services.ledger.journal")
    rt = ConsumerRuntime(settings, load_service("ledger"))  # the ledger's and the runtime's migrations
    raw = rt.engine.raw_connection()
    conn: Any = raw.driver_connection
    conn.autocommit = True
    for code, (name, kind) in journal.ACCOUNTS.items():  # write() ensures them once per transaction: here before
        for currency in MINOR_UNITS:
            conn.execute("INSERT INTO ledger_accounts (code, currency, name, kind, created_at)"
                         " VALUES (%s, %s, %s, %s, '2026-01-01') ON CONFLICT DO NOTHING", (code, currency, name, kind))
    lookups = [f"SELECT 1 FROM unnest($1::text[]) AS k(key) CROSS JOIN LATERAL (SELECT 1 FROM {t} WHERE {w}) AS x"
               .encode() for t, w, _ in _LOOKUPS]
    cur = conn.cursor()
    pipe = _Pipeline(conn.pgconn)
    pid = conn.info.backend_pid
    n = len(events)
    c0, s0, w0 = time.process_time(), consume_pg._cpu_of(pid), time.perf_counter()
    if mode != "copy":
        conn.pgconn.enter_pipeline_mode()
    for b in range(0, n, BATCH):
        decoded = _decode(events[b : b + BATCH])
        if mode == "copy":
            cur.execute("BEGIN")
            for table, columns, rows in _rows(decoded, b):
                with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
            cur.execute("COMMIT")
            continue
        writes = [] if mode == "after" else [_insert(t, c, r) for t, c, r in _rows(decoded, b)]
        pipe.results()  # the previous batch's writes and commit
        begin: list[tuple[bytes, Sequence[bytes] | None]] = [(b"BEGIN", None)]
        if mode != "bound":
            keys = [[d.event_id for d in decoded], [d.payment_id for d in decoded]]
            pipe.send([*begin, *((sql, [pg_array(keys[lk[2]]).encode()])
                                 for sql, lk in zip(lookups, _LOOKUPS, strict=True))])
            if pipe.results():
                raise RuntimeError("a lookup found a row: every bench event is new")
            begin = []
        if mode == "after":  # decided once the lookups answered, as the runtime does today
            writes = [_insert(t, c, r) for t, c, r in _rows(decoded, b)]
        pipe.send([*begin, *((sql, params) for sql, params in writes), (b"COMMIT", None)])
    if mode != "copy":
        pipe.results()
        conn.pgconn.exit_pipeline_mode()
    c1, s1, w1 = time.process_time(), consume_pg._cpu_of(pid), time.perf_counter()
    entries = conn.execute("SELECT count(*) FROM journal_entries").fetchone()[0]
    if entries != n:
        raise RuntimeError(f"{mode}: {entries} entries for {n} events")
    print(f"{mode:10s} client {(c1 - c0) / n * 1e6:6.1f}  server {(s1 - s0) / n * 1e6:6.1f}  wall"
          f" {(w1 - w0) / n * 1e6:6.1f} µs/event  ({n / (w1 - w0):,.0f}/s)", flush=True)
    raw.close()
    rt.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("modes", nargs="*", metavar="copy|pipelined|after|bound",
                    default=["copy", "pipelined", "after", "bound"])
    args = ap.parse_args()
    for mode in args.modes:
        if mode not in ("copy", "pipelined", "after", "bound"):
            ap.error(f"{mode!r}: not one of copy, pipelined, after, bound")

    import payevents
    from payevents.bench.events import make_events, run_id
    from payevents.contracts.channel import Env
    from payevents.settings import Settings

    print(f"# payevents from {Path(payevents.__file__).parent}; load {os.getloadavg()[0]:.2f}", flush=True)
    events = make_events(args.n, env="dev", run=run_id())
    with consume_pg.postgresql_schemas("ppl") as prefix, \
            tempfile.TemporaryDirectory(prefix="pipeline-pg-", ignore_cleanup_errors=True) as tmp:
        for i, mode in enumerate(args.modes):
            settings = Settings(env=Env.dev, data_dir=Path(tmp) / f"{i}", database_url=consume_pg.PG_URL,
                                db_schema_prefix=f"{prefix}{i}_")
            _run(mode, settings, events)


if __name__ == "__main__":
    main()
