"""Shared helpers of the outbox tests: valid lifecycle events, audit headers, one-shot appends."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy.engine import Engine

from payevents.contracts.channel import audit_headers
from payevents.contracts.events import (
    Amount,
    PaymentMethod,
    PaymentProcessed,
    PaymentProcessedData,
    ProcessedMetadata,
)
from payevents.runtime.outbox import AppendResult, append


def processed_event(payment_id: str, amount: str = "125.50", currency: str = "USD",
                    event_id: str | None = None) -> PaymentProcessed:
    """A canonical PaymentProcessed 1.0.0 (every field the event page requires)."""
    now = datetime.now(UTC)
    return PaymentProcessed(
        eventId=event_id or str(uuid.uuid4()),
        eventType="PaymentProcessed",
        timestamp=now,
        version="1.0.0",
        data=PaymentProcessedData(
            paymentId=payment_id,
            amount=Amount(value=Decimal(amount), currency=currency),
            paymentMethod=PaymentMethod(type="card", last4="4242"),
            processedAt=datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
            transactionId=f"txn-{payment_id}",
            customerId="cust-1",
            gatewayReference=f"gw-{payment_id}",
            metadata=ProcessedMetadata(description="Order payment", orderId="ord-1"),
        ),
    )


def headers_for(key: str, payment_id: str) -> dict[str, str]:
    return audit_headers(correlation_id=payment_id, causation_id=f"cmd-{key}", source="payments",
                         producer="payevents/test", environment="dev", idempotency_key=key)


def append_one(engine: Engine, payment_id: str, key: str, **kw: str) -> AppendResult:
    with engine.begin() as conn:
        return append(conn, processed_event(payment_id, **kw), headers=headers_for(key, payment_id),
                      idempotency_key=key, env="dev")
