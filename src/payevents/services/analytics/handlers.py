"""Analytics handlers: every lifecycle event becomes one fact row (replay-safe by eventId) and
updates its payment's timestamps (first write wins, so a replay changes nothing)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from msgspec import UNSET
from sqlalchemy.engine import Connection

from payevents.contracts.codec import DecodedEvent
from payevents.services.analytics.money import to_minor
from payevents.transport.base import Message

#: eventType -> (the data field with the business time, the per-payment timestamp column)
TIME_FIELDS: dict[str, tuple[str, str]] = {
    "PaymentInitiated": ("initiatedAt", "initiated_ms"),
    "PaymentAuthorized": ("authorizedAt", "authorized_ms"),
    "PaymentCaptured": ("capturedAt", "captured_ms"),
    "PaymentProcessed": ("processedAt", "processed_ms"),
    "PaymentFailed": ("failedAt", "failed_ms"),
}

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_INSERT_FACT = sa.text(
    "INSERT INTO analytics_events (event_id, event_type, payment_id, occurred_ms, day, month, currency,"
    " amount_minor, method_type, merchant_id, failure_code, failed_stage, legacy)"
    " VALUES (:event_id, :event_type, :payment_id, :occurred_ms, :day, :month, :currency,"
    " :amount_minor, :method_type, :merchant_id, :failure_code, :failed_stage, :legacy)"
    " ON CONFLICT (event_id) DO NOTHING"
)


def _upsert_payment(column: str) -> sa.TextClause:
    return sa.text(
        f"INSERT INTO analytics_payments (payment_id, currency, method_type, merchant_id, {column})"
        " VALUES (:payment_id, :currency, :method_type, :merchant_id, :at)"
        " ON CONFLICT (payment_id) DO UPDATE SET"
        " currency = COALESCE(analytics_payments.currency, excluded.currency),"
        " method_type = COALESCE(analytics_payments.method_type, excluded.method_type),"
        " merchant_id = COALESCE(analytics_payments.merchant_id, excluded.merchant_id),"
        f" {column} = COALESCE(analytics_payments.{column}, excluded.{column})"
    )


_UPSERT_PAYMENT = {event_type: _upsert_payment(column) for event_type, (_f, column) in TIME_FIELDS.items()}


def _opt(value: Any) -> Any:
    return None if value is UNSET else value


def fact_of(decoded: DecodedEvent) -> dict[str, Any]:
    """The fact row of one event (plain values; amounts in integer minor units)."""
    event = decoded.event
    data: Any = event.data
    time_field, _column = TIME_FIELDS[event.eventType]
    at: datetime = getattr(data, time_field).astimezone(UTC)
    method = getattr(data, "paymentMethod", None)
    merchant = _opt(getattr(data, "merchantId", UNSET)) or decoded.extras.get("merchantId")
    return {
        "event_id": event.eventId,
        "event_type": event.eventType,
        "payment_id": data.paymentId,
        "occurred_ms": (at - EPOCH) // timedelta(milliseconds=1),
        "day": at.strftime("%Y-%m-%d"),
        "month": at.strftime("%Y-%m"),
        "currency": data.amount.currency,
        "amount_minor": to_minor(data.amount.value, data.amount.currency),
        "method_type": method.type.lower() if method is not None else None,
        "merchant_id": str(merchant) if merchant else None,
        "failure_code": getattr(data, "failureCode", None),
        "failed_stage": getattr(data, "failedStage", None),
        "legacy": 1 if decoded.legacy else 0,
    }


def apply_facts(conn: Connection, facts: list[dict[str, Any]]) -> None:
    """Write facts (and their payments' timestamps) through ``conn``; facts already seen add nothing."""
    if not facts:
        return
    conn.execute(_INSERT_FACT, facts)
    by_type: dict[str, list[dict[str, Any]]] = {}
    for f in facts:
        by_type.setdefault(f["event_type"], []).append(
            {
                "payment_id": f["payment_id"],
                "currency": f["currency"],
                "method_type": f["method_type"],
                "merchant_id": f["merchant_id"],
                "at": f["occurred_ms"],
            }
        )
    for event_type, rows in by_type.items():
        conn.execute(_UPSERT_PAYMENT[event_type], rows)


def handle_event(conn: Connection, decoded: DecodedEvent, message: Message) -> None:
    """The analytics handler for every lifecycle event type."""
    apply_facts(conn, [fact_of(decoded)])
