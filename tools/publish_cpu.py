"""CPU time per payment of the publishing side (issue #14), robust to a shared, noisy machine.

``writer``: ``payments.process_payments`` (500 payments per call, or ``--per-call N``: 20 is what the paced
publish benchmark writes at 1,000-2,000 payments/s; 4 events each, the bench's specs) into a fresh SQLite payments
database — validation, state machine, encoding, card guard, hash chain, inserts, commit.
``relay``: the relay's passes (:meth:`Relay.publish_pending`: select, send to the embedded log, mark) over
what the writer wrote. The figures are CPU µs (``time.process_time()``: this process only) per payment.

To compare two versions of the code, run the same file against each source tree, interleaved::

    for i in 1 2 3; do
      PYTHONPATH=/work/main/src .venv/bin/python tools/publish_cpu.py --n 10000
      .venv/bin/python tools/publish_cpu.py --n 10000
    done

``--profile DIR`` also writes cProfile statistics (``writer.prof``, ``relay.prof``, and their text).

``--postgresql``: the payments database (payments, commands, outbox) on PostgreSQL
(``PAYEVENTS_BENCH_PG_URL``, default the test database on 127.0.0.1:5432; a unique schema, dropped after) instead
of SQLite; each figure then also gives the CPU of the PostgreSQL backends serving this process (``server``, as in
``tools/consume_pg.py``).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import consume_pg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--per-call", type=int, default=500, help="payments per process_payments call (default 500)")
    ap.add_argument("--writer-only", action="store_true",
                    help="no relay passes (e.g. for `strace -f -c` of the writer's system calls alone)")
    ap.add_argument("--profile", type=Path, default=None, help="write cProfile statistics into this directory")
    ap.add_argument("--postgresql", action="store_true", help="the payments database on PostgreSQL (see above)")
    args = ap.parse_args()
    with consume_pg.postgresql_schemas("pcpu") if args.postgresql else nullcontext(None) as prefix:
        _run(args, consume_pg.pg_options(prefix))


def _run(args: argparse.Namespace, pg: dict[str, str]) -> None:
    """The writer's and the relay's figures; ``pg``: the settings that put the payments database on PostgreSQL."""
    import logging

    import payevents
    from payevents.bench.events import run_id
    from payevents.bench.suites import payment_specs, write_payments
    from payevents.contracts.channel import Env
    from payevents.runtime.relay import Relay
    from payevents.services.payments import store
    from payevents.settings import Settings
    from payevents.store.db import dispose_engines

    # the relay publishes what was written minutes ago: its SLA-breach warnings would be most of its work
    logging.getLogger("payevents.relay").setLevel(logging.ERROR)
    print(f"# payevents from {Path(payevents.__file__).parent}", flush=True)
    run = run_id()
    with tempfile.TemporaryDirectory(prefix="publish-cpu-") as tmp:
        settings = Settings(env=Env.dev, data_dir=Path(tmp), **pg)
        store.engine(settings)
        write_payments(settings, payment_specs(500, run, start=10**7))  # warm-up: imports, caches, statements
        specs = payment_specs(args.n, run)
        prof = cProfile.Profile() if args.profile else None
        start, server = time.process_time(), consume_pg._server_cpu()
        if prof:
            prof.enable()
        write_payments(settings, specs, batch=args.per_call)
        if prof:
            prof.disable()
        writer = time.process_time() - start
        _dump(prof, args.profile, "writer")
        print(f"writer {writer / args.n * 1e6:8.1f} µs CPU/payment ({args.per_call} per call)"
              + _server(args, server), flush=True)
        if args.writer_only:
            dispose_engines()
            return
        with Relay(settings) as relay:
            relay.ensure_topics()
            relay.publish_pending()  # warm-up batch
            prof = cProfile.Profile() if args.profile else None
            start, server = time.process_time(), consume_pg._server_cpu()
            if prof:
                prof.enable()
            while relay.publish_pending():
                pass
            if prof:
                prof.disable()
            relay_cpu = time.process_time() - start
            relay_server = _server(args, server)
            _dump(prof, args.profile, "relay")
        dispose_engines()
    print(f"relay  {relay_cpu / args.n * 1e6:8.1f} µs CPU/payment" + relay_server, flush=True)


def _server(args: argparse.Namespace, since: float) -> str:
    """PostgreSQL: the backends' CPU µs per payment since ``since`` (their CPU seconds then), as text."""
    if not args.postgresql:
        return ""
    return f"; server {(consume_pg._server_cpu() - since) / args.n * 1e6:8.1f} µs CPU/payment"


def _dump(prof: cProfile.Profile | None, directory: Path | None, name: str) -> None:
    if prof is None or directory is None:
        return
    directory.mkdir(parents=True, exist_ok=True)
    prof.dump_stats(directory / f"{name}.prof")
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats("cumulative").print_stats(60)
    stats.sort_stats("tottime").print_stats(40)
    (directory / f"{name}.txt").write_text(out.getvalue())


if __name__ == "__main__":
    sys.exit(main())
