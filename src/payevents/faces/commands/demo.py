"""``payevents demo``: the main job — the whole platform on the embedded default (or Kafka/PostgreSQL)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from payevents.faces.options import Common, common
from payevents.runtime.limits import MAX_RUN_SIZE, MAX_STORED


def register(app: typer.Typer) -> None:
    @app.command("demo")
    @common(broker=True)
    def demo(
        payments: Annotated[int, typer.Option("--payments", min=8, max=MAX_RUN_SIZE,
                                              help="how many payments to drive")] = 200,
        seed: Annotated[int, typer.Option("--seed", min=0, max=MAX_STORED, help="seed of the payment mix")] = 7,
        serve: Annotated[bool, typer.Option("--serve", help="keep the dashboard up afterwards")] = False,
        port: Annotated[int, typer.Option("--port", min=0, max=65535, help="dashboard port with --serve")] = 8000,
        json_out: Annotated[Path | None, typer.Option("--json", help="also write the summary as JSON")] = None,
        *, o: Common,
    ) -> None:
        """Run the relay and the four services, drive a realistic mix of payments, print the summary."""
        from payevents.faces.demo import as_json, run_demo

        settings = o.settings()
        console = Console()
        where = settings.broker if settings.is_kafka else f"embedded log in {settings.data_dir}/channel.db"
        store = settings.redacted()["database_url"] or f"SQLite files in {settings.data_dir}/"
        console.print(f"[bold]payevents demo[/] env={settings.env.value} · channel: {where} · stores: {store}")
        with Progress(TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=False) as bar:
            tasks: dict[str, Any] = {}

            def progress(stage: str, done: int, total: int) -> None:
                if stage not in tasks:
                    tasks[stage] = bar.add_task(stage, total=total)
                bar.update(tasks[stage], completed=done, total=total)

            result = run_demo(settings, payments=payments, seed=seed, progress=progress)
        print_summary(console, result)
        if json_out:
            json_out.write_text(json.dumps(as_json(result), indent=2))
        if not result.ledger_ok:
            raise typer.Exit(1)
        if serve:
            import uvicorn

            from payevents.faces.web import create_app

            console.print(f"dashboard: http://127.0.0.1:{port}/  (Ctrl-C to stop)")
            uvicorn.run(create_app(settings), host="127.0.0.1", port=port, log_level="warning")


def print_summary(console: Console, r: Any) -> None:
    from payevents.faces.demo import money_str

    t = Table(title=f"payevents demo — summary ({r.seconds:.1f} s)", show_header=False, title_justify="left")
    t.add_column("what", style="bold")
    t.add_column("figures")
    t.add_row("this run", f"{r.payments} payments driven: {r.processed} processed, {r.failed} failed/declined; "
              f"{r.events} events through the outbox, {r.legacy_published} legacy-envelope events, "
              f"{r.malformed_published} malformed records")
    if r.delays:
        t.add_row("publish delay", f"p50 {r.delays['p50'] * 1000:.1f} ms · p99 {r.delays['p99'] * 1000:.1f} ms · "
                  f"max {r.delays['max'] * 1000:.1f} ms over {int(r.delays['count'])} events — rule: ≤ 5 s, "
                  f"{r.breaches} breaches")
    ledger = "balanced per currency" if r.ledger_ok else "NOT BALANCED: " + "; ".join(r.ledger_violations[:3])
    tb = ", ".join(f"{money_str(c['total_debits_minor'], c['currency'])} debited = credited" for c in r.trial_balance)
    t.add_row("ledger", f"{ledger}" + (f" — {tb}" if tb else ""))
    inv = ", ".join(f"{k}: {v}" for k, v in sorted(r.invoices_by_status.items()))
    credits = ", ".join(f"{c['customer_id']} {money_str(c['amount_minor'], c['currency'])}" for c in r.credits)
    t.add_row("invoices", f"{inv}; unapplied/held payments: {r.unapplied}" + (f"; customer credit: {credits}"
                                                                             if credits else ""))
    rev = ", ".join(f"{row['currency']} {row['amount']} ({row['payments']} payments)" for row in r.revenue)
    t.add_row("revenue", rev or "-")
    e = r.emails
    reasons = "; ".join(f"{st} {code}: {n}" for st in ("skipped", "failed")
                        for code, n in e.get("reasons", {}).get(st, {}).items())
    t.add_row("e-mails", f"sent {e.get('sent', 0)}, pending {e.get('pending', 0)}, skipped {e.get('skipped', 0)}, "
              f"failed {e.get('failed', 0)}" + (f" — {reasons}" if reasons else ""))
    dl = "\n".join(escape(f"{reason}  [{', '.join(services)}]") for reason, services in sorted(r.dead_letters.items()))
    t.add_row("dead letters", dl or "none")
    console.print(t)
