"""``payevents analytics report|metrics``."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Annotated

import typer

from payevents.faces.options import Common, common, make_table, print_table

analytics_app = typer.Typer(name="analytics", help="Payment metrics and revenue reports (per currency).",
                            no_args_is_help=True)


def _date(value: str, option: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)", param_hint=option) from None


@analytics_app.command("report")
@common(output="csv")
def report_cmd(
    from_: Annotated[str, typer.Option("--from", help="first day, YYYY-MM-DD (UTC)")],
    to: Annotated[str, typer.Option("--to", help="last day, YYYY-MM-DD (UTC), inclusive")],
    by: Annotated[str, typer.Option("--by", help="day or month")] = "day",
    chart: Annotated[Path | None, typer.Option("--chart", help="also draw the report to this PNG (or .svg)")] = None,
    *, o: Common,
) -> None:
    """Revenue of processed payments per day or month and currency (never summed across currencies)."""
    from payevents.services import analytics

    if by not in ("day", "month"):
        raise typer.BadParameter(f"{by!r} must be day or month", param_hint="--by")
    fmt = o.fmt
    settings = o.settings()
    d0, d1 = _date(from_, "--from"), _date(to, "--to")
    rows = analytics.report(settings, d0, d1, by=by)  # type: ignore[arg-type]
    if fmt == "csv":
        typer.echo(analytics.to_csv(rows), nl=False)
    elif fmt == "json":
        typer.echo(analytics.to_json(rows))
    else:
        from rich.console import Console

        table = make_table(f"Revenue per {by}, {d0.isoformat()} to {d1.isoformat()}",
                           ["period", "currency", ("payments", "right"), ("revenue", "right"),
                            ("minor units", "right"), ("failed", "right")])
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
@common(output="format")
def metrics_cmd(*, o: Common) -> None:
    """Counts and volumes per currency, method and merchant, failure rate per reason, stage times."""
    from payevents.services import analytics

    m = analytics.metrics(o.settings())
    if o.json:
        typer.echo(json.dumps(m, indent=2))
        return
    print_table("Events", ["event type", ("count", "right")], ([k, str(v)] for k, v in m["events"].items()))
    for key, title, label in (("processed", "Processed per currency", None),
                              ("by_method", "Processed per method type", "method_type"),
                              ("by_merchant", "Processed per merchant", "merchant_id")):
        print_table(title, [*([label] if label else []), "currency", ("payments", "right"), ("amount", "right")],
                    ([*([str(row[label] or "-")] if label else []), row["currency"], str(row["payments"]),
                      row["amount"]] for row in m[key]))  # fmt: skip
    f = m["failures"]
    print_table(f"Failures: {f['total']} (rate {f['rate']:.2%})", ["reason", "count", "rate", "stages"],
                ([r["reason"], str(r["count"]), f"{r['rate']:.2%}",
                  ", ".join(f"{k}: {v}" for k, v in r["stages"].items())] for r in f["by_reason"]))  # fmt: skip
    print_table("Stage times (ms)", ["stage", *((c, "right") for c in ("count", "avg", "p50", "p95", "max"))],
                ([name.replace("_", " "), str(d["count"]),
                  *(str(d[k]) if d[k] is not None else "-" for k in ("avg_ms", "p50_ms", "p95_ms", "max_ms"))]
                 for name, d in m["timings"].items()))  # fmt: skip


def register(app: typer.Typer) -> None:
    app.add_typer(analytics_app, name="analytics")
