"""The scale-out suite: one service's throughput with 1, 2 and 3 instances in its consumer group.

Each instance is its own process (its own GIL), a member of the service's group ``payevents.<service>``; the
channel's partitions are shared among them (Kafka: the group protocol; the embedded log: partition leases
in ``channel.db``, balanced and sticky — both spread the channel's 6 partitions 6, 3+3, 2+2+2). On SQLite
every instance writes the one service database, whose write lock serializes them; PostgreSQL lets them write
at once, so the suite is meant for ``--database postgresql``.

Per group size: a fresh channel and schemas; the members start on the empty channel and step until every one
holds partitions (the group settled); then they hold (no step), the run's N PaymentProcessed events are put on
the channel, and the time runs from the go to the last effect committed by any member. Until 2026-12-05 the
channel was filled while the members consumed, from the benchmark's own process: on 2 cores that fill took 2–5 s
of the 5 s runs and a share of the cores the members were measured on. The CPU seconds all members used are
reported too: with 2 cores, 3 members share them with the database server (and the broker).
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from payevents.bench.core import BenchEnv, BenchReport, Figure
from payevents.bench.servers import ServerCpu, backends_cpu, reported_backends, track_backends
from payevents.bench.workers import closed_stats
from payevents.runtime.heap import settle_heap
from payevents.settings import Settings

if TYPE_CHECKING:  # the members this module's target starts do not import the console
    from rich.console import Console

#: the service measured and the group sizes
SERVICE = "ledger"
MEMBERS = (1, 2, 3)


def member_worker(settings: Settings, name: str, index: int, n: int, assigned: Any, consumed: Any, hold: Any,
                  holding: Any, go: Any, results: Any, timeout: float) -> None:
    """One member of ``name``'s group: join (reporting the partitions it holds in ``assigned[index]``); once
    ``hold`` is set, stop stepping (counted in ``holding``, shared) until ``go``; then consume until the group as a
    whole (``consumed``, shared) has consumed ``n`` records (CPU is counted from the go). A held member keeps its
    partitions: the embedded log's lease lasts its session timeout (10 s), Kafka's heartbeats run in librdkafka's
    own thread."""
    import threading

    from payevents.runtime.consumer import ConsumerRuntime
    from payevents.services import load_service

    service = load_service(name)
    stop = threading.Event()
    error = None
    t_first = t_last = cpu0 = math.nan
    mine = 0
    rt = None
    backends: dict[int, float] = {}
    track_backends()  # its PostgreSQL backends' CPU, counted here: they end with its connections
    try:
        rt = ConsumerRuntime(settings, service)
        rt.start_background(stop)
        settle_heap()  # as a worker process does once started (runtime.heap)
        started = time.monotonic()
        held = False
        while consumed.value < n:
            if hold.is_set() and not go.is_set():
                if not held:
                    with holding.get_lock():
                        holding.value += 1
                    held = True
                if time.monotonic() > started + timeout:
                    raise TimeoutError(f"{name}[{index}]: held, and no go within {timeout:.0f}s")
                go.wait(0.05)
                continue
            if go.is_set():
                if math.isnan(cpu0):
                    cpu0 = time.process_time()
                    backends = backends_cpu()
                    started = time.monotonic()
                if time.monotonic() > started + timeout:
                    raise TimeoutError(f"{name}[{index}]: the group consumed {consumed.value} of {n} in "
                                       f"{timeout:.0f}s")
            elif time.monotonic() > started + 90:
                raise TimeoutError(f"{name}[{index}]: no go within 90s")
            r = rt.step()
            assigned[index] = len(rt.consumer.assignment())
            if r.consumed and not r.retried:
                now = time.time()
                if math.isnan(t_first):
                    t_first = now - r.seconds
                t_last = now
                mine += r.consumed
                with consumed.get_lock():
                    consumed.value += r.consumed
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    finally:
        stop.set()
        backends = backends_cpu(since=backends)  # before its connections close
        stats = closed_stats(rt)
        results.put({"index": index, "t_first": t_first, "t_last": t_last, "consumed": mine, "stats": stats,
                     "cpu_s": time.process_time() - cpu0, "backends_cpu": backends, "error": error})


def _prepare(settings: Settings, name: str) -> None:
    """The service's migrations and the channel, outside the timed part."""
    from payevents.contracts.channel import dead_letter_topic_for, topic_for
    from payevents.runtime.consumer import migrate_runtime
    from payevents.services import load_service
    from payevents.store import db
    from payevents.transport import open_transport  # type: ignore[attr-defined]

    service = load_service(name)
    engine = db.engine_for(settings, name, url=service.database_url)
    migrate_runtime(engine)
    db.migrate(engine, name, service.migrations)
    transport = open_transport(settings)
    try:
        transport.create_topics([topic_for(settings.env), dead_letter_topic_for(settings.env)], settings.partitions)
    finally:
        transport.close()
    db.dispose_engines()  # no pooled connection crosses into the members


def scale_out(benv: BenchEnv, report: BenchReport, n: int, console: Console) -> None:
    """SERVICE with 1, 2 and 3 members in its group: events/s from the go (the channel filled) to the last effect."""
    from payevents.bench.events import to_records
    from payevents.bench.suites import shared_events

    events = shared_events(benv, n)
    first: float | None = None
    for k in MEMBERS:
        rate, note, _first = _once(benv, events, k, to_records, console)
        first = rate if first is None else first
        report.add(Figure(suite="scale-out", name=f"{SERVICE} ×{k}", value=rate, unit="events/s",
                          transport=benv.transport, database=benv.database, n=n, baseline="consume",
                          note=f"{rate / first:.2f}× one member; {note}"))


def _once(benv: BenchEnv, events: list[Any], k: int, to_records: Any,
          console: Console) -> tuple[float, str, float]:
    """One group of ``k`` members: (events/s, the figure's note, seconds from the end of the fill to the start of
    the first batch any member applied — never negative: no member reads before the go)."""
    import multiprocessing as mp
    import queue

    from payevents.bench.suites import send_records

    ctx = mp.get_context("spawn")
    n = len(events)
    timeout = 120 + n / 100
    with benv.sub(f"scale{k}") as settings:
        _prepare(settings, SERVICE)
        records = to_records(events, settings.env.value)
        assigned = ctx.Array("i", k)
        consumed = ctx.Value("q", 0)
        holding = ctx.Value("i", 0)
        hold, go = ctx.Event(), ctx.Event()
        results = ctx.Queue()
        members = [ctx.Process(target=member_worker, name=f"bench-{SERVICE}-{i}",
                               args=(settings, SERVICE, i, n, assigned, consumed, hold, holding, go, results,
                                     timeout))
                   for i in range(k)]
        for p in members:
            p.start()
        out: list[dict[str, Any]] = []
        try:
            deadline = time.monotonic() + 120
            # settled: every member holds partitions and together they hold them all
            while not (all(a > 0 for a in assigned[:]) and sum(assigned[:]) == settings.partitions):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"scale-out ×{k}: the group did not settle within 120s ({assigned[:]})")
                if not all(p.is_alive() for p in members):
                    raise RuntimeError(f"scale-out ×{k}: a member exited before the group settled")
                time.sleep(0.05)
            held = list(assigned[:])
            hold.set()
            while holding.value < k:  # each member done with the step it was in
                if time.monotonic() > deadline:
                    raise TimeoutError(f"scale-out ×{k}: the members did not hold within 120s")
                time.sleep(0.01)
            t_fill = time.time()
            send_records(settings, records)
            t_filled = time.time() - t_fill
            servers = ServerCpu.of_run(benv)
            go.set()
            t0 = time.time()
            for _ in range(k):
                try:
                    out.append(results.get(timeout=timeout + 30))
                except queue.Empty:
                    raise TimeoutError(f"scale-out ×{k}: members not done within {timeout + 30:.0f}s") from None
            server_cpu = servers.since_start(reported_backends(out))
        finally:
            go.set()
            for p in members:
                p.join(30)
                if p.is_alive():
                    p.kill()
                    p.join()
    errors = [f"{SERVICE}[{r['index']}]: {r['error']}" for r in out if r["error"]]
    if errors:
        raise RuntimeError("; ".join(errors))
    total = max(r["t_last"] for r in out if not math.isnan(r["t_last"])) - t0
    first = min(r["t_first"] for r in out if not math.isnan(r["t_first"])) - (t_fill + t_filled)
    cpu = sum(r["cpu_s"] for r in out)
    per = ", ".join(f"{r['consumed']:,}" for r in sorted(out, key=lambda r: r["index"]))
    dups = sum(int(r["stats"].get("duplicates", 0)) for r in out)
    console.log(f"scale-out {SERVICE} ×{k}: {n / total:,.0f} events/s ({total:.2f}s)")
    on_servers = "".join(f", {name} {c:.1f}s" for name, c in server_cpu.items())
    return n / total, (f"{total:.2f}s to the last effect (the channel filled before, in {t_filled:.2f}s); partitions "
                       f"{held}; consumed per "
                       f"member {per}; duplicates {dups}; CPU: members {cpu:.1f}s ({cpu / total:.2f} cores)"
                       f"{on_servers} (until the last member reported; with the servers "
                       f"{(cpu + sum(server_cpu.values())) / total:.2f} cores)"), first
