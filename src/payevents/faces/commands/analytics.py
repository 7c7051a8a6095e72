"""``payevents analytics report|metrics``."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Annotated

import typer

from payevents.faces.options import (
    DatabaseUrlOpt,
    DataDirOpt,
    EnvOpt,
    FormatFlag,
    Output,
    OutputCsv,
    OutputCsvOpt,
    OutputOpt,
    load_settings,
    output_format,
)

analytics_app = typer.Typer(name="analytics", help="Payment metrics and revenue reports (per currency).",
                            no_args_is_help=True)


def _date(value: str, option: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)", param_hint=option) from None


@analytics_app.command("report")
def report_cmd(
    from_: Annotated[str, typer.Option("--from", help="first day, YYYY-MM-DD (UTC)")],
    to: Annotated[str, typer.Option("--to", help="last day, YYYY-MM-DD (UTC), inclusive")],
    by: Annotated[str, typer.Option("--by", help="day or month")] = "day",
    output: OutputCsvOpt = OutputCsv.table,
    legacy_format: FormatFlag = None,
    chart: Annotated[Path | None, typer.Option("--chart", help="also draw the report to this PNG (or .svg)")] = None,
    env: EnvOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """Revenue of processed payments per day or month and currency (never summed across currencies)."""
    from payevents.services import analytics

    if by not in ("day", "month"):
        raise typer.BadParameter(f"{by!r} must be day or month", param_hint="--by")
    fmt = output_format(output, legacy_format, ("table", "csv", "json"))
    settings = load_settings(env, None, data_dir, database_url)
    d0, d1 = _date(from_, "--from"), _date(to, "--to")
    rows = analytics.report(settings, d0, d1, by=by)  # type: ignore[arg-type]
    if fmt == "csv":
        typer.echo(analytics.to_csv(rows), nl=False)
    elif fmt == "json":
        typer.echo(analytics.to_json(rows))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"Revenue per {by}, {d0.isoformat()} to {d1.isoformat()}")
        for name, justify in (("period", "left"), ("currency", "left"), ("payments", "right"),
                              ("revenue", "right"), ("minor units", "right"), ("failed", "right")):
            table.add_column(name, justify=justify)  # type: ignore[arg-type]
        for r in rows:
            table.add_row(r.period, r.currency, str(r.payments), r.amount, str(r.amount_minor), str(r.failed))
        totals: dict[str, list[int]] = {}
        for r in rows:
            t = totals.setdefault(r.currency, [0, 0, 0])
            t[0] += r.payments
            t[1] += r.amount_minor
            t[2] += r.failed
        if totals:
            from payevents.services.analytics.money import from_minor

            table.add_section()
            for cur, (n, minor, failed) in sorted(totals.items()):
                table.add_row("total", cur, str(n), str(from_minor(minor, cur)), str(minor), str(failed), style="bold")
        Console().print(table)
        if not rows:
            typer.echo("no payments in this period")
    if chart is not None:
        path = analytics.render_chart(rows, chart)
        typer.echo(f"chart written to {path}", err=fmt != "table")


@analytics_app.command("metrics")
def metrics_cmd(
    output: OutputOpt = Output.table,
    legacy_format: FormatFlag = None,
    env: EnvOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """Counts and volumes per currency, method and merchant, failure rate per reason, stage times."""
    from payevents.services import analytics

    fmt = output_format(output, legacy_format, ("table", "json"))
    settings = load_settings(env, None, data_dir, database_url)
    m = analytics.metrics(settings)
    if fmt == "json":
        typer.echo(json.dumps(m, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    ev = Table(title="Events")
    ev.add_column("event type")
    ev.add_column("count", justify="right")
    for k, v in m["events"].items():
        ev.add_row(k, str(v))
    console.print(ev)
    for key, title, label in (("processed", "Processed per currency", None),
                              ("by_method", "Processed per method type", "method_type"),
                              ("by_merchant", "Processed per merchant", "merchant_id")):
        t = Table(title=title)
        if label:
            t.add_column(label)
        for col in ("currency", "payments", "amount"):
            t.add_column(col, justify="right" if col != "currency" else "left")
        for row in m[key]:
            cells = [str(row[label] or "-")] if label else []
            t.add_row(*cells, row["currency"], str(row["payments"]), row["amount"])
        console.print(t)
    f = m["failures"]
    ft = Table(title=f"Failures: {f['total']} (rate {f['rate']:.2%})")
    for col in ("reason", "count", "rate", "stages"):
        ft.add_column(col)
    for r in f["by_reason"]:
        ft.add_row(r["reason"], str(r["count"]), f"{r['rate']:.2%}",
                   ", ".join(f"{k}: {v}" for k, v in r["stages"].items()))
    console.print(ft)
    tt = Table(title="Stage times (ms)")
    for col in ("stage", "count", "avg", "p50", "p95", "max"):
        tt.add_column(col, justify="right" if col != "stage" else "left")
    for name, d in m["timings"].items():
        tt.add_row(name.replace("_", " "), str(d["count"]),
                   *(str(d[k]) if d[k] is not None else "-" for k in ("avg_ms", "p50_ms", "p95_ms", "max_ms")))
    console.print(tt)


def register(app: typer.Typer) -> None:
    app.add_typer(analytics_app, name="analytics")
