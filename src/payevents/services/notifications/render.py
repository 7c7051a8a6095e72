"""The payment confirmation e-mail, rendered from the Jinja2 templates shipped in this package.

The amount is formatted for its currency and the customer's locale (babel); the payment method is
shown as its type and last four digits only.
"""

from __future__ import annotations

import dataclasses
import functools
import uuid
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr

from babel.dates import format_datetime as babel_datetime
from babel.numbers import format_currency
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from msgspec import UNSET

from payevents.contracts.events import PaymentProcessed

#: uuid5 namespace of the notification Message-IDs (a replayed event derives the same id)
MESSAGE_ID_NAMESPACE = uuid.UUID("5d1c0b8e-7c1e-5a7e-9a51-5f0e3b7c2a10")
TEMPLATE = "payment_confirmation"


@functools.cache
def _env() -> Environment:
    return Environment(
        loader=PackageLoader("payevents.services.notifications", "templates"),
        autoescape=select_autoescape(enabled_extensions=("html.j2",), default_for_string=False),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )


def message_uuid(event_id: str) -> uuid.UUID:
    return uuid.uuid5(MESSAGE_ID_NAMESPACE, f"payevents.notification:{event_id}")


def message_id_for(event_id: str, mail_from: str) -> str:
    """The deterministic Message-ID of the confirmation for ``event_id``."""
    domain = mail_from.rsplit("@", 1)[-1].strip(" >") or "payevents.local"
    return f"<{message_uuid(event_id)}@{domain}>"


def format_amount(value: object, currency: str, locale: str) -> str:
    """``format_currency`` keeping every decimal the currency has (no float, no rounding)."""
    return format_currency(value, currency, locale=locale, currency_digits=True)  # type: ignore[arg-type]


def method_label(method_type: str, last4: str) -> str:
    """E.g. ``credit_card`` + ``4242`` -> ``Credit card ending in 4242`` (never more than last4)."""
    label = method_type.replace("_", " ").replace("-", " ").strip().lower().capitalize() or "Card"
    return f"{label} ending in {last4}"


@dataclasses.dataclass(frozen=True, slots=True)
class RenderedMail:
    subject: str
    text: str
    html: str
    amount: str


def render_confirmation(event: PaymentProcessed, name: str, locale: str, sender: str) -> RenderedMail:
    """Subject, text and HTML bodies of the confirmation of ``event`` for a customer."""
    data = event.data
    amount = format_amount(data.amount.value, data.amount.currency, locale)
    meta = data.metadata if data.metadata is not UNSET else None
    subject = f"Payment confirmation: {amount}"
    context = {
        "subject": subject,
        "lang": locale.split("_")[0],
        "customer_name": name,
        "amount": amount,
        "method": method_label(data.paymentMethod.type, data.paymentMethod.last4),
        "processed_at": babel_datetime(data.processedAt.astimezone(UTC), "medium", tzinfo=UTC, locale=locale)
        + " UTC",
        "payment_id": data.paymentId,
        "order_id": meta.orderId if meta is not None and meta.orderId is not UNSET else None,
        "invoice_id": data.invoiceId if data.invoiceId is not UNSET else None,
        "description": meta.description if meta is not None and meta.description is not UNSET else None,
        "sender": sender,
    }
    env = _env()
    text = env.get_template(f"{TEMPLATE}.txt.j2").render(context)
    html = env.get_template(f"{TEMPLATE}.html.j2").render(context)
    return RenderedMail(subject=subject, text=text, html=html, amount=amount)


def build_message(
    *, event_id: str, payment_id: str, mail_from: str, recipient: str, recipient_name: str | None, subject: str,
    text: str, html: str | None, created_at: str,
) -> EmailMessage:
    """The MIME message; the same stored intent always builds the same headers (Message-ID, Date)."""
    msg = EmailMessage()
    msg["From"] = mail_from
    msg["To"] = formataddr((recipient_name or "", recipient))
    msg["Subject"] = subject
    msg["Date"] = format_datetime(datetime.fromisoformat(created_at).astimezone(UTC))
    msg["Message-ID"] = message_id_for(event_id, mail_from)
    msg["X-Payevents-Event-Id"] = event_id
    msg["X-Payevents-Payment-Id"] = payment_id
    msg.set_content(text)
    if html:
        msg.add_alternative(html, subtype="html")
        msg.set_boundary(f"=_payevents_{message_uuid(event_id).hex}")  # a re-send is byte-identical
    return msg
