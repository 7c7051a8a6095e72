"""Output of a benchmark run: a rich table, ``bench-results.json`` and ``bench-results.png``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from payevents.bench.core import BenchReport, Figure, latency_summary

JSON_NAME = "bench-results.json"
PNG_NAME = "bench-results.png"


def _num(x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:,.1f}"
    return f"{x:,.2f}"


def _target(f: Figure) -> str:
    if f.target is None:
        return ""
    op, threshold, what = f.target
    shown = f"{threshold:.0%}" if what == "ratio" else _num(threshold)
    mark = {True: "[green]✓[/]", False: "[red]✗[/]", None: "[yellow]?[/]"}[f.target_met]
    return f"{op} {shown} {mark}"


def table(report: BenchReport) -> Table:
    t = Table(title="payevents bench", show_lines=False)
    for col, justify in (("run", "left"), ("suite", "left"), ("figure", "left"), ("value", "right"),
                         ("unit", "left"), ("× baseline", "right"), ("target", "left"), ("note", "left")):
        t.add_column(col, justify=justify, no_wrap=col != "note", overflow="fold")  # type: ignore[arg-type]
    for f in report.figures:
        ratio = "" if f.ratio is None else f"{f.ratio:.2f}× {f.baseline}"
        run = f"{f.transport}/{f.database}" if f.transport else "any"
        t.add_row(run, f.suite, f.name, _num(f.value), f.unit, ratio, _target(f), f.note)
    return t


def print_report(report: BenchReport, console: Console | None = None) -> None:
    console = console or Console()
    console.print(table(report))
    meta = report.meta
    if meta:
        console.print(
            f"[dim]{meta.get('cpu', '')} · {meta.get('cores')} cores · python {meta.get('python')} · "
            f"load at start {meta.get('loadavg_at_start')} · {meta.get('when')}[/]"
        )
    for err in report.errors:
        console.print(f"[red]error:[/] {err}")


def write_json(report: BenchReport, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / JSON_NAME
    path.write_text(json.dumps(report.to_json(), indent=2, default=_jsonable) + "\n")
    return path


def _jsonable(x: Any) -> Any:
    if isinstance(x, float) and math.isnan(x):
        return None
    return str(x)


def write_png(report: BenchReport, out: Path) -> Path:
    """Left: publish-delay distributions (CDF, log scale). Right: throughput per suite with baselines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    path = out / PNG_NAME
    rates = [f for f in report.figures if "/s" in f.unit]
    fig, (ax_lat, ax_tp) = plt.subplots(1, 2, figsize=(15, max(5.0, 0.32 * len(rates) + 2)))
    if report.latencies:
        for label, values in report.latencies.items():
            s = sorted(v for v in values if v > 0)
            if not s:
                continue
            ys = [(i + 1) / len(s) for i in range(len(s))]
            summ = latency_summary(s)
            ax_lat.plot(s, ys, label=f"{label} (p99 {summ['p99']:.1f} ms)")
        ax_lat.set_xscale("log")
        ax_lat.axvline(50, color="red", linestyle="--", linewidth=1, label="p99 target 50 ms")
        ax_lat.set_xlabel("publish delay (ms, outbox commit → broker ack)")
        ax_lat.set_ylabel("fraction of events")
        ax_lat.set_title("latency distribution")
        ax_lat.legend(fontsize=7, loc="lower right")
        ax_lat.grid(True, which="both", alpha=0.3)
    else:
        ax_lat.text(0.5, 0.5, "no latency samples in this run", ha="center", va="center")
        ax_lat.set_axis_off()
    if rates:
        labels = [f"{f.transport + '/' + f.database + ' ' if f.transport else ''}{f.suite}: {f.name}" for f in rates]
        colors = ["#888888" if f.suite == "baseline" else "#1f77b4" for f in rates]
        ax_tp.barh(range(len(rates)), [f.value for f in rates], color=colors)
        ax_tp.set_yticks(range(len(rates)), labels, fontsize=7)
        ax_tp.invert_yaxis()
        ax_tp.set_xscale("log")
        ax_tp.set_xlabel("per second (grey: baseline)")
        ax_tp.set_title("throughput per suite")
        for i, f in enumerate(rates):
            txt = _num(f.value) + ("" if f.ratio is None else f"  ({f.ratio:.2f}×)")
            ax_tp.text(f.value, i, " " + txt, va="center", fontsize=7)
        ax_tp.grid(True, axis="x", which="both", alpha=0.3)
    else:
        ax_tp.set_axis_off()
    meta = report.meta
    fig.suptitle(f"payevents bench — {meta.get('cores', '?')} cores, {meta.get('cpu', '')}, {meta.get('when', '')}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
