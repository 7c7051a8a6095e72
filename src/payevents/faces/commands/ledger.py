"""``payevents ledger journal|balances|verify``."""

from __future__ import annotations

from typing import Annotated

import msgspec
import typer

from payevents.faces.options import (
    DatabaseUrlOpt,
    DataDirOpt,
    EnvOpt,
    JsonFlag,
    Output,
    OutputOpt,
    json_wanted,
    load_settings,
)

app = typer.Typer(name="ledger", no_args_is_help=True,
                  help="The Ledger: journal entries (debit Cash, credit Accounts Receivable), trial balance, verify.")


def _json(value: object) -> None:
    typer.echo(msgspec.json.format(msgspec.json.encode(value), indent=2).decode())


@app.command("journal")
def journal_cmd(
    payment: Annotated[str | None, typer.Option("--payment", help="only the entries of this paymentId")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1)] = 100,
    output: OutputOpt = Output.table, json_flag: JsonFlag = False,
    env: EnvOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """Journal entries with their lines, oldest first."""
    as_json = json_wanted(output, json_flag)
    from payevents.services import ledger

    entries = ledger.journal(load_settings(env, None, data_dir, database_url), payment_id=payment, limit=limit)
    if as_json:
        _json(entries)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Journal" + (f" of {payment}" if payment else ""))
    for col, justify in [("posted", "left"), ("entry / payment", "left"), ("account", "left"), ("debit", "right"),
                         ("credit", "right"), ("cur", "left")]:  # fmt: skip
        table.add_column(col, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for e in entries:
        for i, ln in enumerate(e.lines):
            table.add_row(e.posted_at.strftime("%Y-%m-%d %H:%M:%S") if i == 0 else "",
                          (f"{e.payment_id}{' (legacy)' if e.legacy else ''}" if i == 0 else
                           (e.description if i == 1 else "")),
                          ln.account_name, str(ln.amount) if ln.side == "D" else "",
                          str(ln.amount) if ln.side == "C" else "", ln.currency)  # fmt: skip
    Console().print(table)


@app.command("balances")
def balances_cmd(
    output: OutputOpt = Output.table, json_flag: JsonFlag = False,
    env: EnvOpt = None, data_dir: DataDirOpt = None, database_url: DatabaseUrlOpt = None
) -> None:
    """The trial balance per currency: each account's debits and credits; debits = credits."""
    as_json = json_wanted(output, json_flag)
    from payevents.services import ledger

    tb = ledger.balances(load_settings(env, None, data_dir, database_url))
    if as_json:
        _json(tb)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Trial balance ({tb.entries} entries)")
    for col, justify in [("cur", "left"), ("account", "left"), ("debits", "right"), ("credits", "right"),
                         ("balance", "right")]:  # fmt: skip
        # a narrow terminal folds an amount onto two lines rather than cutting digits off with an ellipsis
        table.add_column(col, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for c in tb.currencies:
        for a in c.accounts:
            table.add_row(c.currency, a.name, _amt(a.debits_minor, c.currency), _amt(a.credits_minor, c.currency),
                          str(a.balance))
        mark = "[green]balanced[/]" if c.balanced else "[red]NOT BALANCED[/]"
        table.add_row(c.currency, f"[bold]total[/] {mark}", f"[bold]{c.total_debits}[/]", f"[bold]{c.total_credits}[/]",
                      "", end_section=True)  # fmt: skip
    Console().print(table)
    if not tb.balanced:
        raise typer.Exit(1)


def _amt(minor: int, currency: str) -> str:
    from payevents.contracts.money import from_minor

    return str(from_minor(minor, currency))


@app.command("verify")
def verify_cmd(
    output: OutputOpt = Output.table, json_flag: JsonFlag = False,
    env: EnvOpt = None, data_dir: DataDirOpt = None, database_url: DatabaseUrlOpt = None
) -> None:
    """Re-check every invariant over the whole journal; exit 1 on any violation."""
    as_json = json_wanted(output, json_flag)
    from payevents.services import ledger

    report = ledger.verify(load_settings(env, None, data_dir, database_url))
    if as_json:
        _json(report)
    elif report.ok:
        typer.secho(f"ok: {report.entries} entries, {report.lines} lines; every entry balances per currency, "
                    "amounts are positive integer minor units, the trial balance balances, the guards are in place",
                    fg=typer.colors.GREEN)  # fmt: skip
    else:
        for v in report.violations:
            typer.secho(f"violation [{v.rule}] {v.detail}", fg=typer.colors.RED, err=True)
        typer.secho(f"{len(report.violations)} violation(s) in {report.entries} entries", fg=typer.colors.RED, err=True)
    if not report.ok:
        raise typer.Exit(1)


def register(root: typer.Typer) -> None:
    root.add_typer(app)
