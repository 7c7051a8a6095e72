"""The benchmark harness: a fresh environment per run, figures with baselines and targets, percentiles.

A :class:`BenchEnv` gives one run its own temporary data directory, its own Apache Kafka for Kafka runs
and its own PostgreSQL schemas (dropped afterwards). Suites append :class:`Figure` values (and latency
samples) to a :class:`BenchReport`; :func:`finalize` fills in every figure's ratio to its baseline.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import platform
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from payevents.contracts.channel import parse_env
from payevents.settings import Settings

TransportName = Literal["embedded", "kafka"]
DatabaseName = Literal["sqlite", "postgresql"]
PG_URL = os.environ.get("PAYEVENTS_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@dataclasses.dataclass
class Figure:
    """One measured number. ``baseline`` names another figure (same suite run) this one is divided by."""

    suite: str
    name: str
    value: float
    unit: str
    transport: str = ""
    database: str = ""
    baseline: str | None = None
    ratio: float | None = None
    #: (comparison, threshold, what): e.g. (">=", 0.30, "ratio") or ("<=", 50.0, "value")
    target: tuple[str, float, str] | None = None
    target_met: bool | None = None
    n: int | None = None
    note: str = ""

    @property
    def key(self) -> str:
        return f"{self.transport}/{self.database}/{self.suite}/{self.name}"


@dataclasses.dataclass
class BenchReport:
    figures: list[Figure] = dataclasses.field(default_factory=list)
    #: latency samples in milliseconds by label, e.g. "publish delay @1000/s (embedded)"
    latencies: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    errors: list[str] = dataclasses.field(default_factory=list)
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def add(self, fig: Figure) -> Figure:
        self.figures.append(fig)
        return fig

    def find(self, transport: str, database: str, suite: str, name: str) -> Figure | None:
        for f in self.figures:
            if (f.transport, f.database, f.suite, f.name) == (transport, database, suite, name):
                return f
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "meta": self.meta,
            "figures": [dataclasses.asdict(f) for f in self.figures],
            "latency_summary": {k: latency_summary(v) for k, v in self.latencies.items()},
            "errors": self.errors,
        }


def finalize(report: BenchReport) -> None:
    """Compute each figure's ratio to its baseline and whether its target is met."""
    for f in report.figures:
        if f.baseline is not None:
            base = report.find(f.transport, f.database, "baseline", f.baseline) or report.find(
                f.transport, "", "baseline", f.baseline
            )
            if base is not None and base.value > 0:
                f.ratio = f.value / base.value
        if f.target is not None:
            op, threshold, what = f.target
            x = f.ratio if what == "ratio" else f.value
            if x is None:
                f.target_met = None
            else:
                f.target_met = x >= threshold if op == ">=" else x <= threshold


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of already sorted values; NaN when empty."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def latency_summary(values: Sequence[float]) -> dict[str, float]:
    s = sorted(values)
    return {
        "count": len(s),
        "p50": percentile(s, 50),
        "p99": percentile(s, 99),
        "p99.9": percentile(s, 99.9),
        "max": s[-1] if s else math.nan,
    }


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "loadavg_at_start": [round(x, 2) for x in load],
        "command": " ".join(["payevents", *sys.argv[1:]]) if sys.argv and "payevents" in sys.argv[0] else "",
    }


class Timer:
    """``with Timer() as t: ...`` then ``t.seconds``."""

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


@dataclasses.dataclass
class BenchEnv:
    """Where one suite run happens: settings pointing at a fresh data dir (and broker/schemas)."""

    settings: Settings
    transport: TransportName
    database: DatabaseName
    tmp: Path
    broker: Any = None  # LocalKafka for kafka runs
    #: things suites share within one run (the generated events, ...)
    cache: dict[str, Any] = dataclasses.field(default_factory=dict)

    @contextlib.contextmanager
    def sub(self, label: str) -> Iterator[Settings]:
        """Settings for a sub-run with a clean channel: its own data dir (embedded log and SQLite stores),
        its own PostgreSQL schemas, and on Kafka a fresh channel on the run's broker (its topics deleted and
        created anew, so they and the consumer groups' offsets on them start empty)."""
        from payevents.store.db import dispose_engines

        tag = f"{label.replace('-', '_')[:12]}{uuid.uuid4().hex[:4]}"
        changes: dict[str, Any] = {"data_dir": self.tmp / tag}
        if self.database == "postgresql":
            changes["db_schema_prefix"] = f"{self.settings.db_schema_prefix}{tag}_"
        try:
            if self.transport == "kafka":
                from payevents.localkafka import fresh_channel

                fresh_channel(self.broker.bootstrap)
            yield dataclasses.replace(self.settings, **changes)
        finally:
            dispose_engines()


@contextlib.contextmanager
def bench_env(
    transport: TransportName = "embedded",
    database: DatabaseName = "sqlite",
    *,
    env: str = "dev",
    partitions: int = 6,
    pg_url: str = PG_URL,
    parent: Path | None = None,
) -> Iterator[BenchEnv]:
    """A fresh temporary data dir, a local Apache Kafka for kafka, unique PostgreSQL schemas; all removed after —
    but for the data dir when it is made in ``parent``: a run of several environments removes their files once, at
    its end (:func:`payevents.bench.runner.run_bench`), so that no suite pays for an earlier one's clean-up. On ext4
    without a journal (this machine's), a file created within about a minute of many deletions costs up to ten
    times as much (:func:`payevents.bench.baseline.maildir_files`), and the embedded run's clean-up deleted its drains'
    120,000 e-mails minutes before the Kafka run's drain wrote its own."""
    from payevents.store.db import dispose_engines

    tmp = Path(tempfile.mkdtemp(prefix="payevents-bench-", dir=parent))
    prefix = f"bench{uuid.uuid4().hex[:8]}_"
    broker = None
    try:
        values: dict[str, Any] = {"env": parse_env(env), "data_dir": tmp / "data", "partitions": partitions}
        if database == "postgresql":
            values["database_url"] = pg_url
            values["db_schema_prefix"] = prefix
        if transport == "kafka":
            from payevents.localkafka import LocalKafka, bench_kafka_config

            broker = LocalKafka().start()
            values["broker"] = broker.url
            values["kafka_config"] = bench_kafka_config()
        settings = Settings(**values)
        settings.validate()
        yield BenchEnv(settings=settings, transport=transport, database=database, tmp=tmp, broker=broker)
    finally:
        dispose_engines()
        if broker is not None:
            broker.stop()
        if database == "postgresql":
            drop_schemas(pg_url, prefix)
        if parent is None:
            shutil.rmtree(tmp, ignore_errors=True)


def drop_schemas(pg_url: str, prefix: str) -> None:
    """Drop every PostgreSQL schema whose name starts with ``prefix`` (only ours: the prefix is unique). The
    prefix is compared as text (``starts_with``), not as a LIKE pattern in which its ``_`` would match any
    character."""
    import sqlalchemy as sa

    engine = sa.create_engine(pg_url)
    try:
        with engine.begin() as conn:
            names = conn.exec_driver_sql(
                "SELECT nspname FROM pg_namespace WHERE starts_with(nspname::text, %(p)s)", {"p": prefix}
            ).scalars().all()
            for name in names:
                conn.exec_driver_sql(f'DROP SCHEMA "{name}" CASCADE')
    finally:
        engine.dispose()


