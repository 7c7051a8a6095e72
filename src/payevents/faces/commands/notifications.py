"""``payevents notifications list|show|deliver|summary`` and ``payevents customers add|show|list``."""

from __future__ import annotations

import dataclasses
import threading
from typing import Annotated, Any

import typer

from payevents.faces.options import Common, common, echo_json, make_table, print_table, show
from payevents.runtime.limits import MAX_LIMIT

notifications_app = typer.Typer(name="notifications", no_args_is_help=True,
                                help="Payment confirmation e-mails: status, reasons, delivery.")
customers_app = typer.Typer(name="customers", no_args_is_help=True,
                            help="The customer directory of the notifications service.")


@notifications_app.command("list")
@common(output="format")
def list_cmd(
    status: Annotated[str | None, typer.Option("--status", help="sent, pending, failed or skipped")] = None,
    payment: Annotated[str | None, typer.Option("--payment", help="only this paymentId")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=MAX_LIMIT)] = 50,
    *, o: Common,
) -> None:
    """Notifications, newest first, with the reason for skipped and failed ones."""
    from payevents.services import notifications

    if status is not None and status not in ("sent", "pending", "failed", "skipped"):
        raise typer.BadParameter(f"{status!r} must be sent, pending, failed or skipped", param_hint="--status")
    settings = o.settings()
    items = notifications.list_notifications(settings, status=status, limit=limit, payment_id=payment)
    if o.json:
        echo_json(items, ascii_only=True)
        return
    from rich.console import Console

    table = make_table(f"Notifications{f' ({status})' if status else ''}",
                       ["payment", "customer", "status", "recipient / reason", "amount", "attempts", "message-id"],
                       overflow="fold")
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
@common(output="plain")
def summary_cmd(*, o: Common) -> None:
    """Counts per status, and per reason for skipped and failed ones."""
    from payevents.services import notifications

    s = notifications.summary(o.settings())
    show(o, s, lambda: _summary_lines(s), ascii_only=True)


def _summary_lines(s: dict[str, Any]) -> None:
    for key, value in s.items():
        if not isinstance(value, dict):
            typer.echo(f"{key:<10} {value}")
    for status, reasons in s.get("reasons", {}).items():
        for code, n in reasons.items():
            typer.echo(f"{status} because {code}: {n}")


@notifications_app.command("deliver")
@common()
def deliver_cmd(
    limit: Annotated[int, typer.Option("--limit", min=1, max=MAX_LIMIT, help="at most this many per pass")] = 200,
    watch: Annotated[bool, typer.Option("--watch", help="keep delivering until Ctrl-C")] = False,
    *, o: Common,
) -> None:
    """Send due confirmations now (SMTP from PAYEVENTS_SMTP_URL, else the Maildir in the data directory)."""
    from payevents.services import notifications

    settings = o.settings()
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
@common()
def customers_add(
    customer_id: Annotated[str, typer.Argument(help="the customerId events carry, e.g. cus_johndoe")],
    name: Annotated[str, typer.Option("--name", help="name used in the greeting")],
    email: Annotated[str | None, typer.Option("--email", help="where confirmations go (none: not notified)")] = None,
    locale: Annotated[str, typer.Option("--locale", help="formats amounts and dates, e.g. en_US, de_DE")] = "en_US",
    *, o: Common,
) -> None:
    """Add a customer (or update an existing one)."""
    from payevents.services import notifications

    c = notifications.add_customer(o.settings(), customer_id, name, email, locale)
    typer.echo(f"{c.customer_id}: {c.name} <{c.email or 'no e-mail'}> {c.locale}")


@customers_app.command("show")
@common(output="plain")
def customers_show(customer_id: Annotated[str, typer.Argument()], *, o: Common) -> None:
    """One customer."""
    from payevents.services import notifications

    c = notifications.get_customer(o.settings(), customer_id)
    show(o, c, lambda: typer.echo("\n".join(f"{key:<12} {'-' if value is None else value}"
                                             for key, value in dataclasses.asdict(c).items())), ascii_only=True)


@customers_app.command("list")
@common(output="format")
def customers_list(*, o: Common) -> None:
    """All customers."""
    from payevents.services import notifications

    items = notifications.list_customers(o.settings())
    show(o, items, lambda: print_table("Customers", ["customerId", "name", "e-mail", "locale"],
                                       ([c.customer_id, c.name, c.email or "-", c.locale] for c in items)),
         ascii_only=True)


def register(app: typer.Typer) -> None:
    app.add_typer(notifications_app, name="notifications")
    app.add_typer(customers_app, name="customers")
