"""CPU time per event of the consume path (issue #14), robust to a shared, noisy machine.

Wall-clock throughput moves with the load of whoever else uses the cores; the CPU time this process spends
(``time.process_time()``: user + system of this process only) does not, much. For each service named, a
fresh data dir gets a channel of N bench events (the bench's own generator, not timed), then the service's
``ConsumerRuntime`` consumes all of it; the figure is CPU µs per event of the consume loop (poll, decode,
seen marks, business facts, effects, commits, offsets). ``baseline`` is the raw consume+decode loop of
``payevents bench`` (raw ``sqlite3`` selects + ``decode_event``) over the same rows.

To compare two versions of the code, run the same file against each source tree, interleaved::

    for i in 1 2 3; do
      PYTHONPATH=/work/main/src .venv/bin/python tools/consume_cpu.py --n 10000 ledger invoices analytics
      .venv/bin/python tools/consume_cpu.py --n 10000 ledger invoices analytics
    done

(``PYTHONPATH`` comes before the editable install on ``sys.path``; the first output line says which
``payevents`` ran.) ``--sqlite`` also counts the CPU spent inside the database driver's statements and commits
(SQLAlchemy cursor events and ``Dialect.do_commit``), i.e. SQLite's own share on the default stores; ``--gc`` the CPU
of the garbage collector's collections (``gc.callbacks``), full and young. The loop settles its heap after the
warm-up batch as a worker process does (``runtime.heap``; a tree without it measures without).

``--lifecycle``: the channel holds what the end-to-end benchmark's services read instead — N payments written by
the payments writer (``payments.process_payments``, 500 a call) and published by the relay, four events each
(PaymentInitiated, PaymentAuthorized, PaymentCaptured, PaymentProcessed); the figures are then CPU µs per record
and per payment, the records a service passes over unread included (``baseline`` is not run in this mode).
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from consume_loop import consume_measured

#: CPU seconds inside statements and commits while measuring (``--sqlite``), and in the garbage collector's
#: collections (``--gc``: the full ones, of its oldest generation, and the young ones)
_INSIDE = {"on": 0.0, "sql": 0.0, "events": 1.0, "gc_full": 0.0, "gc_young": 0.0}


def _count_the_collector() -> None:
    import gc

    started = [0.0]

    def timed(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.process_time()
        elif _INSIDE["on"]:
            _INSIDE["gc_full" if info["generation"] == 2 else "gc_young"] += time.process_time() - started[0]

    gc.callbacks.append(timed)


def _count_inside_the_database() -> None:
    from sqlalchemy import event
    from sqlalchemy.engine import Engine
    from sqlalchemy.engine.default import DefaultDialect

    started: dict[int, float] = {}

    @event.listens_for(Engine, "before_cursor_execute")
    def _before(conn, cursor, statement, params, context, executemany):  # type: ignore[no-untyped-def]
        started[id(conn)] = time.process_time()

    @event.listens_for(Engine, "after_cursor_execute")
    def _after(conn, cursor, statement, params, context, executemany):  # type: ignore[no-untyped-def]
        if _INSIDE["on"]:
            _INSIDE["sql"] += time.process_time() - started.pop(id(conn), time.process_time())

    do_commit = DefaultDialect.do_commit

    def _commit(self, dbapi_connection):  # type: ignore[no-untyped-def]
        t = time.process_time()
        do_commit(self, dbapi_connection)
        if _INSIDE["on"]:
            _INSIDE["sql"] += time.process_time() - t

    DefaultDialect.do_commit = _commit  # type: ignore[method-assign]


def _consume(settings: object, name: str, n: int) -> float:
    cpu = {"start": 0.0, "used": 0.0}

    def start() -> None:
        cpu["start"] = time.process_time()
        _INSIDE.update(on=1.0, sql=0.0, gc_full=0.0, gc_young=0.0)

    def end() -> None:
        cpu["used"] = time.process_time() - cpu["start"]
        _INSIDE["on"] = 0.0

    counted, _batches = consume_measured(settings, name, n, start, end)
    _INSIDE["events"] = counted
    return cpu["used"] / counted * 1e6


def _lifecycle_channel(settings: object, payments: int) -> None:
    """The channel of ``settings`` filled as the end-to-end run fills it: ``payments`` payments written by the
    payments writer, then published by the relay (neither measured)."""
    import logging

    from payevents.bench.events import run_id
    from payevents.bench.suites import payment_specs, write_payments
    from payevents.runtime.relay import Relay

    logging.getLogger("payevents.relay").setLevel(logging.ERROR)  # events written long before they are published
    write_payments(settings, payment_specs(payments, run_id()))  # type: ignore[arg-type]
    with Relay(settings) as relay:  # type: ignore[arg-type]
        relay.ensure_topics()
        while relay.publish_pending():
            pass


def _baseline(data_dir: Path, n: int) -> float:
    from payevents.contracts.codec import decode_event

    conn = sqlite3.connect(data_dir / "channel.db")
    start = time.process_time()
    seen = 0
    last = -1
    while True:
        rows = conn.execute("SELECT id, value FROM log WHERE id > ? ORDER BY id LIMIT 500",
                            (last,)).fetchall()
        if not rows:
            break
        for row in rows:
            decode_event(row[1])
        last = rows[-1][0]
        seen += len(rows)
    cpu = time.process_time() - start
    conn.close()
    return cpu / max(seen, 1) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--sqlite", action="store_true", help="also the CPU inside statements and commits")
    ap.add_argument("--gc", action="store_true", help="also the CPU in the garbage collector's collections")
    ap.add_argument("--lifecycle", action="store_true",
                    help="N payments' four lifecycle events each, as the end-to-end run's services read them")
    ap.add_argument("services", nargs="*",
                    help="default: baseline ledger invoices analytics (with --lifecycle, without the baseline)")
    args = ap.parse_args()
    if args.lifecycle and "baseline" in args.services:
        ap.error("--lifecycle: the baseline is measured on the bench's PaymentProcessed events only")
    args.services = args.services or [*([] if args.lifecycle else ["baseline"]), "ledger", "invoices", "analytics"]

    import payevents
    from payevents.bench.events import make_events, run_id
    from payevents.bench.suites import fill_channel, seed_customers
    from payevents.contracts.channel import Env
    from payevents.settings import Settings
    from payevents.store.db import dispose_engines

    print(f"# payevents from {Path(payevents.__file__).parent}", flush=True)
    if args.sqlite:
        _count_inside_the_database()
    if args.gc:
        _count_the_collector()
    events = [] if args.lifecycle else make_events(args.n, env="dev", run=run_id())
    with tempfile.TemporaryDirectory(prefix="consume-cpu-") as tmp:
        for i, name in enumerate(args.services):
            settings = Settings(env=Env.dev, data_dir=Path(tmp) / f"{i}-{name}")
            if args.lifecycle:
                _lifecycle_channel(settings, args.n)
            else:
                fill_channel(settings, events)
            if name == "notifications":
                seed_customers(settings)
            if name == "baseline":
                us = _baseline(settings.data_dir, args.n)
            else:
                # until every record is consumed (the first batch, a warm-up, is not measured)
                us = _consume(settings, name, 4 * args.n if args.lifecycle else args.n)
            dispose_engines()
            per = _INSIDE["sql"] / _INSIDE["events"] * 1e6
            inside = f"   of it in statements + commits {per:6.1f}" if args.sqlite else ""
            if args.gc and name != "baseline":
                full, young = (_INSIDE[k] / _INSIDE["events"] * 1e6 for k in ("gc_full", "gc_young"))
                inside += f"   in the collector: full {full:5.2f}, young {young:5.2f}"
            if args.lifecycle:
                print(f"{name:14s} {us:8.1f} µs CPU/record   {us * 4:8.1f} µs CPU/payment{inside}", flush=True)
            else:
                print(f"{name:14s} {us:8.1f} µs CPU/event{inside}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
