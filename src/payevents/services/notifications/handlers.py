"""The PaymentProcessed handler: record the confirmation intent in the consumer's transaction.

Nothing is sent here (an e-mail cannot be rolled back); the delivery worker renders and sends it
afterwards. An event that cannot be sent — legacy without customerId, unknown customer, customer
without e-mail — is recorded as ``skipped`` with the reason, never dropped. :func:`handle_batch` is the
runtime's per-batch fast path with the same effects.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import Any

import msgspec
import sqlalchemy as sa
from msgspec import UNSET
from sqlalchemy.engine import Connection

from payevents.contracts.codec import DecodedEvent
from payevents.contracts.events import PaymentProcessed
from payevents.errors import PoisonEvent
from payevents.runtime import bulk
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


def intent_row(decoded: DecodedEvent, now: datetime, customer: Any | None, *,
               clock: tuple[int, str] | None = None) -> dict[str, Any]:
    """The notification row for one PaymentProcessed given its customer's directory row (name, email,
    locale; None when unknown): pending with its recipient, or skipped with the reason. ``clock``: ``now`` as
    (milliseconds, ISO text), when the caller has it for a whole batch."""
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
        "next_attempt_ms": clock[0] if clock is not None else to_ms(now),
        "created_at": clock[1] if clock is not None else now.isoformat(),
    }
    if row["customer_id"] is None:
        what = "legacy event" if decoded.legacy else "event"
        row.update(reason_code="no_customer_id", reason=f"{what} without customerId: no one to notify")
        return row
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


def _customer_id(decoded: DecodedEvent) -> str | None:
    customer_id = getattr(decoded.event.data, "customerId", UNSET)
    return None if customer_id is UNSET else customer_id  # type: ignore[no-any-return]


def intent_of(conn: Connection, decoded: DecodedEvent, now: datetime) -> dict[str, Any]:
    """The notification row for one PaymentProcessed: pending with its recipient, or skipped with the reason."""
    customer_id = _customer_id(decoded) if isinstance(decoded.event, PaymentProcessed) else None
    customer = conn.execute(_CUSTOMER, {"id": customer_id}).first() if customer_id is not None else None
    return intent_row(decoded, now, customer)


def fact_history(conn: Connection) -> Iterator[tuple[str, str, str, dict[str, Any]]]:
    """The confirmations recorded before the one-fact rule existed (runtime.facts): the first per payment."""
    from decimal import Decimal

    from payevents.runtime.facts import content_from

    for r in conn.exec_driver_sql("SELECT payment_id, event_id, amount, currency, customer_id FROM notifications"
                                  " ORDER BY created_at, event_id"):
        yield r[0], "PaymentProcessed", r[1], content_from(Decimal(r[2]), r[3], customerId=r[4])


def handle_processed(conn: Connection, decoded: DecodedEvent, message: Message) -> None:
    """Record the confirmation intent of one PaymentProcessed (replay-safe: unique eventId)."""
    conn.execute(_INSERT, intent_of(conn, decoded, datetime.now(UTC)))


INTENT_COLUMNS = ("event_id", "payment_id", "customer_id", "status", "reason_code", "reason", "recipient",
                  "recipient_name", "locale", "event_json", "amount", "currency", "legacy", "next_attempt_ms",
                  "created_at")
_intent_tuple = itemgetter(*INTENT_COLUMNS)
def customers_of(conn: Connection, customer_ids: Iterable[str], chunk: int = 500) -> dict[str, Any]:
    """The directory rows of ``customer_ids`` (those it has), by customerId: :func:`payevents.runtime.bulk.lookup`
    (PostgreSQL: one prepared statement, a primary-key probe per id — an ``IN`` list of a batch's ids was a new
    500-parameter statement to parse and plan every batch; SQLite: an ``IN`` list per ``chunk`` ids)."""
    return {r[0]: r for r in bulk.lookup(conn, "customer_id, name, email, locale", "customers", "1 = 1",
                                                  "customer_id", sorted(set(customer_ids)), chunk=chunk)}


def handle_batch(conn: Connection, batch: Sequence[tuple[DecodedEvent, Message]]) -> None:
    """The batch handler: the effects of :func:`handle_processed` on each event in order, with the batch's
    customers looked up at once and the intents inserted with one driver-level executemany."""
    if not batch:
        return
    now = datetime.now(UTC)
    customers = customers_of(conn, [cid for d, _m in batch if isinstance(d.event, PaymentProcessed)
                                    and (cid := _customer_id(d)) is not None])
    clock = (to_ms(now), now.isoformat())
    rows = [(*_intent_tuple(intent_row(d, now, customers.get(_customer_id(d) or ""), clock=clock)), 0)
            for d, _m in batch]
    # one COPY on PostgreSQL (ON CONFLICT (event_id) DO NOTHING kept by runtime.bulk's fallback), a driver-level
    # executemany on SQLite; attempts starts at 0
    bulk.copy_rows(conn, "notifications", (*INTENT_COLUMNS, "attempts"), rows, or_ignore="event_id")
