"""The suites. Each takes the run's environment, the report to add figures to, N and a console."""

from __future__ import annotations

import math
import os
import time
import uuid
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

from rich.console import Console

from payevents.bench import baseline as raw
from payevents.bench.core import BenchEnv, BenchReport, Figure, latency_summary
from payevents.bench.events import CURRENCIES, BenchEvent, make_events, run_id, to_records
from payevents.bench.workers import drain_worker, relay_worker, service_worker
from payevents.runtime.heap import settle_heap
from payevents.settings import Settings


def shared_events(benv: BenchEnv, n: int) -> list[BenchEvent]:
    """The run's events (the same for the baselines and the suites), generated once, grown on demand."""
    events: list[BenchEvent] = benv.cache.get("events", [])
    if len(events) < n:
        run = benv.cache.setdefault("run", run_id())
        events = make_events(n, env=benv.settings.env.value, run=run)
        benv.cache["events"] = events
    return events[:n]


def _fig(benv: BenchEnv, suite: str, name: str, value: float, unit: str, **kw: object) -> Figure:
    return Figure(suite=suite, name=name, value=value, unit=unit, transport=benv.transport,
                  database=benv.database, **kw)  # type: ignore[arg-type]


# -- contracts ---------------------------------------------------------------------------------------


CONTRACTS_REPEAT = 3


def contracts(report: BenchReport, n: int, console: Console) -> None:
    """decode+validate and validate+encode of PaymentProcessed (:mod:`payevents.bench.contracts`), events/s
    per core from CPU time; baselines: plain JSON parse (orjson.loads) and plain struct encode
    (msgspec.json.encode, no validation) of the same events."""
    import msgspec
    import orjson

    from payevents.bench.contracts import TARGET_DECODE_PER_S, _time, make_processed, run_contracts
    from payevents.contracts.codec import encode_event

    figures = run_contracts(n=n, repeat=CONTRACTS_REPEAT)
    events = make_processed(n)
    raws = [encode_event(e) for e in events]

    def parse_all() -> None:
        for r in raws:
            orjson.loads(r)

    def dump_all() -> None:
        enc = msgspec.json.Encoder(decimal_format="number")
        for e in events:
            enc.encode(e)

    for name, fn, note in (("json parse", parse_all, "orjson.loads of the same bytes"),
                           ("json encode", dump_all, "msgspec.json.encode, no validation")):
        cpu, _wall = _time(fn, CONTRACTS_REPEAT)
        report.add(Figure("baseline", name, len(raws) / cpu, "events/s/core", n=len(raws), note=note))
    baselines = {"decode+validate": "json parse", "validate+encode": "json encode",
                 "legacy decode+upcast": "json parse", "reject invalid": "json parse"}
    for f in figures:
        target = (">=", float(TARGET_DECODE_PER_S), "value") if f.name == "decode+validate" else None
        report.add(Figure("contracts", f.name, f.per_s, "events/s/core", n=f.n, baseline=baselines.get(f.name),
                          target=target, note=f"{f.per_s_wall:,.0f}/s wall; {f.note}"))


# -- baseline ----------------------------------------------------------------------------------------


def baseline(benv: BenchEnv, report: BenchReport, n: int, console: Console) -> None:
    """Raw produce and raw consume+decode of the run's events: the limits the other suites are divided by."""
    events = shared_events(benv, n)
    partitions = benv.settings.partitions
    if benv.transport == "kafka":
        bootstrap = benv.settings.bootstrap_servers
        topic = f"bench.raw.{uuid.uuid4().hex[:8]}"
        raw.kafka_create_topic(bootstrap, topic, partitions)
        produce = raw.kafka_produce(bootstrap, topic, events)
        consume = raw.kafka_consume(bootstrap, topic, len(events) + 1)  # + the producer's warm-up record
        how_p, how_c = "confluent-kafka produce loop, acks=all", "confluent-kafka consume + decode_event"
    else:
        path = benv.tmp / f"raw-{uuid.uuid4().hex[:6]}.db"
        produce = raw.sqlite_insert(path, events, partitions)
        consume = raw.sqlite_select(path, len(events), partitions)
        how_p, how_c = "sqlite3 executemany, 500 rows/tx", "sqlite3 select 500 rows + decode_event"
    report.add(_fig(benv, "baseline", "produce", produce, "events/s", n=len(events), note=how_p))
    report.add(_fig(benv, "baseline", "consume", consume, "events/s", n=len(events), note=how_c))


# -- helpers shared by the pipeline suites ----------------------------------------------------------------

#: events one completed payment puts on the channel (initiated, authorized, captured, processed)
EVENTS_PER_PAYMENT = 4
PAY_BATCH = 500


def payment_specs(n: int, run: str, start: int = 0) -> list[Any]:
    """N payment specs of the whole lifecycle; every second one names an invoice."""
    from payevents.services.payments.models import PaymentSpec

    specs = []
    for i in range(start, start + n):
        currency, digits = CURRENCIES[i % len(CURRENCIES)]
        minor = 1000 + (i * 7919) % 500_000
        specs.append(
            PaymentSpec(
                customer_id=f"cus_{i % 997:04d}",
                amount=Decimal(minor).scaleb(-digits),
                currency=currency,
                description=f"Payment for Order #{i}",
                last4="4242",
                invoice_id=f"INV-{run}-{i // 2:08d}" if i % 2 == 0 else None,
                order_id=f"ORD-{run}-{i:08d}",
                idempotency_key=f"bench:{run}:{i}",
            )
        )
    return specs


def write_payments(settings: Settings, specs: Sequence[Any], batch: int = PAY_BATCH) -> None:
    from payevents.services.payments import process_payments

    for i in range(0, len(specs), batch):
        process_payments(settings, specs[i : i + batch])


def _outbox_seq(settings: Settings) -> int:
    from payevents.store.db import engine_for

    with engine_for(settings, "payments").connect() as conn:
        return int(conn.exec_driver_sql("SELECT COALESCE(MAX(seq), 0) FROM outbox_events").scalar_one())


def _pending(settings: Settings) -> int:
    from payevents.runtime.outbox import pending_count
    from payevents.store.db import engine_for

    return pending_count(engine_for(settings, "payments"))


def _delays_ms(settings: Settings, after_seq: int, upto_seq: int) -> list[float]:
    import sqlalchemy as sa

    from payevents.store.db import engine_for

    with engine_for(settings, "payments").connect() as conn:
        rows = conn.execute(
            sa.text("SELECT delay_s FROM outbox_published WHERE seq > :a AND seq <= :b"),
            {"a": after_seq, "b": upto_seq},
        ).all()
    return [float(r[0]) * 1000 for r in rows]


def _wait(cond: Callable[[], bool], timeout: float, what: str, poll: float = 0.005) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not done within {timeout:.0f}s")
        time.sleep(poll)


def _prepare_payments(settings: Settings) -> None:
    """Apply the payments migrations outside the timed part."""
    from payevents.services.payments import store

    store.engine(settings)


#: the bench events and payments use customers cus_0000 .. cus_0996
BENCH_CUSTOMERS = 997


def seed_customers(settings: Settings) -> None:
    """Put the bench's customers in the notifications directory (outside the timed part), so that every
    PaymentProcessed becomes a real e-mail intent delivered to the Maildir, not an 'unknown customer' skip."""
    from payevents.services.notifications import add_customer

    for i in range(BENCH_CUSTOMERS):
        add_customer(settings, f"cus_{i:04d}", f"Customer {i}", f"customer{i}@example.com", "en_US")


# -- publish -------------------------------------------------------------------------------------------

LOADS = (100, 1_000, 2_000, 5_000)
#: offered loads whose publish delay p99 must stay within 50 ms
P99_TARGET_LOADS = (1_000, 2_000)
LOAD_SECONDS = 3.0
TICK = 0.01


def _offer(settings: Settings, specs: Sequence[Any], rate: float) -> tuple[int, float]:
    """Write ``specs`` paced at ``rate`` payments/s for at most LOAD_SECONDS: every TICK, the payments due by
    then (at most 100 ms' worth in one call, so a writer that falls behind catches up in bounded batches).
    Returns (payments written, achieved payments/s)."""
    written = 0
    cap = max(1, int(rate * 0.1))
    t0 = time.perf_counter()
    while written < len(specs):
        elapsed = time.perf_counter() - t0
        if elapsed >= LOAD_SECONDS:
            break
        due = min(len(specs), int(rate * elapsed) + 1) - written
        if due > 0:
            write_payments(settings, specs[written : written + min(due, cap)])
            written += min(due, cap)
        else:
            time.sleep(min(TICK, (written + 1) / rate - elapsed))
    return written, written / (time.perf_counter() - t0)


def publish(benv: BenchEnv, report: BenchReport, n: int, console: Console) -> None:
    """Payments through the outbox and the relay (its own process) onto the channel: throughput, then
    publish delay at fixed offered loads written by a paced writer (:func:`_offer`)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    run = run_id()
    with benv.sub("publish") as settings:
        _prepare_payments(settings)
        ready, stop = ctx.Event(), ctx.Event()
        relay = ctx.Process(target=relay_worker, args=(settings, ready, stop), name="bench-relay")
        relay.start()
        try:
            if not ready.wait(60):
                raise TimeoutError("relay did not start within 60s")
            # 1. throughput: N payments as fast as they can be written, until the relay published them all
            specs = payment_specs(n, run)
            seq0 = _outbox_seq(settings)
            t0 = time.perf_counter()
            write_payments(settings, specs)
            t_written = time.perf_counter() - t0
            _wait(lambda: _pending(settings) == 0, 120 + n / 100, "publish throughput")
            elapsed = time.perf_counter() - t0
            seq1 = _outbox_seq(settings)
            events = seq1 - seq0
            report.add(_fig(benv, "publish", "payments written", n / t_written, "payments/s", n=n,
                            note="process_payments, 500 per call"))
            report.add(_fig(benv, "publish", "throughput", events / elapsed, "events/s", n=events,
                            baseline="produce",
                            note=f"{n / elapsed:,.0f} payments/s, {EVENTS_PER_PAYMENT} events each"))
            thr = _delays_ms(settings, seq0, seq1)
            report.latencies[f"{benv.transport}/{benv.database} unpaced ({n} payments)"] = thr
            # 2. fixed offered loads
            offset = n
            for rate in LOADS:
                seq0 = _outbox_seq(settings)
                specs = payment_specs(int(rate * LOAD_SECONDS), run, start=offset)
                offset += len(specs)
                written, achieved = _offer(settings, specs, rate)
                count = written
                _wait(lambda: _pending(settings) == 0, 120, f"publish at {rate}/s")
                delays = _delays_ms(settings, seq0, _outbox_seq(settings))
                label = f"{benv.transport}/{benv.database} @{rate:,}/s"
                report.latencies[label] = delays
                s = latency_summary(delays)
                note = f"achieved {achieved:,.0f} payments/s; {s['count']} events"
                target = ("<=", 50.0, "value") if rate in P99_TARGET_LOADS else None
                report.add(_fig(benv, "publish", f"delay p50 @{rate:,}/s", s["p50"], "ms", n=count, note=note))
                report.add(_fig(benv, "publish", f"delay p99 @{rate:,}/s", s["p99"], "ms", n=count, target=target))
                report.add(_fig(benv, "publish", f"delay p99.9 @{rate:,}/s", s["p99.9"], "ms", n=count))
                breaches = sum(1 for d in delays if d > 5000)
                report.add(_fig(benv, "publish", f"delay max @{rate:,}/s", s["max"], "ms", n=count,
                                note=f"5 s rule margin {5000 - s['max']:,.0f} ms; {breaches:,} past it"))
        finally:
            stop.set()
            relay.join(30)
            if relay.is_alive():
                relay.kill()
                relay.join()


# -- consume -------------------------------------------------------------------------------------------


def consume(benv: BenchEnv, report: BenchReport, n: int, console: Console) -> None:
    """Per service: a pre-filled channel of the run's N events, consumed with effects committed."""
    import threading

    from payevents.runtime.consumer import ConsumerRuntime
    from payevents.services import CONSUMER_SERVICES, load_service

    events = shared_events(benv, n)
    with benv.sub("consume") as settings:
        fill_channel(settings, events)
        seed_customers(settings)
        # the services run in this process: its heap settled as a worker's is once started (runtime.heap), or
        # the full collections would walk the benchmark's own events and figures as well
        settle_heap(again=True)
        for name in CONSUMER_SERVICES:
            service = load_service(name)
            stop = threading.Event()
            rt = ConsumerRuntime(settings, service)
            background = rt.start_background(stop)
            try:
                first: float | None = None
                deadline = time.monotonic() + 120 + n / 200
                while rt.stats.consumed < n:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{name}: consumed {rt.stats.consumed} of {n}")
                    r = rt.step()
                    if r.consumed and first is None:
                        first = time.perf_counter() - r.seconds
                end = time.perf_counter()
                st = rt.stats
            finally:
                stop.set()
                rt.close()
                if background is not None:
                    background.join(10)
            assert first is not None
            report.add(_fig(benv, "consume", name, n / (end - first), "events/s", n=n, baseline="consume",
                            target=(">=", 0.30, "ratio"),
                            note=f"applied {st.applied}, ignored {st.ignored}, dup {st.duplicates}, "
                                 f"dlq {st.dead_lettered}, batches {st.batches}"))


# -- end-to-end ----------------------------------------------------------------------------------------


def end_to_end(benv: BenchEnv, report: BenchReport, n: int, console: Console) -> None:
    """N payments from completion to all four services' effects committed, each service and the relay in
    their own process; repeated at N/5 to show each service's peak RSS stays flat as N grows."""
    small = max(1, n // 5)
    mem: dict[int, dict[str, tuple[int, int]]] = {}
    for size in (small, n):
        mem[size] = _e2e_once(benv, report, size, console, record=size == n)
    for name in mem[n]:
        (a, pa), (b, pb) = mem[small].get(name, (0, 0)), mem[n][name]
        report.add(_fig(benv, "end-to-end", f"peak RSS {name}", b / 1024, "MiB", n=n,
                        note=f"{a / 1024:.1f} MiB at N={small:,} → {b / 1024:.1f} MiB at N={n:,} "
                             f"({(b - a) / 1024:+.1f} MiB); Python heap blocks {pa:,} → {pb:,}"))


def _e2e_once(
    benv: BenchEnv, report: BenchReport, n: int, console: Console, *, record: bool
) -> dict[str, tuple[int, int]]:
    """One end-to-end run; returns per service (peak RSS KiB, Python heap blocks after the run)."""
    import multiprocessing as mp
    import queue

    from payevents.services import CONSUMER_SERVICES

    ctx = mp.get_context("spawn")
    run = run_id()
    expected = ctx.Value("q", 1 << 62)
    timeout = 120 + n / 50
    with benv.sub(f"e2e-{n}") as settings:
        _prepare_payments(settings)
        seed_customers(settings)
        go, stop = ctx.Event(), ctx.Event()
        results = ctx.Queue()
        relay_ready = ctx.Event()
        relay_cpu = ctx.Value("d", math.nan)
        relay = ctx.Process(target=relay_worker, args=(settings, relay_ready, stop, relay_cpu), name="bench-relay")
        relay.start()
        if not relay_ready.wait(60):
            stop.set()
            relay.join(10)
            raise TimeoutError("relay did not start within 60s")  # topics exist once the relay is ready
        workers = []
        readies = []
        for name in CONSUMER_SERVICES:
            ready = ctx.Event()
            p = ctx.Process(target=service_worker, args=(settings, name, expected, ready, go, results, timeout),
                            name=f"bench-{name}")
            p.start()
            workers.append(p)
            readies.append(ready)
        try:
            for name, ready in zip(CONSUMER_SERVICES, readies, strict=True):
                if not ready.wait(90):
                    raise TimeoutError(f"{name} worker not ready within 90s")
            specs = payment_specs(n, run)
            seq0 = _outbox_seq(settings)
            from payevents.bench.servers import ServerCpu, reported_backends

            servers = ServerCpu.of_run(benv)
            go.set()
            t0 = time.time()
            cpu0 = time.process_time()
            write_payments(settings, specs)
            t_written = time.time() - t0
            writer_cpu = time.process_time() - cpu0
            events = _outbox_seq(settings) - seq0
            expected.value = events
            out = []
            for _ in CONSUMER_SERVICES:
                try:
                    out.append(results.get(timeout=timeout + 30))
                except queue.Empty:
                    raise TimeoutError(f"end-to-end N={n}: services not done within {timeout + 30:.0f}s") from None
            server_cpu = servers.since_start(reported_backends(out))
            delays = _delays_ms(settings, seq0, seq0 + events)
        finally:
            stop.set()
            go.set()
            for p in [*workers, relay]:
                p.join(30)
                if p.is_alive():
                    p.kill()
                    p.join()
    errors = [f"{r['service']}: {r['error']}" for r in out if r["error"]]
    if errors:
        raise RuntimeError("; ".join(errors))
    t_end = max(r["t_last"] for r in out)
    total = t_end - t0
    if record:
        report.add(_fig(benv, "end-to-end", "payments", n / total, "payments/s", n=n,
                        target=(">=", 3_000.0, "value") if benv.transport == "embedded" else None,
                        note=f"{events:,} events; payments written in {t_written:.2f}s"))
        report.add(_fig(benv, "end-to-end", "events", events / total, "events/s", n=events, baseline="produce"))
        report.add(_fig(benv, "end-to-end", "time to last effect", total, "s", n=n,
                        note=", ".join(f"{r['service']} {r['t_last'] - t0:.2f}s" for r in out)))
        s = latency_summary(delays)
        breaches = sum(1 for d in delays if d > 5000)
        report.add(_fig(benv, "end-to-end", "publish delay p99", s["p99"], "ms", n=events,
                        note=f"unpaced burst; max {s['max']:,.0f} ms; {breaches:,} events past the 5 s rule"))
        # where the cores went: CPU seconds per process over the run, per payment
        cpu = {"writer": writer_cpu, "relay": relay_cpu.value, **{r["service"]: r["cpu_s"] for r in out}}
        report.add(_fig(benv, "end-to-end", "CPU per payment", sum(cpu.values()) / n * 1000, "ms", n=n,
                        note=", ".join(f"{k} {v / n * 1000:.2f}" for k, v in cpu.items())
                             + f" ms; {sum(cpu.values()) / total:.2f} cores busy on average; servers (not in the"
                             + " figure): " + (", ".join(f"{k} {v / n * 1000:.2f} ms" for k, v in server_cpu.items())
                                               or "none")))
    return {r["service"]: (int(r["peak_rss_kb"]), int(r["py_blocks"])) for r in out}


# -- drain ---------------------------------------------------------------------------------------------

#: drain runs at N and at DRAIN_GROWTH × N (how the rate and every worker's peak RSS grow)
DRAIN_GROWTH = 5
#: files of the raw Maildir write each drain run measures first (``baseline.maildir_files``)
DRAIN_RAW_FILES = 2000
#: and the size of each (about a confirmation's)
DRAIN_RAW_FILE_BYTES = 4096
#: how the drain's second run at N starts its workers (the first as ``payevents run`` does: from a fork server)
DRAIN_BASELINE_START = "spawn"


def fill_channel(settings: Settings, events: list[BenchEvent]) -> None:
    """The channel (and its dead-letter channel) created, and ``events`` put on it in batches of 500."""
    from payevents.contracts.channel import dead_letter_topic_for, topic_for
    from payevents.transport import open_transport  # type: ignore[attr-defined]

    transport = open_transport(settings)
    try:
        transport.create_topics([topic_for(settings.env), dead_letter_topic_for(settings.env)], settings.partitions)
    finally:
        transport.close()
    send_records(settings, to_records(events, settings.env.value))


def send_records(settings: Settings, records: list[Any]) -> None:
    """``records`` put on their topics in batches of 500 (the topics exist)."""
    from payevents.transport import open_transport  # type: ignore[attr-defined]

    transport = open_transport(settings)
    try:
        producer = transport.producer()
        for i in range(0, len(records), 500):
            producer.send(records[i : i + 500])
        producer.close()
    finally:
        transport.close()


def drain(benv: BenchEnv, report: BenchReport, n: int, console: Console) -> None:
    """N PaymentProcessed events already on the channel; the four services started together, each in its own
    process: time from their start until every effect is committed and every e-mail written. Run at N and
    at DRAIN_GROWTH × N (rate and peak RSS per worker as N grows)."""
    sizes = (n, n * DRAIN_GROWTH)
    mem: dict[int, dict[str, int]] = {}
    mem[n] = _drain_once(benv, report, n, console, primary=True)
    # the same N with the workers spawned (PAYEVENTS_WORKER_START=spawn, as before 2026-12-04): each imports
    # payevents itself instead of being forked from a fork server that did it once
    _drain_once(benv, report, n, console, primary=False, start=DRAIN_BASELINE_START)
    mem[sizes[1]] = _drain_once(benv, report, sizes[1], console, primary=False)
    small, big = sizes
    for name, b in mem[big].items():
        a = mem[small].get(name, 0)
        report.add(_fig(benv, "drain", f"peak RSS {name}", b / 1024, "MiB", n=big,
                        target=("<=", (a * 1.10 + 8 * 1024) / 1024, "value"),
                        note=f"{a / 1024:.1f} MiB at N={small:,} → {b / 1024:.1f} MiB at N={big:,} "
                             f"({(b - a) / 1024:+.1f} MiB; flat: within 10 % + 8 MiB)"))


def _drain_once(benv: BenchEnv, report: BenchReport, n: int, console: Console, *, primary: bool,
                start: str | None = None) -> dict[str, int]:
    """One drain run of ``n`` events; ``start``: how the workers are started (None: as ``payevents run`` does,
    ``runtime.procs.start_method``) — from a fork server, one started for this run (its imports and its CPU are the
    run's)."""
    import queue

    from payevents.runtime import procs
    from payevents.services import CONSUMER_SERVICES

    events = shared_events(benv, n)
    label = "" if start is None else f", workers {'spawned' if start == 'spawn' else 'forked from a fork server'}"
    start = start or procs.start_method()
    procs.stop_server()  # an earlier run's, with its imports done: this run starts its own
    timeout = 120 + n / 200
    with benv.sub(f"drain-{n}") as settings:
        fill_channel(settings, events)
        seed_customers(settings)
        _prepare_services(settings)
        # what an e-mail's file costs the filesystem now, beside the data dir (the delivery's tail depends on it)
        file_us = raw.maildir_files(settings.data_dir / "raw-maildir", DRAIN_RAW_FILES, DRAIN_RAW_FILE_BYTES)
        from payevents.store.db import dispose_engines

        dispose_engines()  # no pooled connection crosses into the workers
        ctx = procs.context(start, settings)
        results = ctx.Queue()
        t0 = time.time()
        workers = [procs.start(ctx, drain_worker, (settings, name, n, results, timeout), name=f"bench-drain-{name}")
                   for name in CONSUMER_SERVICES]
        out = []
        try:
            for _ in CONSUMER_SERVICES:
                try:
                    out.append(results.get(timeout=timeout + 60))
                except queue.Empty:
                    raise TimeoutError(f"drain N={n}: services not done within {timeout + 60:.0f}s") from None
        finally:
            for p in workers:
                p.join(30)
                if p.is_alive():
                    p.kill()
                    p.join()
            server_cpu = procs.server_cpu_s()
            procs.stop_server()
            emails = len(os.listdir(settings.data_dir / "maildir" / "new")) \
                if (settings.data_dir / "maildir" / "new").is_dir() else 0
    errors = [f"{r['service']}: {r['error']}" for r in out if r["error"]]
    if errors:
        raise RuntimeError("; ".join(errors))
    t_end = max(r["t_done"] for r in out)
    total = t_end - t0
    steady = t_end - max(r["t_ready"] for r in out)
    per = ", ".join(f"{r['service']} {r['t_done'] - t0:.2f}s" for r in sorted(out, key=lambda r: r["t_done"]))
    per += "".join(f" (notifications' records consumed at {r['t_consumed'] - t0:.2f}s)" for r in out
                   if r["service"] == "notifications")
    cpu = ", ".join(f"{r['service']} {r['cpu_s']:.1f}"
                    + (f" + delivery {r['children_cpu_s']:.1f}" if r.get("children_cpu_s") else "") for r in out)
    if settings.delivery_processes > 1:
        cpu += (f" (the delivery's CPU is that of its processes: up to {settings.delivery_processes}, those after"
                " the first while a backlog lasted)")
    if start == "forkserver":
        cpu += f"; the workers' fork server {server_cpu:.1f} (its imports, once, before the first worker's fork)"
    suffix = label or ("" if primary else f" @N={n:,}")
    report.add(_fig(benv, "drain", f"a Maildir file, raw{suffix}", file_us, "µs CPU", n=DRAIN_RAW_FILES,
                    note=f"the delivery's Maildir write of {DRAIN_RAW_FILE_BYTES / 1024:g} KiB files, no rendering"
                         f" ({DRAIN_RAW_FILES:,} files, one sync) just before the workers start, beside their data:"
                         " this filesystem's cost of a file then (on ext4 without a journal, up to tenfold for about"
                         " a minute after many files were deleted)"))
    report.add(_fig(benv, "drain", f"all four{suffix}", n / total, "events/s", n=n, baseline="consume",
                    target=(">=", 5_000.0, "value") if primary else None,
                    note=f"{total:.2f}s from the processes' start to the last effect and e-mail ({emails:,} e-mails);"
                         f" {per}; CPU s: {cpu}"))
    report.add(_fig(benv, "drain", f"all four, workers ready{suffix}", n / steady, "events/s", n=n,
                    baseline="consume",
                    note=f"{steady:.2f}s from the last worker ready (imports, migrations, group join done: "
                         f"{max(r['t_ready'] for r in out) - t0:.2f}s after the start; CPU s until ready: "
                         + ", ".join(f"{r['service']} {r['cpu_ready_s']:.2f}" for r in out) + ")"))
    rss = {r["service"]: int(r["peak_rss_kb"]) for r in out}
    rss.update({f"{r['service']} (delivery process)": int(r["children_peak_rss_kb"]) for r in out
                if r.get("children_peak_rss_kb")})
    return rss


def _prepare_services(settings: Settings) -> None:
    """Each service's migrations, outside the timed part (as a deployed service finds its schema)."""
    from payevents.runtime.consumer import migrate_runtime
    from payevents.services import CONSUMER_SERVICES, load_service
    from payevents.store import db

    for name in CONSUMER_SERVICES:
        service = load_service(name)
        engine = db.engine_for(settings, name, url=service.database_url)
        migrate_runtime(engine)
        db.migrate(engine, name, service.migrations)
