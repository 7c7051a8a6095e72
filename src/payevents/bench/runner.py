"""Run benchmark suites: ``run_bench("all", ["embedded", "kafka"], "sqlite")``.

Every transport run gets a fresh environment (:func:`payevents.bench.core.bench_env`) and always
measures the baselines first on the same broker and the same events, so each figure can be shown as a
ratio to its limit. A suite that fails is recorded as an error in the report; the others still run.
"""

from __future__ import annotations

import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.console import Console

from payevents.bench.core import BenchEnv, BenchReport, DatabaseName, TransportName, bench_env, finalize, machine_info

SUITES: tuple[str, ...] = ("contracts", "publish", "consume", "drain", "end-to-end", "baseline")
#: suites run by name only, not by ``all`` (scale-out: about 1.5 min per transport, meant for PostgreSQL)
EXTRA_SUITES: tuple[str, ...] = ("scale-out",)
#: default volumes, chosen so that ``bench all`` on both transports stays well under 10 minutes on 2 cores
DEFAULT_N: dict[str, int] = {
    "contracts": 50_000,
    "baseline": 20_000,
    "consume": 20_000,
    "drain": 20_000,
    "publish": 10_000,
    "end-to-end": 10_000,
    "scale-out": 20_000,
}
#: the same knobs scaled for kafka
KAFKA_SCALE = 1.0

SuiteFn = Callable[[BenchEnv, BenchReport, int, Console], None]


def _suite_fns() -> dict[str, SuiteFn]:
    from payevents.bench import scaleout, suites

    return {
        "scale-out": scaleout.scale_out,
        "baseline": suites.baseline,
        "publish": suites.publish,
        "consume": suites.consume,
        "drain": suites.drain,
        "end-to-end": suites.end_to_end,
    }


def n_for(suite: str, n: int | None) -> int:
    return n if n is not None else DEFAULT_N[suite]


def run_bench(
    suite: str,
    transports: Sequence[TransportName] = ("embedded",),
    database: DatabaseName = "sqlite",
    *,
    n: int | None = None,
    env: str = "dev",
    console: Console | None = None,
    profile_dir: Path | None = None,
) -> BenchReport:
    """Run ``suite`` (one of :data:`SUITES` or ``"all"``) and return the finalized report."""
    console = console or Console(stderr=True)
    if suite != "all" and suite not in SUITES + EXTRA_SUITES:
        raise ValueError(f"suite: {suite!r} is not one of {', '.join((*SUITES, *EXTRA_SUITES, 'all'))}")
    chosen = list(SUITES) if suite == "all" else [suite]
    report = BenchReport(meta={**machine_info(), "suite": suite, "transports": list(transports),
                               "database": database, "n": n})
    started = time.perf_counter()
    if "contracts" in chosen:
        _guard(report, console, "contracts", lambda: _profiled(
            profile_dir, "contracts", lambda: _contracts(report, n_for("contracts", n), console)))
    per_transport = [s for s in chosen if s != "contracts"]
    if per_transport:
        # every environment's files, removed once at the end (bench_env: no suite pays for an earlier clean-up)
        with tempfile.TemporaryDirectory(prefix="payevents-bench-", ignore_cleanup_errors=True) as root:
            _per_transport(report, per_transport, transports, database, n, env, console, profile_dir, Path(root))
    report.meta["seconds"] = round(time.perf_counter() - started, 1)
    finalize(report)
    return report


def _per_transport(report: BenchReport, per_transport: list[str], transports: Sequence[TransportName],
                   database: DatabaseName, n: int | None, env: str, console: Console, profile_dir: Path | None,
                   root: Path) -> None:
    """The suites other than contracts, in an environment per transport, each made in ``root``."""
    fns = _suite_fns()
    for transport in transports:
        try:
            with bench_env(transport, database, env=env, parent=root) as benv:
                # the baseline always runs: every other figure is a ratio to it
                names = ["baseline", *[s for s in per_transport if s != "baseline"]]
                for name in names:
                    console.log(f"[bold]{transport}/{database}[/] {name} …")
                    t0 = time.perf_counter()
                    fn, label = fns[name], f"{transport}-{database}-{name}"

                    def call(fn: SuiteFn = fn, benv: BenchEnv = benv, name: str = name, label: str = label) -> None:
                        _profiled(profile_dir, label, lambda: fn(benv, report, n_for(name, n), console))

                    _guard(report, console, f"{transport}/{database} {name}", call)
                    console.log(f"{transport}/{database} {name} done in {time.perf_counter() - t0:.1f}s")
        except Exception as exc:  # broker start, schema drop, ...
            report.errors.append(f"{transport}/{database}: {type(exc).__name__}: {exc}")
            console.print_exception()


def _guard(report: BenchReport, console: Console, what: str, fn: Callable[[], None]) -> None:
    try:
        fn()
    except Exception as exc:
        report.errors.append(f"{what}: {type(exc).__name__}: {exc}")
        console.log(f"[red]{what} failed[/]\n{traceback.format_exc()}")


def _profiled(profile_dir: Path | None, label: str, fn: Callable[[], None]) -> None:
    """Run ``fn``; with ``profile_dir``, under pyinstrument, writing ``profile-{label}.txt`` and ``.html``
    (this process only: workers in their own processes are not in it)."""
    if profile_dir is None:
        fn()
        return
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.001)
    profiler.start()
    try:
        fn()
    finally:
        profiler.stop()
        profile_dir.mkdir(parents=True, exist_ok=True)
        (profile_dir / f"profile-{label}.txt").write_text(profiler.output_text(unicode=True, show_all=False))
        (profile_dir / f"profile-{label}.html").write_text(profiler.output_html())


def _contracts(report: BenchReport, n: int, console: Console) -> None:
    from payevents.bench import suites

    suites.contracts(report, n, console)


def write_outputs(report: BenchReport, out: Path) -> tuple[Path, Path]:
    from payevents.bench.report import write_json, write_png

    return write_json(report, out), write_png(report, out)


def transports_for(suite: str, transport: str | None) -> list[TransportName]:
    """``--transport`` embedded|kafka|both; without it ``all`` runs both, a single suite embedded."""
    if transport is None:
        transport = "both" if suite == "all" else "embedded"
    if transport == "both":
        return ["embedded", "kafka"]
    if transport not in ("embedded", "kafka"):
        raise ValueError(f"--transport: {transport!r} is not one of embedded, kafka, both")
    return [transport]  # type: ignore[list-item]


def main(
    suite: str,
    *,
    transport: str | None = None,
    database: str = "sqlite",
    n: int | None = None,
    out: Path = Path("."),
    env: str = "dev",
    console: Console | None = None,
    profile: bool = False,
) -> BenchReport:
    """What ``payevents bench SUITE`` does: run, print the table, write the JSON and the PNG."""
    from payevents.bench.report import print_report

    if database not in ("sqlite", "postgresql"):
        raise ValueError(f"--database: {database!r} is not one of sqlite, postgresql")
    if n is not None and n < 1:
        raise ValueError(f"--n: {n} must be a positive integer")
    console = console or (Console() if sys.stdout.isatty() else Console(width=200))
    report = run_bench(suite, transports_for(suite, transport), database, n=n, env=env,  # type: ignore[arg-type]
                       console=Console(stderr=True), profile_dir=out if profile else None)
    report.meta["command"] = " ".join(
        ["payevents bench", suite]
        + ([f"--transport {transport}"] if transport else [])
        + ([f"--database {database}"] if database != "sqlite" else [])
        + ([f"--n {n}"] if n is not None else [])
    )
    print_report(report, console)
    json_path, png_path = write_outputs(report, out)
    console.print(f"wrote {json_path} and {png_path}")
    return report
