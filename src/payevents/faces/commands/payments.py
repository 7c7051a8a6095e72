"""``payevents payments create|authorize|capture|complete|fail|show|list|process``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from payevents.faces.options import Common, CurrencyOpt, CustomerIdOpt, common, echo_json, show
from payevents.runtime.limits import MAX_LIMIT

app = typer.Typer(name="payments", no_args_is_help=True,
                  help="The Payments service: a payment's lifecycle, emitting its events through the outbox.")

KeyOpt = Annotated[str | None, typer.Option("--idempotency-key", help="a retried command with this key returns the "
                                            "first result and emits nothing")]  # fmt: skip
PaymentArg = Annotated[str, typer.Argument(help="the paymentId")]


@app.callback()
def _tracing() -> None:
    """The Payments service: a payment's lifecycle, emitting its events through the outbox."""
    from payevents.runtime import tracing

    tracing.configure("payments")  # OTEL_*: each command's events carry its trace (off when none is set)


def _print(p: Any, o: Common, *, exit_if_failed: bool = False) -> None:
    """One payment as JSON or as lines; a step the payment failed at exits 1."""
    show(o, p, lambda: _lines(p))
    if exit_if_failed and p.state == "failed":
        raise typer.Exit(1)


def _lines(p: Any) -> None:
    color = {"processed": "green", "failed": "red"}.get(p.state, "yellow")
    typer.echo(f"{p.payment_id}  " + typer.style(p.state, fg=color, bold=True)
               + f"  {p.amount} {p.currency}  customer {p.customer_id}")  # fmt: skip
    for label, value in [("invoice", p.invoice_id), ("order", p.order_id), ("card", f"{p.method_type} ····{p.last4}"),
                         ("authorization", p.authorization_code), ("capture", p.capture_id),
                         ("gateway ref", p.gateway_reference), ("transaction", p.transaction_id),
                         ("failure", f"{p.failure_code} at {p.failed_stage}: {p.failure_reason}"
                          if p.failure_code else None)]:  # fmt: skip
        if value:
            typer.echo(f"  {label:<14}{value}")
    for e in p.events:
        typer.echo(f"  event         {e.at.isoformat()}  {e.event_type}  {e.event_id}")


@app.command("create")
@common(output="json")
def create_cmd(
    customer: CustomerIdOpt,
    amount: Annotated[str, typer.Option("--amount", help="decimal amount, e.g. 99.99")],
    currency: CurrencyOpt,
    description: Annotated[str, typer.Option("--description", help="metadata.description of PaymentProcessed")],
    invoice: Annotated[str | None, typer.Option("--invoice", help="invoiceId this payment pays")] = None,
    order: Annotated[str | None, typer.Option("--order", help="orderId")] = None,
    method: Annotated[str, typer.Option("--method", help="payment method type")] = "credit_card",
    last4: Annotated[str, typer.Option("--last4", help="last four digits of the card (never the number)")] = "4242",
    merchant: Annotated[str | None, typer.Option("--merchant", help="merchantId")] = None,
    payment_id: Annotated[str | None, typer.Option("--id", help="choose the paymentId yourself (default: a new "
                                                   "pay_<uuid>)")] = None,
    idempotency_key: KeyOpt = None,
    *, o: Common,
) -> None:
    """Initiate a payment (emits PaymentInitiated)."""
    from payevents.services import payments

    _print(payments.create(o.settings(), customer_id=customer, amount=amount, currency=currency,
                           description=description, invoice_id=invoice, order_id=order, method_type=method,
                           last4=last4, merchant_id=merchant, payment_id=payment_id,
                           idempotency_key=idempotency_key), o)  # fmt: skip


@app.command("authorize")
@common(output="json")
def authorize_cmd(
    payment_id: PaymentArg,
    decline: Annotated[str | None, typer.Option("--decline", help="make the simulated gateway decline with this "
                                                "failure code, e.g. card_declined")] = None,
    idempotency_key: KeyOpt = None,
    *, o: Common,
) -> None:
    """Authorize with the gateway (PaymentAuthorized, or PaymentFailed on a decline: exit 1)."""
    from payevents.services import payments

    p = payments.authorize(o.settings(), payment_id, decline=decline, idempotency_key=idempotency_key)
    _print(p, o, exit_if_failed=True)


@app.command("capture")
@common(output="json")
def capture_cmd(payment_id: PaymentArg, idempotency_key: KeyOpt = None, *, o: Common) -> None:
    """Capture the authorized amount (PaymentCaptured, or PaymentFailed: exit 1)."""
    from payevents.services import payments

    _print(payments.capture(o.settings(), payment_id, idempotency_key=idempotency_key), o, exit_if_failed=True)


@app.command("complete")
@common(output="json")
def complete_cmd(payment_id: PaymentArg, idempotency_key: KeyOpt = None, *, o: Common) -> None:
    """Record the transaction of a captured payment and emit PaymentProcessed."""
    from payevents.services import payments

    _print(payments.complete(o.settings(), payment_id, idempotency_key=idempotency_key), o)


@app.command("fail")
@common(output="json")
def fail_cmd(
    payment_id: PaymentArg,
    code: Annotated[str, typer.Option("--code", help="failure code, e.g. cancelled, card_declined")],
    reason: Annotated[str, typer.Option("--reason", help="human-readable reason")],
    idempotency_key: KeyOpt = None,
    *, o: Common,
) -> None:
    """Fail an open payment with a reason code (emits PaymentFailed)."""
    from payevents.services import payments

    _print(payments.fail(o.settings(), payment_id, code=code, reason=reason, idempotency_key=idempotency_key), o)


@app.command("show")
@common(output="json")
def show_cmd(payment_id: PaymentArg, *, o: Common) -> None:
    """One payment with its state, references and events."""
    from payevents.services import payments

    _print(payments.show(o.settings(), payment_id), o)


@app.command("list")
@common(output="json")
def list_cmd(
    state: Annotated[str | None, typer.Option("--state", help="initiated, authorized, captured, processed, failed")]
    = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=MAX_LIMIT)] = 50,
    *, o: Common,
) -> None:
    """Recent payments, newest first."""
    from payevents.services import payments

    items = payments.list_payments(o.settings(), state=state, limit=limit)
    if o.json:
        echo_json(items)
        return
    for p in items:
        typer.echo(f"{p.payment_id}  {p.state:<10} {p.amount} {p.currency}  {p.customer_id}  {p.invoice_id or ''}")


def register(root: typer.Typer) -> None:
    root.add_typer(app)
