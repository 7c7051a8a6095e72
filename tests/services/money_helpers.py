"""Helpers for the ledger and invoices tests: PaymentProcessed events built from the contract model,
delivered to a service's handlers inside one store transaction, the way the consumer runtime does."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal

from msgspec import UNSET

from payevents.contracts.codec import DecodedEvent
from payevents.contracts.events import (
    Amount,
    PaymentMethod,
    PaymentProcessed,
    PaymentProcessedData,
    ProcessedMetadata,
)
from payevents.settings import Settings
from payevents.transport.base import Message

T0 = datetime(2025, 12, 11, 10, 30, tzinfo=UTC)


def processed(
    *,
    amount: str | Decimal = "99.99",
    currency: str = "USD",
    invoice_id: str | None = None,
    payment_id: str | None = None,
    event_id: str | None = None,
    customer_id: str = "cus_johndoe",
    legacy: bool = False,
) -> DecodedEvent:
    """A PaymentProcessed 1.0.0 (or a normalized legacy one: no customerId, invoiceId, transactionId...)."""
    pid = payment_id or f"pay_{uuid.uuid4().hex[:12]}"
    value = Decimal(amount)
    if legacy:
        data = PaymentProcessedData(paymentId=pid, amount=Amount(value=value, currency=currency),
                                    paymentMethod=PaymentMethod(type="CREDIT_CARD", last4="4242"), processedAt=T0,
                                    metadata=ProcessedMetadata(orderId="ORD-789"))  # fmt: skip
    else:
        data = PaymentProcessedData(
            paymentId=pid, transactionId=f"txn_{pid}", customerId=customer_id,
            amount=Amount(value=value, currency=currency),
            paymentMethod=PaymentMethod(type="credit_card", last4="4242"),
            invoiceId=UNSET if invoice_id is None else invoice_id, gatewayReference=f"ch_{pid}", processedAt=T0,
            metadata=ProcessedMetadata(description=f"Payment {pid}", orderId="ORD-12345"),
        )  # fmt: skip
    event = PaymentProcessed(eventId=event_id or str(uuid.uuid4()), eventType="PaymentProcessed", timestamp=T0,
                             version="1.0.0", data=data)  # fmt: skip
    return DecodedEvent(event=event, legacy=legacy)


def message_for(decoded: DecodedEvent, offset: int = 0) -> Message:
    return Message(topic="payments.dev.events", partition=0, offset=offset, key=decoded.payment_id.encode(),
                   value=None, headers=(), timestamp_ms=0)  # fmt: skip


def deliver(settings: Settings, service: str, events: Iterable[DecodedEvent]) -> None:
    """Apply ``events`` with ``service``'s handlers in ONE transaction (no runtime dedup: the handlers
    themselves must absorb replays)."""
    from payevents.services import load_service

    svc = load_service(service)
    if service == "ledger":
        from payevents.services.ledger.store import engine
    else:
        from payevents.services.invoices.store import engine
    from payevents.store.db import writer

    # as the consumer runtime does: on SQLite the transaction takes the write lock at BEGIN
    with writer(engine(settings)).begin() as conn:
        for i, d in enumerate(events):
            svc.handlers[d.event_type](conn, d, message_for(d, i))
