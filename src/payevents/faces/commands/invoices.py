"""``payevents invoices create|show|list|unapplied|credits``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from payevents.faces.options import Common, CurrencyOpt, CustomerIdOpt, common, print_table, show
from payevents.runtime.limits import MAX_LIMIT

app = typer.Typer(name="invoices", no_args_is_help=True,
                  help="Invoices: Open → Partially Paid → Paid by PaymentProcessed events.")
_COLORS = {"Open": "yellow", "Partially Paid": "cyan", "Paid": "green"}
CustomerOpt = Annotated[str | None, typer.Option("--customer")]


def _print_detail(d: Any) -> None:
    inv = d.invoice
    typer.echo(f"{inv.invoice_id}  " + typer.style(inv.status, fg=_COLORS[inv.status], bold=True)
               + f"  due {inv.amount_due} {inv.currency} by {inv.due_date}  customer {inv.customer_id}")  # fmt: skip
    typer.echo(f"  paid {inv.paid} {inv.currency}, balance due {inv.balance_due} {inv.currency}")
    for p in d.payments:
        typer.echo(f"  payment {p.payment_id}  {p.amount} {p.currency}  {p.status}"
                   + (f"  — {p.reason}" if p.reason else ""))  # fmt: skip


def _lines(items: list[Any], empty: str, line: Any) -> None:
    if not items:
        typer.echo(empty)
    for item in items:
        typer.echo(line(item))


@app.command("create")
@common(output="json")
def create_cmd(
    customer: CustomerIdOpt,
    amount: Annotated[str, typer.Option("--amount", help="amount due, e.g. 250.00")],
    currency: CurrencyOpt,
    due: Annotated[str, typer.Option("--due", help="due date YYYY-MM-DD")],
    invoice_id: Annotated[str | None, typer.Option("--id", help="invoiceId (default: a new INV-… id)")] = None,
    description: Annotated[str | None, typer.Option("--description")] = None,
    *, o: Common,
) -> None:
    """Create an invoice; payments that named it before it existed are applied now."""
    from payevents.services import invoices

    d = invoices.create(o.settings(), customer_id=customer, amount_due=amount, currency=currency, due_date=due,
                        invoice_id=invoice_id, description=description)  # fmt: skip
    show(o, d, lambda: _print_detail(d))


@app.command("show")
@common(output="json")
def show_cmd(invoice_id: Annotated[str, typer.Argument(help="invoiceId")], *, o: Common) -> None:
    """One invoice with the payments that name it."""
    from payevents.services import invoices

    d = invoices.show(o.settings(), invoice_id)
    show(o, d, lambda: _print_detail(d))


@app.command("list")
@common(output="json")
def list_cmd(
    status: Annotated[str | None, typer.Option("--status", help="Open, 'Partially Paid' (or partially-paid), Paid")]
    = None,
    customer: CustomerOpt = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=MAX_LIMIT)] = 1000,
    *, o: Common,
) -> None:
    """Invoices, optionally by status."""
    from payevents.services import invoices

    items = invoices.list_invoices(o.settings(), status=status, customer_id=customer, limit=limit)
    show(o, items, lambda: print_table(
        "Invoices" + (f" ({invoices.parse_status(status)})" if status else ""),
        ["invoice", "customer", "status", ("due", "right"), ("paid", "right"), ("balance", "right"), "cur",
         "due date"],
        ([i.invoice_id, i.customer_id, f"[{_COLORS[i.status]}]{i.status}[/]", str(i.amount_due), str(i.paid),
          str(i.balance_due), i.currency, i.due_date.isoformat()] for i in items)))  # fmt: skip


@app.command("unapplied")
@common(output="json")
def unapplied_cmd(*, o: Common) -> None:
    """Payments not applied: waiting for their invoice, or held for review (with the reason)."""
    from payevents.services import invoices

    items = invoices.unapplied(o.settings())
    show(o, items, lambda: _lines(items, "no unapplied payments", lambda p: (
        f"{p.status:<9} {p.payment_id}  {p.amount} {p.currency}  invoice {p.invoice_id}  — {p.reason}")))


@app.command("credits")
@common(output="json")
def credits_cmd(customer: CustomerOpt = None, *, o: Common) -> None:
    """Customer credit balances left by overpayments."""
    from payevents.services import invoices

    items = invoices.credits(o.settings(), customer_id=customer)
    show(o, items, lambda: _lines(items, "no customer credits", lambda c: (
        f"{c.customer_id}  {c.amount} {c.currency}  from {c.payments} overpayment(s)")))


def register(root: typer.Typer) -> None:
    root.add_typer(app)
