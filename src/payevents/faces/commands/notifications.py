"""``payevents notifications list|show|deliver|summary`` and ``payevents customers add|show|list``."""

from __future__ import annotations

import dataclasses
import json
import threading
from typing import Annotated

import typer

from payevents.faces.options import (
    DatabaseUrlOpt,
    DataDirOpt,
    EnvOpt,
    FormatFlag,
    Output,
    OutputOpt,
    load_settings,
    output_format,
)

notifications_app = typer.Typer(name="notifications", no_args_is_help=True,
                                help="Payment confirmation e-mails: status, reasons, delivery.")
customers_app = typer.Typer(name="customers", no_args_is_help=True,
                            help="The customer directory of the notifications service.")



def _fmt(output: Output, legacy: str | None) -> str:
    return output_format(output, legacy, ("table", "json"))


@notifications_app.command("list")
def list_cmd(
    status: Annotated[str | None, typer.Option("--status", help="sent, pending, failed or skipped")] = None,
    payment: Annotated[str | None, typer.Option("--payment", help="only this paymentId")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1)] = 50,
    output: OutputOpt = Output.table,
    legacy_format: FormatFlag = None,
    env: EnvOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """Notifications, newest first, with the reason for skipped and failed ones."""
    from payevents.services import notifications

    fmt = _fmt(output, legacy_format)
    if status is not None and status not in ("sent", "pending", "failed", "skipped"):
        raise typer.BadParameter(f"{status!r} must be sent, pending, failed or skipped", param_hint="--status")
    settings = load_settings(env, None, data_dir, database_url)
    items = notifications.list_notifications(settings, status=status, limit=limit, payment_id=payment)
    if fmt == "json":
        typer.echo(json.dumps([dataclasses.asdict(n) for n in items], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Notifications{f' ({status})' if status else ''}")
    for col in ("payment", "customer", "status", "recipient / reason", "amount", "attempts", "message-id"):
        table.add_column(col, overflow="fold")
    colors = {"sent": "green", "pending": "yellow", "failed": "red", "skipped": "magenta"}
    for n in items:
        detail = n.recipient or ""
        if n.status in ("skipped", "failed"):
            detail = n.reason or ""
        elif n.status == "pending" and n.last_error:
            detail = f"{detail} (retry at {n.next_attempt_at}: {n.last_error})"
        table.add_row(n.payment_id, n.customer_id or "-", f"[{colors[n.status]}]{n.status}[/]", detail,
                      f"{n.amount} {n.currency}", str(n.attempts), n.message_id)
    Console().print(table)
    s = notifications.summary(settings)
    typer.echo(" · ".join(f"{k}: {s[k]}" for k in ("sent", "pending", "failed", "skipped")))


@notifications_app.command("summary")
def summary_cmd(output: OutputOpt = Output.table, env: EnvOpt = None, data_dir: DataDirOpt = None,
                database_url: DatabaseUrlOpt = None) -> None:
    """Counts per status, and per reason for skipped and failed ones."""
    from payevents.services import notifications

    s = notifications.summary(load_settings(env, None, data_dir, database_url))
    if output == Output.json:
        typer.echo(json.dumps(s, indent=2))
        return
    for key, value in s.items():
        if not isinstance(value, dict):
            typer.echo(f"{key:<10} {value}")
    for status, reasons in s.get("reasons", {}).items():
        for code, n in reasons.items():
            typer.echo(f"{status} because {code}: {n}")


@notifications_app.command("deliver")
def deliver_cmd(
    limit: Annotated[int, typer.Option("--limit", min=1, help="at most this many per pass")] = 200,
    watch: Annotated[bool, typer.Option("--watch", help="keep delivering until Ctrl-C")] = False,
    env: EnvOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """Send due confirmations now (SMTP from PAYEVENTS_SMTP_URL, else the Maildir in the data directory)."""
    from payevents.services import notifications

    settings = load_settings(env, None, data_dir, database_url)
    if watch:
        stop = threading.Event()
        try:
            notifications.run_delivery(settings, stop, limit=limit)
        except KeyboardInterrupt:
            stop.set()
        return
    total = notifications.DeliveryReport()
    while True:
        r = notifications.deliver_pending(settings, limit)
        total = notifications.DeliveryReport(*(a + b for a, b in zip(dataclasses.astuple(total),
                                                                       dataclasses.astuple(r), strict=True)))
        if r.claimed < limit or r.sent == 0:
            break
    typer.echo(f"sent {total.sent}, rescheduled {total.retried}, failed {total.failed}")


@customers_app.command("add")
def customers_add(
    customer_id: Annotated[str, typer.Argument(help="the customerId events carry, e.g. cus_johndoe")],
    name: Annotated[str, typer.Option("--name", help="name used in the greeting")],
    email: Annotated[str | None, typer.Option("--email", help="where confirmations go (none: not notified)")] = None,
    locale: Annotated[str, typer.Option("--locale", help="formats amounts and dates, e.g. en_US, de_DE")] = "en_US",
    env: EnvOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """Add a customer (or update an existing one)."""
    from payevents.services import notifications

    c = notifications.add_customer(load_settings(env, None, data_dir, database_url), customer_id, name, email, locale)
    typer.echo(f"{c.customer_id}: {c.name} <{c.email or 'no e-mail'}> {c.locale}")


@customers_app.command("show")
def customers_show(
    customer_id: Annotated[str, typer.Argument()],
    output: OutputOpt = Output.table,
    env: EnvOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """One customer."""
    from payevents.services import notifications

    settings = load_settings(env, None, data_dir, database_url)
    c = notifications.get_customer(settings, customer_id)
    if output == Output.json:
        typer.echo(json.dumps(dataclasses.asdict(c), indent=2))
        return
    for key, value in dataclasses.asdict(c).items():
        typer.echo(f"{key:<12} {'-' if value is None else value}")


@customers_app.command("list")
def customers_list(
    output: OutputOpt = Output.table,
    legacy_format: FormatFlag = None,
    env: EnvOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """All customers."""
    from payevents.services import notifications

    fmt = _fmt(output, legacy_format)
    items = notifications.list_customers(load_settings(env, None, data_dir, database_url))
    if fmt == "json":
        typer.echo(json.dumps([dataclasses.asdict(c) for c in items], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Customers")
    for col in ("customerId", "name", "e-mail", "locale"):
        table.add_column(col)
    for c in items:
        table.add_row(c.customer_id, c.name, c.email or "-", c.locale)
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(notifications_app, name="notifications")
    app.add_typer(customers_app, name="customers")
