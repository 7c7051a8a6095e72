"""``payevents bench SUITE``: benchmarks that print a table, write bench-results.json and a PNG plot.

SUITE is contracts, publish, consume, end-to-end, baseline or all. The baselines (raw confluent-kafka /
raw SQLite loops on the same broker and events) always run with a transport suite, and every figure is
shown as a ratio to its baseline. Tests never assert on these numbers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from payevents.faces.options import JsonFlag, Output, OutputOpt, json_wanted
from payevents.runtime.limits import MAX_RUN_SIZE

bench_app = typer.Typer(
    name="bench",
    help="Benchmarks: print figures (events/s, latencies) against raw baselines; tests never assert on them.",
    no_args_is_help=True,
)

TransportOpt = Annotated[
    str | None,
    typer.Option("--transport", help="embedded, kafka (a local Apache Kafka is started) or both; "
                                     "default: both for `all`, embedded otherwise"),
]
DatabaseOpt = Annotated[str, typer.Option("--database", help="sqlite (default) or postgresql (local, unique schemas)")]
NOpt = Annotated[int | None, typer.Option("--n", min=1, max=MAX_RUN_SIZE,
                                          help="events/payments per suite (default: per suite)")]
OutOpt = Annotated[Path, typer.Option("--out", help="directory for bench-results.json and bench-results.png")]
EnvOpt = Annotated[str, typer.Option("--env", help="channel env of the benchmark runs (dev, sit, prod)")]
ProfileOpt = Annotated[bool, typer.Option("--profile", help="pyinstrument profile per suite into --out (this process)")]


def _run(suite: str, transport: str | None, database: str, n: int | None, out: Path, env: str, profile: bool) -> None:
    from payevents.bench.runner import main

    try:
        report = main(suite, transport=transport, database=database, n=n, out=out, env=env, profile=profile)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if report.errors:
        raise typer.Exit(1)


def _suite_command(suite: str, doc: str) -> None:
    def command(
        transport: TransportOpt = None,
        database: DatabaseOpt = "sqlite",
        n: NOpt = None,
        out: OutOpt = Path("."),
        env: EnvOpt = "dev",
        profile: ProfileOpt = False,
    ) -> None:
        _run(suite, transport, database, n, out, env, profile)

    command.__doc__ = doc
    bench_app.command(suite)(command)


@bench_app.command("contracts")
def contracts(
    n: Annotated[int, typer.Option("--n", min=1, max=MAX_RUN_SIZE, help="events per measured operation")] = 50_000,
    repeat: Annotated[int, typer.Option("--repeat", min=1, max=100, help="runs per operation; the best counts")] = 3,
    output: OutputOpt = Output.table,
    json_flag: JsonFlag = False,
    out: OutOpt = Path("."),
    profile: ProfileOpt = False,
) -> None:
    """Events/s per core for decode+validate and validate+encode of PaymentProcessed (plus legacy, rejects)."""
    as_json = json_wanted(output, json_flag)
    if as_json:
        from payevents.bench.contracts import TARGET_DECODE_PER_S, run_contracts

        figures = run_contracts(n=n, repeat=repeat)
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
    from payevents.bench import suites

    suites.CONTRACTS_REPEAT = repeat
    _run("contracts", None, "sqlite", n, out, "dev", profile)


_suite_command("publish", "Payments through the outbox and the relay: throughput, publish delay at "
                          "100/1,000/2,000/5,000 payments/s.")
_suite_command("consume", "Per service, a pre-filled channel of N events consumed with effects committed: events/s.")
_suite_command("drain", "N PaymentProcessed events on the channel, the four services started together (own "
                        "processes) until every effect and e-mail is written: events/s at N and 5×N, peak RSS.")
_suite_command("end-to-end", "N payments to all four services' effects (each in its own process): payments/s, "
                             "time to the last effect, peak RSS at N/5 and N.")
_suite_command("scale-out", "One service (ledger) with 1, 2 and 3 instances in its consumer group (own processes) on a "
                            "pre-filled channel: events/s per group size; use --database postgresql.")
_suite_command("baseline", "Raw confluent-kafka produce/consume+decode and raw SQLite insert/select: the limits.")
_suite_command("all", "Every suite (both transports unless --transport): the `make bench` set, < 10 minutes.")



def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")
