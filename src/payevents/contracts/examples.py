"""Valid example events, one per published event type (used by ``payevents example``, tests and the catalog).

PaymentProcessed is the event page's example payload; the other lifecycle events describe the same payment.
Everything is deterministic unless you pass your own ids, amount or time.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

from payevents.contracts import events as ev
from payevents.contracts.events import EVENT_MODELS, Amount, PaymentEvent, envelope
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


_CARD = ev.PaymentMethod(type="credit_card", last4="4242")
_GATEWAY_REF = "ch_stripe_abc123"


def _initiated(eid: str, pid: str, amount: Amount, at: datetime) -> ev.PaymentInitiated:
    at -= timedelta(seconds=3)
    return envelope(ev.PaymentInitiated, eid, at, ev.PaymentInitiatedData(
        paymentId=pid, customerId=EXAMPLE_CUSTOMER_ID, amount=amount, paymentMethod=_CARD, initiatedAt=at,
        invoiceId="INV-2025-000123", merchantId="MERCH-456",
        metadata=ev.OrderMetadata(orderId="ORD-12345", description="Payment for Order #12345")))


def _authorized(eid: str, pid: str, amount: Amount, at: datetime) -> ev.PaymentAuthorized:
    at -= timedelta(seconds=2)
    return envelope(ev.PaymentAuthorized, eid, at, ev.PaymentAuthorizedData(
        paymentId=pid, customerId=EXAMPLE_CUSTOMER_ID, amount=amount, paymentMethod=_CARD,
        authorizationCode="AUTH123", gatewayReference=_GATEWAY_REF, authorizedAt=at, merchantId="MERCH-456"))


def _captured(eid: str, pid: str, amount: Amount, at: datetime) -> ev.PaymentCaptured:
    at -= timedelta(seconds=1)
    return envelope(ev.PaymentCaptured, eid, at, ev.PaymentCapturedData(
        paymentId=pid, customerId=EXAMPLE_CUSTOMER_ID, amount=amount, captureId="CAP456",
        gatewayReference=_GATEWAY_REF, capturedAt=at, merchantId="MERCH-456"))


def _processed(eid: str, pid: str, amount: Amount, at: datetime) -> ev.PaymentProcessed:
    return envelope(ev.PaymentProcessed, eid, at, ev.PaymentProcessedData(
        paymentId=pid, transactionId="txn_abcdef123456", customerId=EXAMPLE_CUSTOMER_ID, amount=amount,
        paymentMethod=_CARD, invoiceId="INV-2025-000123", gatewayReference=_GATEWAY_REF, processedAt=at,
        metadata=ev.ProcessedMetadata(orderId="ORD-12345", description="Payment for Order #12345")))


def _failed(eid: str, pid: str, amount: Amount, at: datetime) -> ev.PaymentFailed:
    return envelope(ev.PaymentFailed, eid, at, ev.PaymentFailedData(
        paymentId=pid, customerId=EXAMPLE_CUSTOMER_ID, amount=amount, failureCode="insufficient_funds",
        failureReason="The card has insufficient funds to complete the purchase", failedStage="authorized",
        failedAt=at, gatewayReference=_GATEWAY_REF, merchantId="MERCH-456"))


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
