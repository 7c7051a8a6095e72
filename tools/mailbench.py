"""Cost of writing one confirmation e-mail: the hand-written MIME writer against the email package, and the
precompiled templates against Jinja rendering the same .j2 files (see docs/architecture.md, 'E-mail messages',
'E-mail delivery'). Run: .venv/bin/python tools/mailbench.py

``--delivery N``: instead, where a delivery pass's CPU goes. N bench PaymentProcessed events are consumed by
notifications into a fresh data dir (not measured), then ``deliver_pending`` passes of 1,000 write them all to the
Maildir; it prints the CPU µs (user + system, this process) per e-mail in total and in each part: the claim, the
rendering, the message bytes, the Maildir write (file creation in the kernel, mostly), the marks, the sync, and the
rest of the pass's own loop. Run: .venv/bin/python tools/mailbench.py --delivery 10000

``--backlog N --processes 1,2,1,2``: how fast delivery processes work through a backlog of N committed intents
(prepared once, not timed; each run gets a copy of the data dir): for each count in ``--processes``, that many
processes (spawned and started first, not timed) run ``deliver_pending`` passes of 1,000 until nothing is left;
it prints the wall time, e-mails/s and the processes' CPU (children's user + system, their interpreters' start
included). The Maildir is in ``TMPDIR``'s file system: ``TMPDIR=/dev/shm`` leaves ext4's state out of it.
Run: .venv/bin/python tools/mailbench.py --backlog 10000 --processes 1,2,1,2

``--postgresql`` (with ``--delivery``): the notifications database on PostgreSQL (``PAYEVENTS_BENCH_PG_URL``, default
the test database on 127.0.0.1:5432; a unique schema, dropped after); it also prints the CPU of the PostgreSQL
backends serving this process per e-mail (as ``tools/consume_pg.py`` measures it)."""

from __future__ import annotations

import argparse
import email.policy
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import consume_pg
from consume_loop import consume_measured

from payevents.bench.events import make_events
from payevents.contracts.codec import decode_event
from payevents.contracts.events import PaymentProcessed
from payevents.services.notifications.render import build_message, message_bytes, render_confirmation, render_with_jinja

KW = {
    "payment_id": "pay_1", "mail_from": "payments@payevents.local", "recipient": "john@example.com",
    "recipient_name": "Jöhn Doe", "subject": "Zahlungsbestätigung: 99,99 $",
    "text": "Hallo Jöhn,\n\nwir haben Ihre Zahlung erhalten.\n" * 3, "html": "<p>Hallo Jöhn</p>" * 5,
    "created_at": "2026-11-30T12:00:00+00:00",
}


def main() -> None:
    ids = [str(uuid.uuid4()) for _ in range(3000)]
    writers: dict[str, Callable[[str], bytes]] = {
        "hand-written message_bytes": lambda e: message_bytes(event_id=e, **KW),  # type: ignore[arg-type]
        "email package build_message().as_bytes(policy=SMTP)":
            lambda e: build_message(event_id=e, **KW).as_bytes(policy=email.policy.SMTP),  # type: ignore[arg-type]
    }
    for name, write in writers.items():
        print(f"{name}: {_best(lambda w=write: [w(e) for e in ids]) / len(ids) * 1e6:.0f} µs per message")
    events = [decode_event(e.value).event for e in make_events(len(ids))]
    renderers: dict[str, Callable[[PaymentProcessed], object]] = {
        "precompiled templates render_confirmation": lambda e: render_confirmation(e, "Jöhn Doe", "de_DE", "p@x.io"),
        "Jinja render_with_jinja": lambda e: render_with_jinja(e, "Jöhn Doe", "de_DE", "p@x.io"),
    }
    for name, render in renderers.items():
        print(f"{name}: {_best(lambda r=render: [r(e) for e in events]) / len(events) * 1e6:.0f} µs per confirmation")


def delivery(n: int, postgresql: bool = False) -> None:
    spent: dict[str, float] = {}

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            started = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] = spent.get(name, 0.0) + time.process_time() - started
        return run

    with consume_pg.postgresql_schemas("mail") if postgresql else nullcontext(None) as prefix:
        _delivery(n, consume_pg.pg_options(prefix), spent, timed)


def _pending_intents(data_dir: Path, n: int, **pg: str) -> Any:
    """Settings of a fresh data dir whose notifications store holds ``n`` committed intents, none delivered."""
    from payevents.bench.suites import fill_channel, seed_customers
    from payevents.contracts.channel import Env
    from payevents.settings import Settings

    settings = Settings(env=Env.dev, data_dir=data_dir, **pg)
    fill_channel(settings, make_events(n))
    seed_customers(settings)
    consume_measured(settings, "notifications", n, background=False)  # the intents, left pending
    return settings


def _delivery(n: int, pg: dict[str, str], spent: dict[str, float], timed: Callable[..., Any]) -> None:
    from payevents.services.notifications import delivery as d
    from payevents.store.db import dispose_engines

    with tempfile.TemporaryDirectory(prefix="mailbench-") as tmp:
        settings = _pending_intents(Path(tmp) / "data", n, **pg)
        parts = {"claim": (d, "_claim"), "render": (d, "render_confirmation"), "message bytes": (d, "message_bytes"),
                 "marks": (d, "_apply_marks"), "Maildir write": (d.MaildirMailer, "send"),
                 "sync": (d.MaildirMailer, "sync")}
        originals = {name: getattr(owner, attr) for name, (owner, attr) in parts.items()}
        for name, (owner, attr) in parts.items():
            setattr(owner, attr, timed(name, originals[name]))
        try:
            sent, started, server = 0, time.process_time(), consume_pg._server_cpu()
            while (report := d.deliver_pending(settings, d.PASS_LIMIT)).claimed:
                sent += report.sent
            total = time.process_time() - started
            server = consume_pg._server_cpu() - server
        finally:
            for name, (owner, attr) in parts.items():
                setattr(owner, attr, originals[name])
            dispose_engines()
    print(f"delivery of {sent:,} e-mails: {total / sent * 1e6:.1f} µs CPU per e-mail"
          + (f"; PostgreSQL backends {server / sent * 1e6:.1f} µs" if pg else ""))
    for name, seconds in sorted(spent.items(), key=lambda kv: -kv[1]):
        print(f"  {name:14s} {seconds / sent * 1e6:7.1f}")
    print(f"  {'the pass loop':14s} {(total - sum(spent.values())) / sent * 1e6:7.1f}")


def _backlog_child(settings: Any, go: Any) -> None:
    from payevents.services.notifications.delivery import PASS_LIMIT, deliver_pending

    go.wait()
    while deliver_pending(settings, PASS_LIMIT).claimed:
        pass


def backlog(n: int, counts: list[int]) -> None:
    import multiprocessing as mp
    import resource
    import shutil

    from payevents.store.db import dispose_engines

    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="mailbench-") as tmp:
        prepared = _pending_intents(Path(tmp) / "prepared", n)
        dispose_engines()
        for i, k in enumerate(counts):
            settings = prepared.replace(data_dir=Path(tmp) / f"run{i}")
            shutil.copytree(prepared.data_dir, settings.data_dir)
            go = ctx.Event()
            children = [ctx.Process(target=_backlog_child, args=(settings, go)) for _ in range(k)]
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            for child in children:
                child.start()
            time.sleep(2.0)  # their interpreters started and waiting
            started = time.perf_counter()
            go.set()
            for child in children:
                child.join()
            wall = time.perf_counter() - started
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
            files = len(os.listdir(settings.data_dir / "maildir" / "new"))
            print(f"{k} delivery process(es): {files:,} e-mails in {wall:.2f} s, {files / wall:,.0f} e-mails/s;"
                  f" CPU {cpu:.2f} s ({cpu / files * 1e6:.0f} µs an e-mail)", flush=True)
            shutil.rmtree(settings.data_dir)


def _best(work: Callable[[], object]) -> float:
    """The least CPU time of three runs of ``work``."""
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        work()
        best = min(best, time.process_time() - started)
    return best


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--delivery", type=int, metavar="N", help="where a delivery pass's CPU goes, over N e-mails")
    ap.add_argument("--postgresql", action="store_true", help="with --delivery: the notifications database on"
                    " PostgreSQL")
    ap.add_argument("--backlog", type=int, metavar="N", help="delivery processes working through N pending e-mails")
    ap.add_argument("--processes", default="1,2,1,2", help="with --backlog: process counts, one run each")
    args = ap.parse_args()
    if args.backlog:
        backlog(args.backlog, [int(k) for k in args.processes.split(",")])
    elif args.delivery:
        delivery(args.delivery, args.postgresql)
    else:
        main()
