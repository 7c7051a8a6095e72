"""The suites. Each takes the run's environment, the report to add figures to, N and a console."""

from __future__ import annotations

import uuid

from rich.console import Console

from payevents.bench import baseline as raw
from payevents.bench.core import BenchEnv, BenchReport, Figure
from payevents.bench.events import BenchEvent, make_events


def shared_events(benv: BenchEnv, n: int) -> list[BenchEvent]:
    """The run's events (the same for the baselines and the suites), generated once, grown on demand."""
    events: list[BenchEvent] = benv.cache.get("events", [])
    if len(events) < n:
        run = benv.cache.setdefault("run", uuid.uuid4().hex[:8])
        events = make_events(n, env=benv.settings.env.value, run=run)
        benv.cache["events"] = events
    return events[:n]


def _fig(benv: BenchEnv, suite: str, name: str, value: float, unit: str, **kw: object) -> Figure:
    return Figure(suite=suite, name=name, value=value, unit=unit, transport=benv.transport,
                  database=benv.database, **kw)  # type: ignore[arg-type]


# -- contracts ---------------------------------------------------------------------------------------


def contracts(report: BenchReport, n: int, console: Console) -> None:
    """decode+validate and validate+encode of PaymentProcessed (bench/contracts.py), events/s per core."""
    raise NotImplementedError("payevents.bench.contracts has not landed yet")


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
        consume = raw.kafka_consume(bootstrap, topic, len(events))
        how_p, how_c = "confluent-kafka produce loop, acks=all", "confluent-kafka consume + decode_event"
    else:
        path = benv.tmp / f"raw-{uuid.uuid4().hex[:6]}.db"
        produce = raw.sqlite_insert(path, events, partitions)
        consume = raw.sqlite_select(path, len(events), partitions)
        how_p, how_c = "sqlite3 executemany, 500 rows/tx", "sqlite3 select 500 rows + decode_event"
    report.add(_fig(benv, "baseline", "produce", produce, "events/s", n=len(events), note=how_p))
    report.add(_fig(benv, "baseline", "consume", consume, "events/s", n=len(events), note=how_c))


# -- publish / consume / end-to-end ----------------------------------------------------------------------


def publish(benv: BenchEnv, report: BenchReport, n: int, console: Console) -> None:
    raise NotImplementedError("publish suite: waiting for runtime.outbox/relay and services.payments")


def consume(benv: BenchEnv, report: BenchReport, n: int, console: Console) -> None:
    raise NotImplementedError("consume suite: waiting for runtime.consumer and the services")


def end_to_end(benv: BenchEnv, report: BenchReport, n: int, console: Console) -> None:
    raise NotImplementedError("end-to-end suite: waiting for payments, relay, consumer and the services")
