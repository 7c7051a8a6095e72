"""``payevents bench …``: benchmarks that print figures. ``contracts`` is one command; more suites join the group."""

from __future__ import annotations

import json
from typing import Annotated

import typer

bench_app = typer.Typer(
    name="bench",
    help="Benchmarks: print figures (events/s, latencies); tests never assert on them.",
    no_args_is_help=True,
)


@bench_app.command("contracts")
def contracts(
    n: Annotated[int, typer.Option("--n", min=1, help="events per measured operation")] = 50_000,
    repeat: Annotated[int, typer.Option("--repeat", min=1, help="runs per operation; the best counts")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="print the figures as JSON")] = False,
) -> None:
    """Events/s per core for decode+validate and validate+encode of PaymentProcessed (plus legacy, rejects)."""
    from payevents.bench.contracts import TARGET_DECODE_PER_S, format_figures, run_contracts

    figures = run_contracts(n=n, repeat=repeat)
    if as_json:
        rows = [
            {
                "name": f.name,
                "n": f.n,
                "perSecondPerCore": round(f.per_s),
                "perSecondWall": round(f.per_s_wall),
                "cpuSeconds": f.cpu_s,
                "wallSeconds": f.wall_s,
                "note": f.note,
            }
            for f in figures
        ]
        typer.echo(json.dumps({"suite": "contracts", "targetDecodePerSecond": TARGET_DECODE_PER_S, "figures": rows}))
        return
    typer.echo(f"contracts: best of {repeat}, one process, rates from CPU time (per core)")
    for line in format_figures(figures):
        typer.echo(line)


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")
