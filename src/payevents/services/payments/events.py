"""The lifecycle events a payment emits, built from its recorded state.

Event ids are derived (uuid5 over paymentId and eventType, carrying the payment id's time when it has one:
:func:`payevents.contracts.ids.derived`): a payment has at most one event of each type, and rebuilding an
event for the same payment gives the same id.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Final, TypeVar

from msgspec import UNSET

from payevents import __version__
from payevents.contracts import ids
from payevents.contracts.channel import audit_headers
from payevents.contracts.events import (
    Amount,
    OrderMetadata,
    PaymentAuthorized,
    PaymentAuthorizedData,
    PaymentCaptured,
    PaymentCapturedData,
    PaymentFailed,
    PaymentFailedData,
    PaymentInitiated,
    PaymentInitiatedData,
    PaymentMethod,
    PaymentProcessed,
    PaymentProcessedData,
    ProcessedMetadata,
)
from payevents.services.payments.models import EventRef, Payment

NAMESPACE: Final = uuid.uuid5(uuid.NAMESPACE_URL, "https://payevents.local/services/payments/events")
VERSION: Final = "1.0.0"
_E = TypeVar("_E", PaymentInitiated, PaymentAuthorized, PaymentCaptured, PaymentProcessed, PaymentFailed)
SOURCE: Final = "payments"
PRODUCER: Final = f"payevents/{__version__}"


def event_id(payment_id: str, event_type: str) -> str:
    """uuid5(NAMESPACE, "{paymentId}/{eventType}"), with the payment id's time first when it has one (a payment
    id made here: ``pay_<uuid7>``), see :func:`payevents.contracts.ids.derived`."""
    return ids.derived(NAMESPACE, f"{payment_id}/{event_type}", payment_id)


def _opt(value: str | None) -> Any:
    return UNSET if value is None else value


def _amount(p: Payment) -> Amount:
    return Amount(value=p.amount, currency=p.currency)


def _event(cls: type[_E], p: Payment, at: datetime, data: Any) -> _E:
    """The envelope every payment event shares: id derived from (paymentId, eventType), time, version."""
    name = cls.__name__
    return cls(eventId=event_id(p.payment_id, name), eventType=name,  # type: ignore[arg-type]  # name is the Literal
           timestamp=at, version=VERSION, data=data)


def _method(p: Payment) -> PaymentMethod:
    return PaymentMethod(type=p.method_type, last4=p.last4)


def initiated(p: Payment, at: datetime) -> PaymentInitiated:
    return _event(PaymentInitiated, p, at, PaymentInitiatedData(
        paymentId=p.payment_id,
        customerId=p.customer_id,
        amount=_amount(p),
        paymentMethod=_method(p),
        initiatedAt=at,
        invoiceId=_opt(p.invoice_id),
        merchantId=_opt(p.merchant_id),
        metadata=OrderMetadata(description=p.description, orderId=_opt(p.order_id)),
    ))


def authorized(p: Payment, at: datetime) -> PaymentAuthorized:
    assert p.authorization_code is not None and p.gateway_reference is not None
    return _event(PaymentAuthorized, p, at, PaymentAuthorizedData(
        paymentId=p.payment_id,
        customerId=p.customer_id,
        amount=_amount(p),
        paymentMethod=_method(p),
        authorizationCode=p.authorization_code,
        gatewayReference=p.gateway_reference,
        authorizedAt=at,
        merchantId=_opt(p.merchant_id),
    ))


def captured(p: Payment, at: datetime) -> PaymentCaptured:
    assert p.capture_id is not None and p.gateway_reference is not None
    return _event(PaymentCaptured, p, at, PaymentCapturedData(
        paymentId=p.payment_id,
        customerId=p.customer_id,
        amount=_amount(p),
        captureId=p.capture_id,
        gatewayReference=p.gateway_reference,
        capturedAt=at,
        merchantId=_opt(p.merchant_id),
    ))


def processed(p: Payment, at: datetime) -> PaymentProcessed:
    """PaymentProcessed 1.0.0 exactly as the event page: only after authorization and capture succeeded
    and the transaction was recorded (transactionId, processedAt)."""
    assert p.transaction_id is not None and p.gateway_reference is not None and p.processed_at is not None
    return _event(PaymentProcessed, p, at, PaymentProcessedData(
        paymentId=p.payment_id,
        transactionId=p.transaction_id,
        customerId=p.customer_id,
        amount=_amount(p),
        paymentMethod=_method(p),
        invoiceId=_opt(p.invoice_id),
        gatewayReference=p.gateway_reference,
        processedAt=p.processed_at,
        metadata=ProcessedMetadata(description=p.description, orderId=_opt(p.order_id)),
    ))


def failed(p: Payment, at: datetime) -> PaymentFailed:
    assert p.failure_code is not None and p.failure_reason is not None and p.failed_stage is not None
    return _event(PaymentFailed, p, at, PaymentFailedData(
        paymentId=p.payment_id,
        customerId=p.customer_id,
        amount=_amount(p),
        failureCode=p.failure_code,  # type: ignore[arg-type]
        failureReason=p.failure_reason,
        failedStage=p.failed_stage,  # type: ignore[arg-type]
        failedAt=at,
        gatewayReference=_opt(p.gateway_reference),
        merchantId=_opt(p.merchant_id),
    ))


def headers(p: Payment, *, command_id: str, idempotency_key: str, env: str) -> dict[str, str]:
    """The audit trail: correlation = the payment's flow, causation = the command that emitted it."""
    return audit_headers(
        correlation_id=p.correlation_id,
        causation_id=command_id,
        source=SOURCE,
        producer=PRODUCER,
        environment=env,
        idempotency_key=idempotency_key,
    )


_STAGES: Final = (
    ("PaymentInitiated", "created_at"),
    ("PaymentAuthorized", "authorized_at"),
    ("PaymentCaptured", "captured_at"),
    ("PaymentProcessed", "processed_at"),
    ("PaymentFailed", "failed_at"),
)


def event_refs(p: Payment) -> list[EventRef]:
    """The events this payment has emitted, in order (derived ids, recorded times)."""
    out = []
    for event_type, attr in _STAGES:
        at = getattr(p, attr)
        if at is not None:
            out.append(EventRef(event_type=event_type, event_id=event_id(p.payment_id, event_type), at=at))
    return out
