"""Where a service's consume time goes on PostgreSQL (issue #14): client CPU, server CPU, round trips.

For each service named, a fresh channel of N bench events on the embedded log (the bench's own generator, not
timed) is consumed by the service's ``ConsumerRuntime`` against unique PostgreSQL schemas (dropped after). Per
event it prints:

* ``client``: CPU µs of this process (``time.process_time()``) in the consume loop;
* ``server``: CPU µs of the PostgreSQL backends serving this process's connections (``/proc/<pid>/stat`` of
  each backend pid; the server must run on this host and its processes be readable). WAL writer and
  checkpointer work is not in it;
* ``wall``: wall µs (moves with the machine's load; the two CPU figures do not, much);
* ``stmts``/``copies`` per batch: statements the driver ran (SQLAlchemy cursor events) and COPYs
  (``runtime.bulk``), i.e. the client–server exchanges a batch costs besides BEGIN/COMMIT.

Run it against another source tree with ``PYTHONPATH`` (the first line says which ``payevents`` ran)::

    PYTHONPATH=/work/main/src .venv/bin/python tools/consume_pg.py --n 10000 ledger
    .venv/bin/python tools/consume_pg.py --n 10000 ledger
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from consume_loop import consume_measured

PG_URL = os.environ.get("PAYEVENTS_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
_count = {"stmts": 0, "copies": 0}


def _server_cpu() -> float:
    """CPU seconds of the live backends of this process's connections (``payevents.bench.servers``)."""
    from payevents.bench.servers import backends_cpu

    return sum(backends_cpu().values())


def pg_options(prefix: str | None) -> dict[str, str]:
    """The ``Settings`` options that put every service's database on :data:`PG_URL` under ``prefix`` (None: none,
    SQLite stays)."""
    return {} if prefix is None else {"database_url": PG_URL, "db_schema_prefix": prefix}


@contextmanager
def postgresql_schemas(tag: str) -> Iterator[str]:
    """A schema prefix (``tag``, then a random part) unique to this run on :data:`PG_URL`, this process's backends
    measured from now on (:func:`_server_cpu`); every schema under the prefix is dropped after. The measuring tools
    that run on PostgreSQL (this one, ``publish_cpu.py``, ``mailbench.py``) share it."""
    from payevents.bench.core import drop_schemas

    _instrument()
    prefix = f"{tag}{uuid.uuid4().hex[:8]}_"
    try:
        yield prefix
    finally:
        drop_schemas(PG_URL, prefix)


def _instrument() -> None:
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from payevents.bench.servers import track_backends
    from payevents.runtime import bulk

    track_backends()

    @event.listens_for(Engine, "before_cursor_execute")
    def _before(*_a: Any) -> None:
        _count["stmts"] += 1

    copy = bulk._copy

    def _copy(*a: Any, **k: Any) -> None:
        _count["copies"] += 1
        copy(*a, **k)

    bulk._copy = _copy  # type: ignore[assignment]


def _consume(settings: Any, name: str, n: int) -> tuple[float, float, float, float, float, int]:
    marks: dict[str, tuple[float, float, float]] = {}

    def start() -> None:
        _count.update(stmts=0, copies=0)
        marks["start"] = (time.process_time(), _server_cpu(), time.perf_counter())

    def end() -> None:
        marks["end"] = (time.process_time(), _server_cpu(), time.perf_counter())

    k, nb = consume_measured(settings, name, n, start, end)
    (c0, s0, w0), (c1, s1, w1) = marks["start"], marks["end"]
    return ((c1 - c0) / k * 1e6, (s1 - s0) / k * 1e6, (w1 - w0) / k * 1e6, _count["stmts"] / nb,
            _count["copies"] / nb, nb)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--profile", type=Path, help="a pyinstrument text profile per service into this directory")
    ap.add_argument("services", nargs="*", default=["ledger", "invoices", "analytics", "notifications"])
    args = ap.parse_args()

    import payevents
    from payevents.bench.events import make_events, run_id
    from payevents.bench.suites import fill_channel, seed_customers
    from payevents.contracts.channel import Env
    from payevents.settings import Settings
    from payevents.store.db import dispose_engines

    print(f"# payevents from {Path(payevents.__file__).parent}; load {os.getloadavg()[0]:.2f}", flush=True)
    events = make_events(args.n, env="dev", run=run_id())
    with postgresql_schemas("cpg") as prefix, \
            tempfile.TemporaryDirectory(prefix="consume-pg-", ignore_cleanup_errors=True) as tmp:
        for i, name in enumerate(args.services):
            settings = Settings(env=Env.dev, data_dir=Path(tmp) / f"{i}-{name}", database_url=PG_URL,
                                db_schema_prefix=f"{prefix}{i}_")
            fill_channel(settings, events)
            seed_customers(settings)
            profiler = None
            if args.profile is not None:
                from pyinstrument import Profiler

                profiler = Profiler(interval=0.0005)
                profiler.start()
            client, server, wall, stmts, copies, nb = _consume(settings, name, args.n)
            if profiler is not None:
                profiler.stop()
                args.profile.mkdir(parents=True, exist_ok=True)
                (args.profile / f"{name}.txt").write_text(profiler.output_text(unicode=True, show_all=False))
            dispose_engines()
            print(f"{name:14s} client {client:6.1f}  server {server:6.1f}  wall {wall:6.1f} µs/event"
                  f"  ({1e6 / wall:,.0f}/s)  per batch: {stmts:.1f} statements, {copies:.1f} COPY"
                  f" ({args.n / nb:.0f} events a batch)", flush=True)

if __name__ == "__main__":
    sys.exit(main())
