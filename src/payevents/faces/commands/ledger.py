"""``payevents ledger journal|balances|verify``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from payevents.faces.options import Common, common, make_table, print_table, show
from payevents.runtime.limits import MAX_LIMIT

app = typer.Typer(name="ledger", no_args_is_help=True,
                  help="The Ledger: journal entries (debit Cash, credit Accounts Receivable), trial balance, verify.")


@app.command("journal")
@common(output="json")
def journal_cmd(
    payment: Annotated[str | None, typer.Option("--payment", help="only the entries of this paymentId")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=MAX_LIMIT)] = 100,
    *, o: Common,
) -> None:
    """Journal entries with their lines, oldest first."""
    from payevents.services import ledger

    entries = ledger.journal(o.settings(), payment_id=payment, limit=limit)
    rows = ([e.posted_at.strftime("%Y-%m-%d %H:%M:%S") if i == 0 else "",
             (f"{e.payment_id}{' (legacy)' if e.legacy else ''}" if i == 0 else (e.description if i == 1 else "")),
             ln.account_name, str(ln.amount) if ln.side == "D" else "", str(ln.amount) if ln.side == "C" else "",
             ln.currency] for e in entries for i, ln in enumerate(e.lines))  # fmt: skip
    show(o, entries, lambda: print_table(
        "Journal" + (f" of {payment}" if payment else ""),
        ["posted", "entry / payment", "account", ("debit", "right"), ("credit", "right"), "cur"], rows,
        overflow="fold"))


@app.command("balances")
@common(output="json")
def balances_cmd(*, o: Common) -> None:
    """The trial balance per currency: each account's debits and credits; debits = credits."""
    from payevents.services import ledger

    tb = ledger.balances(o.settings())
    show(o, tb, lambda: _trial_balance(tb))
    if not o.json and not tb.balanced:
        raise typer.Exit(1)


def _trial_balance(tb: Any) -> None:
    from rich.console import Console

    # a narrow terminal folds an amount onto two lines rather than cutting digits off with an ellipsis
    table = make_table(f"Trial balance ({tb.entries} entries)",
                       ["cur", "account", ("debits", "right"), ("credits", "right"), ("balance", "right")],
                       overflow="fold")  # fmt: skip
    for c in tb.currencies:
        for a in c.accounts:
            table.add_row(c.currency, a.name, _amt(a.debits_minor, c.currency), _amt(a.credits_minor, c.currency),
                          str(a.balance))
        mark = "[green]balanced[/]" if c.balanced else "[red]NOT BALANCED[/]"
        table.add_row(c.currency, f"[bold]total[/] {mark}", f"[bold]{c.total_debits}[/]", f"[bold]{c.total_credits}[/]",
                      "", end_section=True)  # fmt: skip
    Console().print(table)


def _amt(minor: int, currency: str) -> str:
    from payevents.contracts.money import from_minor

    return str(from_minor(minor, currency))


@app.command("verify")
@common(output="json")
def verify_cmd(*, o: Common) -> None:
    """Re-check every invariant over the whole journal; exit 1 on any violation."""
    from payevents.services import ledger

    report = ledger.verify(o.settings())
    show(o, report, lambda: _verdict(report))
    if not report.ok:
        raise typer.Exit(1)


def _verdict(report: Any) -> None:
    if report.ok:
        typer.secho(f"ok: {report.entries} entries, {report.lines} lines; every entry balances per currency, "
                    "amounts are positive integer minor units, the trial balance balances, the guards are in place",
                    fg=typer.colors.GREEN)  # fmt: skip
        return
    for v in report.violations:
        typer.secho(f"violation [{v.rule}] {v.detail}", fg=typer.colors.RED, err=True)
    typer.secho(f"{len(report.violations)} violation(s) in {report.entries} entries", fg=typer.colors.RED, err=True)


def register(root: typer.Typer) -> None:
    root.add_typer(app)
