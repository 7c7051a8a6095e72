"""``payevents invoices create|show|list|unapplied|credits``."""

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

app = typer.Typer(name="invoices", no_args_is_help=True,
                  help="Invoices: Open → Partially Paid → Paid by PaymentProcessed events.")
_COLORS = {"Open": "yellow", "Partially Paid": "cyan", "Paid": "green"}


def _json(value: object) -> None:
    typer.echo(msgspec.json.format(msgspec.json.encode(value), indent=2).decode())


def _print_detail(d: object) -> None:
    inv = d.invoice  # type: ignore[attr-defined]
    typer.echo(f"{inv.invoice_id}  " + typer.style(inv.status, fg=_COLORS[inv.status], bold=True)
               + f"  due {inv.amount_due} {inv.currency} by {inv.due_date}  customer {inv.customer_id}")  # fmt: skip
    typer.echo(f"  paid {inv.paid} {inv.currency}, balance due {inv.balance_due} {inv.currency}")
    for p in d.payments:  # type: ignore[attr-defined]
        typer.echo(f"  payment {p.payment_id}  {p.amount} {p.currency}  {p.status}"
                   + (f"  — {p.reason}" if p.reason else ""))  # fmt: skip


@app.command("create")
def create_cmd(
    customer: Annotated[str, typer.Option("--customer", help="customerId")],
    amount: Annotated[str, typer.Option("--amount", help="amount due, e.g. 250.00")],
    currency: Annotated[str, typer.Option("--currency", help="ISO 4217 code")],
    due: Annotated[str, typer.Option("--due", help="due date YYYY-MM-DD")],
    invoice_id: Annotated[str | None, typer.Option("--id", help="invoiceId (default: a new INV-… id)")] = None,
    description: Annotated[str | None, typer.Option("--description")] = None,
    output: OutputOpt = Output.table, json_flag: JsonFlag = False,
    env: EnvOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """Create an invoice; payments that named it before it existed are applied now."""
    as_json = json_wanted(output, json_flag)
    from payevents.services import invoices

    d = invoices.create(load_settings(env, None, data_dir, database_url), customer_id=customer, amount_due=amount,
                        currency=currency, due_date=due, invoice_id=invoice_id, description=description)  # fmt: skip
    _json(d) if as_json else _print_detail(d)


@app.command("show")
def show_cmd(
    invoice_id: Annotated[str, typer.Argument(help="invoiceId")],
    output: OutputOpt = Output.table, json_flag: JsonFlag = False,
    env: EnvOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """One invoice with the payments that name it."""
    as_json = json_wanted(output, json_flag)
    from payevents.services import invoices

    d = invoices.show(load_settings(env, None, data_dir, database_url), invoice_id)
    _json(d) if as_json else _print_detail(d)


@app.command("list")
def list_cmd(
    status: Annotated[str | None, typer.Option("--status", help="Open, 'Partially Paid' (or partially-paid), Paid")]
    = None,
    customer: Annotated[str | None, typer.Option("--customer")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1)] = 1000,
    output: OutputOpt = Output.table, json_flag: JsonFlag = False,
    env: EnvOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """Invoices, optionally by status."""
    as_json = json_wanted(output, json_flag)
    from payevents.services import invoices

    items = invoices.list_invoices(load_settings(env, None, data_dir, database_url), status=status,
                                   customer_id=customer, limit=limit)  # fmt: skip
    if as_json:
        _json(items)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Invoices" + (f" ({invoices.parse_status(status)})" if status else ""))
    for col, justify in [("invoice", "left"), ("customer", "left"), ("status", "left"), ("due", "right"),
                         ("paid", "right"), ("balance", "right"), ("cur", "left"), ("due date", "left")]:  # fmt: skip
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for i in items:
        table.add_row(i.invoice_id, i.customer_id, f"[{_COLORS[i.status]}]{i.status}[/]", str(i.amount_due),
                      str(i.paid), str(i.balance_due), i.currency, i.due_date.isoformat())  # fmt: skip
    Console().print(table)


@app.command("unapplied")
def unapplied_cmd(
    output: OutputOpt = Output.table, json_flag: JsonFlag = False,
    env: EnvOpt = None, data_dir: DataDirOpt = None, database_url: DatabaseUrlOpt = None
) -> None:
    """Payments not applied: waiting for their invoice, or held for review (with the reason)."""
    as_json = json_wanted(output, json_flag)
    from payevents.services import invoices

    items = invoices.unapplied(load_settings(env, None, data_dir, database_url))
    if as_json:
        _json(items)
        return
    if not items:
        typer.echo("no unapplied payments")
    for p in items:
        typer.echo(f"{p.status:<9} {p.payment_id}  {p.amount} {p.currency}  invoice {p.invoice_id}  — {p.reason}")


@app.command("credits")
def credits_cmd(
    customer: Annotated[str | None, typer.Option("--customer")] = None,
    output: OutputOpt = Output.table, json_flag: JsonFlag = False,
    env: EnvOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """Customer credit balances left by overpayments."""
    as_json = json_wanted(output, json_flag)
    from payevents.services import invoices

    items = invoices.credits(load_settings(env, None, data_dir, database_url), customer_id=customer)
    if as_json:
        _json(items)
        return
    if not items:
        typer.echo("no customer credits")
    for c in items:
        typer.echo(f"{c.customer_id}  {c.amount} {c.currency}  from {c.payments} overpayment(s)")


def register(root: typer.Typer) -> None:
    root.add_typer(app)
