"""Valid example events, one per published event type (used by ``payevents example``, tests and the catalog).

PaymentProcessed is the event page's example payload; the other lifecycle events describe the same payment.
Everything is deterministic unless you pass your own ids, amount or time.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

from payevents.contracts.events import (
    EVENT_MODELS,
    Amount,
    OrderMetadata,
    PaymentAuthorized,
    PaymentAuthorizedData,
    PaymentCaptured,
    PaymentCapturedData,
    PaymentEvent,
    PaymentFailed,
    PaymentFailedData,
    PaymentInitiated,
    PaymentInitiatedData,
    PaymentMethod,
    PaymentProcessed,
    PaymentProcessedData,
    ProcessedMetadata,
)
from payevents.errors import ContractError

#: the event page's example values
EXAMPLE_PAYMENT_ID: Final = "pay_1234567890"
EXAMPLE_CUSTOMER_ID: Final = "cus_johndoe"
EXAMPLE_AT: Final = datetime(2025, 12, 11, 10, 30, tzinfo=UTC)
EXAMPLE_EVENT_IDS: Final = {
    "PaymentInitiated": "0c5b1c2e-6f0a-4c1e-9d7a-1b2c3d4e5f60",
    "PaymentAuthorized": "1d6c2d3f-7a1b-4d2f-8e8b-2c3d4e5f6a71",
    "PaymentCaptured": "2e7d3e4a-8b2c-4e3a-9f9c-3d4e5f6a7b82",
    "PaymentProcessed": "e7f8a9b0-c1d2-3e4f-5a6b-7c8d9e0f1a2b",  # the event page's example
    "PaymentFailed": "3f8e4f5b-9c3d-4f4b-a0ad-4e5f6a7b8c93",
}


def _initiated(eid: str, pid: str, amount: Amount, at: datetime) -> PaymentInitiated:
    return PaymentInitiated(
        eventId=eid,
        eventType="PaymentInitiated",
        timestamp=at - timedelta(seconds=3),
        version="1.0.0",
        data=PaymentInitiatedData(
            paymentId=pid,
            customerId=EXAMPLE_CUSTOMER_ID,
            amount=amount,
            paymentMethod=PaymentMethod(type="credit_card", last4="4242"),
            initiatedAt=at - timedelta(seconds=3),
            invoiceId="INV-2025-000123",
            merchantId="MERCH-456",
            metadata=OrderMetadata(orderId="ORD-12345", description="Payment for Order #12345"),
        ),
    )


def _authorized(eid: str, pid: str, amount: Amount, at: datetime) -> PaymentAuthorized:
    return PaymentAuthorized(
        eventId=eid,
        eventType="PaymentAuthorized",
        timestamp=at - timedelta(seconds=2),
        version="1.0.0",
        data=PaymentAuthorizedData(
            paymentId=pid,
            customerId=EXAMPLE_CUSTOMER_ID,
            amount=amount,
            paymentMethod=PaymentMethod(type="credit_card", last4="4242"),
            authorizationCode="AUTH123",
            gatewayReference="ch_stripe_abc123",
            authorizedAt=at - timedelta(seconds=2),
            merchantId="MERCH-456",
        ),
    )


def _captured(eid: str, pid: str, amount: Amount, at: datetime) -> PaymentCaptured:
    return PaymentCaptured(
        eventId=eid,
        eventType="PaymentCaptured",
        timestamp=at - timedelta(seconds=1),
        version="1.0.0",
        data=PaymentCapturedData(
            paymentId=pid,
            customerId=EXAMPLE_CUSTOMER_ID,
            amount=amount,
            captureId="CAP456",
            gatewayReference="ch_stripe_abc123",
            capturedAt=at - timedelta(seconds=1),
            merchantId="MERCH-456",
        ),
    )


def _processed(eid: str, pid: str, amount: Amount, at: datetime) -> PaymentProcessed:
    return PaymentProcessed(
        eventId=eid,
        eventType="PaymentProcessed",
        timestamp=at,
        version="1.0.0",
        data=PaymentProcessedData(
            paymentId=pid,
            transactionId="txn_abcdef123456",
            customerId=EXAMPLE_CUSTOMER_ID,
            amount=amount,
            paymentMethod=PaymentMethod(type="credit_card", last4="4242"),
            invoiceId="INV-2025-000123",
            gatewayReference="ch_stripe_abc123",
            processedAt=at,
            metadata=ProcessedMetadata(orderId="ORD-12345", description="Payment for Order #12345"),
        ),
    )


def _failed(eid: str, pid: str, amount: Amount, at: datetime) -> PaymentFailed:
    return PaymentFailed(
        eventId=eid,
        eventType="PaymentFailed",
        timestamp=at,
        version="1.0.0",
        data=PaymentFailedData(
            paymentId=pid,
            customerId=EXAMPLE_CUSTOMER_ID,
            amount=amount,
            failureCode="insufficient_funds",
            failureReason="The card has insufficient funds to complete the purchase",
            failedStage="authorized",
            failedAt=at,
            gatewayReference="ch_stripe_abc123",
            merchantId="MERCH-456",
        ),
    )


_BUILDERS: Final[dict[str, Callable[[str, str, Amount, datetime], Any]]] = {
    "PaymentInitiated": _initiated,
    "PaymentAuthorized": _authorized,
    "PaymentCaptured": _captured,
    "PaymentProcessed": _processed,
    "PaymentFailed": _failed,
}


def example_event(
    event_type: str,
    version: str | None = None,
    *,
    event_id: str | None = None,
    payment_id: str = EXAMPLE_PAYMENT_ID,
    amount: Decimal = Decimal("99.99"),
    currency: str = "USD",
    at: datetime = EXAMPLE_AT,
) -> PaymentEvent:
    """A valid example of ``event_type`` (latest version) — ``encode_event`` accepts it."""
    builder = _BUILDERS.get(event_type)
    published = [v for t, v in EVENT_MODELS if t == event_type]
    if builder is None or (version is not None and version not in published):
        known = ", ".join(f"{t} {v}" for t, v in EVENT_MODELS)
        what = f"{event_type!r}" if version is None else f"{event_type!r} version {version!r}"
        raise ContractError(f"example: no example for {what} (known: {known})")
    event: PaymentEvent = builder(
        event_id or EXAMPLE_EVENT_IDS[event_type], payment_id, Amount(value=amount, currency=currency), at
    )
    return event


def example_json(event_type: str, version: str | None = None) -> bytes:
    """The example as the JSON we would emit (validated by ``encode_event``)."""
    from payevents.contracts.codec import encode_event

    return encode_event(example_event(event_type, version))


__all__ = ["EXAMPLE_AT", "EXAMPLE_CUSTOMER_ID", "EXAMPLE_PAYMENT_ID", "example_event", "example_json"]
