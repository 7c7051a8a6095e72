"""The PaymentProcessed handler: record the confirmation intent in the consumer's transaction.

Nothing is sent here (an e-mail cannot be rolled back); the delivery worker renders and sends it
afterwards. An event that cannot be sent — legacy without customerId, unknown customer, customer
without e-mail — is recorded as ``skipped`` with the reason, never dropped.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import sqlalchemy as sa
from msgspec import UNSET
from sqlalchemy.engine import Connection

from payevents.contracts.codec import DecodedEvent
from payevents.contracts.events import PaymentProcessed
from payevents.errors import PoisonEvent
from payevents.transport.base import Message

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CUSTOMER = sa.text("SELECT name, email, locale FROM customers WHERE customer_id = :id")
_INSERT = sa.text(
    "INSERT INTO notifications (event_id, payment_id, customer_id, status, reason_code, reason, recipient,"
    " recipient_name, locale, event_json, amount, currency, legacy, attempts, next_attempt_ms, created_at)"
    " VALUES (:event_id, :payment_id, :customer_id, :status, :reason_code, :reason, :recipient,"
    " :recipient_name, :locale, :event_json, :amount, :currency, :legacy, 0, :next_attempt_ms, :created_at)"
    " ON CONFLICT (event_id) DO NOTHING"
)
_encoder = msgspec.json.Encoder(decimal_format="string")


def to_ms(at: datetime) -> int:
    return (at - EPOCH) // timedelta(milliseconds=1)


def intent_of(conn: Connection, decoded: DecodedEvent, now: datetime) -> dict[str, Any]:
    """The notification row for one PaymentProcessed: pending with its recipient, or skipped with the reason."""
    event = decoded.event
    if not isinstance(event, PaymentProcessed):
        raise PoisonEvent(f"eventType: notifications handles PaymentProcessed, not {event.eventType}")
    data = event.data
    row: dict[str, Any] = {
        "event_id": event.eventId,
        "payment_id": data.paymentId,
        "customer_id": None if data.customerId is UNSET else data.customerId,
        "status": "skipped",
        "reason_code": None,
        "reason": None,
        "recipient": None,
        "recipient_name": None,
        "locale": None,
        "event_json": None,
        "amount": str(data.amount.value),
        "currency": data.amount.currency,
        "legacy": 1 if decoded.legacy else 0,
        "next_attempt_ms": to_ms(now),
        "created_at": now.isoformat(),
    }
    if row["customer_id"] is None:
        what = "legacy event" if decoded.legacy else "event"
        row.update(reason_code="no_customer_id", reason=f"{what} without customerId: no one to notify")
        return row
    customer = conn.execute(_CUSTOMER, {"id": row["customer_id"]}).first()
    if customer is None:
        row.update(reason_code="unknown_customer",
                   reason=f"unknown customer {row['customer_id']!r}: not in the customer directory")
        return row
    if not customer.email:
        row.update(reason_code="no_email", reason=f"customer {row['customer_id']!r} has no e-mail address")
        return row
    row.update(status="pending", recipient=customer.email, recipient_name=customer.name, locale=customer.locale,
               event_json=_encoder.encode(event).decode())
    return row


def handle_processed(conn: Connection, decoded: DecodedEvent, message: Message) -> None:
    """Record the confirmation intent of one PaymentProcessed (replay-safe: unique eventId)."""
    conn.execute(_INSERT, intent_of(conn, decoded, datetime.now(UTC)))
