"""``payevents payments create|authorize|capture|complete|fail|show|list|process``."""

from __future__ import annotations

from typing import Annotated, Any

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


def _print(p: Any, as_json: bool) -> None:
    if as_json:
        typer.echo(msgspec.json.format(msgspec.json.encode(p), indent=2).decode())
        return
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
def create_cmd(
    customer: Annotated[str, typer.Option("--customer", help="customerId")],
    amount: Annotated[str, typer.Option("--amount", help="decimal amount, e.g. 99.99")],
    currency: Annotated[str, typer.Option("--currency", help="ISO 4217 code, e.g. USD")],
    description: Annotated[str, typer.Option("--description", help="metadata.description of PaymentProcessed")],
    invoice: Annotated[str | None, typer.Option("--invoice", help="invoiceId this payment pays")] = None,
    order: Annotated[str | None, typer.Option("--order", help="orderId")] = None,
    method: Annotated[str, typer.Option("--method", help="payment method type")] = "credit_card",
    last4: Annotated[str, typer.Option("--last4", help="last four digits of the card (never the number)")] = "4242",
    merchant: Annotated[str | None, typer.Option("--merchant", help="merchantId")] = None,
    payment_id: Annotated[str | None, typer.Option("--id", help="choose the paymentId yourself (default: a new "
                                                   "pay_<uuid>)")] = None,
    idempotency_key: KeyOpt = None,
    output: OutputOpt = Output.table, json_flag: JsonFlag = False,
    env: EnvOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """Initiate a payment (emits PaymentInitiated)."""
    as_json = json_wanted(output, json_flag)
    from payevents.services import payments

    settings = load_settings(env, None, data_dir, database_url)
    p = payments.create(settings, customer_id=customer, amount=amount, currency=currency, description=description,
                        invoice_id=invoice, order_id=order, method_type=method, last4=last4, merchant_id=merchant,
                        payment_id=payment_id, idempotency_key=idempotency_key)  # fmt: skip
    _print(p, as_json)


@app.command("authorize")
def authorize_cmd(
    payment_id: PaymentArg,
    decline: Annotated[str | None, typer.Option("--decline", help="make the simulated gateway decline with this "
                                                "failure code, e.g. card_declined")] = None,
    idempotency_key: KeyOpt = None,
    output: OutputOpt = Output.table, json_flag: JsonFlag = False,
    env: EnvOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """Authorize with the gateway (PaymentAuthorized, or PaymentFailed on a decline: exit 1)."""
    as_json = json_wanted(output, json_flag)
    from payevents.services import payments

    p = payments.authorize(load_settings(env, None, data_dir, database_url), payment_id, decline=decline,
                           idempotency_key=idempotency_key)  # fmt: skip
    _print(p, as_json)
    if p.state == "failed":
        raise typer.Exit(1)


@app.command("capture")
def capture_cmd(
    payment_id: PaymentArg,
    idempotency_key: KeyOpt = None,
    output: OutputOpt = Output.table, json_flag: JsonFlag = False,
    env: EnvOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """Capture the authorized amount (PaymentCaptured, or PaymentFailed: exit 1)."""
    as_json = json_wanted(output, json_flag)
    from payevents.services import payments

    p = payments.capture(load_settings(env, None, data_dir, database_url), payment_id, idempotency_key=idempotency_key)
    _print(p, as_json)
    if p.state == "failed":
        raise typer.Exit(1)


@app.command("complete")
def complete_cmd(
    payment_id: PaymentArg,
    idempotency_key: KeyOpt = None,
    output: OutputOpt = Output.table, json_flag: JsonFlag = False,
    env: EnvOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """Record the transaction of a captured payment and emit PaymentProcessed."""
    as_json = json_wanted(output, json_flag)
    from payevents.services import payments

    p = payments.complete(load_settings(env, None, data_dir, database_url), payment_id, idempotency_key=idempotency_key)
    _print(p, as_json)


@app.command("fail")
def fail_cmd(
    payment_id: PaymentArg,
    code: Annotated[str, typer.Option("--code", help="failure code, e.g. cancelled, card_declined")],
    reason: Annotated[str, typer.Option("--reason", help="human-readable reason")],
    idempotency_key: KeyOpt = None,
    output: OutputOpt = Output.table, json_flag: JsonFlag = False,
    env: EnvOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """Fail an open payment with a reason code (emits PaymentFailed)."""
    as_json = json_wanted(output, json_flag)
    from payevents.services import payments

    p = payments.fail(load_settings(env, None, data_dir, database_url), payment_id, code=code, reason=reason,
                      idempotency_key=idempotency_key)  # fmt: skip
    _print(p, as_json)


@app.command("show")
def show_cmd(
    payment_id: PaymentArg,
    output: OutputOpt = Output.table, json_flag: JsonFlag = False,
    env: EnvOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """One payment with its state, references and events."""
    as_json = json_wanted(output, json_flag)
    from payevents.services import payments

    _print(payments.show(load_settings(env, None, data_dir, database_url), payment_id), as_json)


@app.command("list")
def list_cmd(
    state: Annotated[str | None, typer.Option("--state", help="initiated, authorized, captured, processed, failed")]
    = None,
    limit: Annotated[int, typer.Option("--limit", min=1)] = 50,
    output: OutputOpt = Output.table, json_flag: JsonFlag = False,
    env: EnvOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """Recent payments, newest first."""
    as_json = json_wanted(output, json_flag)
    from payevents.services import payments

    items = payments.list_payments(load_settings(env, None, data_dir, database_url), state=state, limit=limit)
    if as_json:
        typer.echo(msgspec.json.format(msgspec.json.encode(items), indent=2).decode())
        return
    for p in items:
        typer.echo(f"{p.payment_id}  {p.state:<10} {p.amount} {p.currency}  {p.customer_id}  {p.invoice_id or ''}")


def register(root: typer.Typer) -> None:
    root.add_typer(app)
