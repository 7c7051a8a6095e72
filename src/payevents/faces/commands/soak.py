"""``payevents soak``: N seeded runs of the whole platform under faults (:mod:`payevents.bench.soak`)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Annotated

import typer

from payevents.faces.options import MAX_WAIT_S
from payevents.runtime.limits import MAX_RUN_SIZE, MAX_STORED


def soak(
    runs: Annotated[int, typer.Option("--runs", min=1, max=10_000, help="how many runs (run i uses seed + i)")] = 3,
    payments: Annotated[int, typer.Option("--payments", min=1, max=MAX_RUN_SIZE,
                                          help="payments written per run")] = 300,
    seed: Annotated[int | None, typer.Option("--seed", min=0, max=MAX_STORED,
                                             help="seed of the first run (default: a random one, printed)")]
    = None,
    transport: Annotated[str, typer.Option("--transport", help="embedded, or kafka (a local three-node "
                                                                 "Apache Kafka is started)")] = "embedded",
    database: Annotated[str, typer.Option("--database", help="sqlite, or postgresql (fresh schemas per run in "
                                                               "PAYEVENTS_SOAK_PG_URL)")] = "sqlite",
    keep: Annotated[Path | None, typer.Option("--keep", help="keep every run's data dir under this folder "
                                                               "(default: a temporary one, removed)")] = None,
    drain_timeout: Annotated[float, typer.Option("--drain-timeout", min=1, max=MAX_WAIT_S,
                                                 help="seconds a run may take to drain after the last write")
                             ] = 300.0,
    full_disk: Annotated[bool, typer.Option("--full-disk", help="each run's data dir on a tmpfs of its own "
                                                                "(root), filled to the last byte for 3-6 s "
                                                                "a third of the way through the writes")] = False,
) -> None:
    """Runs of a realistic payment mix with hostile records, workers (and brokers) killed at random; one
    line per run: events, kills, lost, duplicated effects, order violations, ledger imbalance, card numbers
    found in any store or log. Exits 1 when any of those is not zero."""
    from payevents.bench.soak import soak as run_soak

    first = seed if seed is not None else random.SystemRandom().randrange(1, 10**6)
    typer.echo(f"payevents soak: {runs} run(s) x {payments} payments, seed {first}, {transport}/{database}")
    try:
        results = run_soak(runs, payments, first, transport=transport, database=database, keep=keep,
                           drain_timeout=drain_timeout, full_disk=full_disk, say=typer.echo)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    bad = [r for r in results if not r.clean]
    total = {k: sum(getattr(r, k) for r in results) for k in
             ("events", "kills", "broker_kills", "lost", "duplicated", "order_violations", "ledger_imbalance",
              "card_numbers")}
    typer.echo(f"total: {total['events']} events, {total['kills'] + total['broker_kills']} kills; lost "
               f"{total['lost']}, duplicated effects {total['duplicated']}, order violations "
               f"{total['order_violations']}, ledger imbalance {total['ledger_imbalance']}, card numbers found "
               f"{total['card_numbers']} — {'FAILED' if bad else 'ok'}")
    if bad:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("soak")(soak)
