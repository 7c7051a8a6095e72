"""The benchmarks' worker processes: the targets the suites spawn (``relay_worker``, ``service_worker``,
``drain_worker``). A spawned process imports the module of its target; this one imports what a production worker
imports (the runtime, the service) and nothing of the suites (their event factory and the payments service, the
console, the baselines), so that what a worker costs to start is what an operator's worker costs
(``tests/test_start_imports.py``)."""

from __future__ import annotations

import math
import time
from typing import Any

from payevents.bench.servers import backends_cpu, track_backends
from payevents.runtime.heap import peak_rss_kb, settle_heap
from payevents.settings import Settings


def closed_stats(rt: Any) -> dict[str, Any]:
    """A worker's consumer runtime closed (committing what it applied), and its stats (``{}``: it never started)."""
    if rt is None:
        return {}
    stats: dict[str, Any] = rt.stats.as_dict()
    rt.close()
    return stats


def relay_worker(settings: Settings, ready: Any, stop: Any, cpu: Any = None) -> None:
    """Run the relay until ``stop`` (a multiprocessing Event) is set. Its per-event SLA-breach warnings
    are silenced: a benchmark burst can breach by the ten thousand, and the suites count breaches from
    the stored delays instead. ``cpu`` (a shared double, optional) gets the CPU seconds the relay used
    from ready to stop."""
    import logging

    from payevents.runtime.relay import Relay

    logging.getLogger("payevents.relay").setLevel(logging.ERROR)

    with Relay(settings) as relay:
        relay.ensure_topics()
        settle_heap()  # as a worker process does once started (runtime.heap)
        cpu0 = time.process_time()
        ready.set()
        try:
            relay.run(stop, create_topics=False)
        finally:
            if cpu is not None:
                cpu.value = time.process_time() - cpu0


def service_worker(settings: Settings, name: str, expected: Any, ready: Any, go: Any, results: Any,
                   timeout: float) -> None:
    """Consume until ``expected.value`` records (a shared value the writer sets once it knows) were consumed;
    report (name, time of the last effect, stats, peak RSS)."""
    import threading

    from payevents.runtime.consumer import ConsumerRuntime
    from payevents.services import load_service

    service = load_service(name)
    stop = threading.Event()
    error = None
    t_last = math.nan
    cpu0 = math.nan
    backends: dict[int, float] = {}
    track_backends()  # its PostgreSQL backends' CPU, counted here: they end with its connections
    rt = ConsumerRuntime(settings, service)
    try:
        deadline = time.monotonic() + 60
        while not rt.consumer.assignment() and time.monotonic() < deadline:
            rt.step()
        rt.start_background(stop)
        settle_heap()  # as a worker process does once started (runtime.heap)
        ready.set()
        go.wait()
        cpu0 = time.process_time()
        backends = backends_cpu()
        deadline = time.monotonic() + timeout
        while rt.stats.consumed < expected.value:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name}: consumed {rt.stats.consumed} of {expected.value} in {timeout:.0f}s")
            r = rt.step()
            if r.consumed:
                t_last = time.time()
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    finally:
        stop.set()
        backends = backends_cpu(since=backends)  # before its connections close
        stats = closed_stats(rt)
        import gc
        import sys

        gc.collect()
        results.put({"service": name, "t_last": t_last, "stats": stats, "peak_rss_kb": peak_rss_kb(),
                     "py_blocks": sys.getallocatedblocks(), "cpu_s": time.process_time() - cpu0,
                     "backends_cpu": backends, "error": error})


def _emails_pending(settings: Settings) -> bool:
    """Whether any e-mail is still pending: one probe of the due index (a count of a 15,000-intent backlog took
    0.43 ms of CPU, asked every 10 ms beside the delivery it waits for; this 0.08 ms)."""
    import sqlalchemy as sa

    from payevents.services.notifications.store import engine

    with engine(settings).connect() as conn:
        return bool(conn.execute(sa.text(
            "SELECT EXISTS (SELECT 1 FROM notifications WHERE status = 'pending')")).scalar_one())


def drain_worker(settings: Settings, name: str, n: int, results: Any, timeout: float) -> None:
    """One service in its own process, from its start: consume the pre-filled channel's ``n`` records (effects
    committed); notifications also until every e-mail is written (no intent pending). Reports (name, time it
    started running, time it was ready, time it was done, stats, peak RSS — of the worker, and of the child
    processes it started and waited for: notifications' delivery process)."""
    t_started = time.time()
    import threading

    from payevents.runtime.consumer import ConsumerRuntime
    from payevents.services import load_service

    service = load_service(name)
    stop = threading.Event()
    error = None
    t_ready = t_consumed = t_done = cpu_ready = math.nan
    rt = None
    background = None
    try:
        rt = ConsumerRuntime(settings, service)
        background = rt.start_background(stop)
        settle_heap()  # as a worker process does once started (runtime.heap)
        t_ready = time.time()
        cpu_ready = time.process_time()
        deadline = time.monotonic() + timeout
        while rt.stats.consumed < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name}: consumed {rt.stats.consumed} of {n} in {timeout:.0f}s")
            rt.step()
        t_consumed = time.time()
        if name == "notifications":
            while _emails_pending(settings):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name}: e-mails still pending after {timeout:.0f}s")
                time.sleep(0.01)
        t_done = time.time()
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    finally:
        stop.set()
        stats = closed_stats(rt)
        if background is not None:
            background.join(30)  # notifications: its delivery process stopped and waited for
        # the delivery processes' own peaks and CPU, as they reported them with each pass (their ru_maxrss also
        # counts this process's pages at their spawn, and one forked from the fork server is not this process's
        # child: its CPU is not in RUSAGE_CHILDREN)
        delivery_rss, delivery_cpu = 0, 0.0
        if background is not None:
            from payevents.services.notifications.delivery import CPU_S, PEAK_RSS_KB

            delivery_rss, delivery_cpu = max(PEAK_RSS_KB.values(), default=0), sum(CPU_S.values())
        results.put({"service": name, "t_started": t_started, "t_ready": t_ready, "t_consumed": t_consumed,
                     "t_done": t_done, "stats": stats, "peak_rss_kb": peak_rss_kb(), "error": error,
                     "cpu_s": time.process_time(), "cpu_ready_s": cpu_ready, "children_peak_rss_kb": delivery_rss,
                     "children_cpu_s": delivery_cpu})
