"""The legacy envelope of the channel page's code sample, and its upcaster to PaymentProcessed 1.0.0.

``{"eventType": "PAYMENT_PROCESSED", "version": "1.0", "timestamp": <naive>, "payload": {...},
"metadata": {..., "idempotencyKey": ...}}`` is accepted on read only; we never emit it.

Normalization (nothing is invented):

* ``eventId`` = uuid5(:data:`LEGACY_EVENT_NAMESPACE`, metadata.idempotencyKey): a replay derives the same id;
* naive timestamps are read as UTC; ``processedAt`` = the legacy timestamp (the sample emits on processing);
* ``amount`` is a lossless Decimal; ``orderId`` -> ``data.metadata.orderId``;
* ``paymentMethod.type`` lower-cased (CREDIT_CARD -> credit_card) with ``last4``;
* ``transactionDetails.processorId`` -> ``data.gatewayReference`` (the processor's reference);
* customerId, transactionId, invoiceId and metadata.description stay UNSET (the legacy event lacks them);
* legacy metadata (merchantId, correlationId, source, environment, idempotencyKey), status, and the
  processor details without a canonical field (network, authorizationCode, captureId) go to ``extras``.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Final, Literal

from msgspec import UNSET, Meta, Struct, UnsetType

from payevents.contracts.events import (
    MAX_CODE_LENGTH,
    MAX_ID_LENGTH,
    Amount,
    Code,
    Id,
    PaymentMethod,
    PaymentProcessed,
    PaymentProcessedData,
    ProcessedMetadata,
)

LEGACY_EVENT_TYPE: Final = "PAYMENT_PROCESSED"
LEGACY_VERSION: Final = "1.0"
#: fixed namespace of legacy eventIds: uuid5(NAMESPACE_URL, "urn:payevents:legacy:PAYMENT_PROCESSED:1.0")
LEGACY_EVENT_NAMESPACE: Final = uuid.UUID("3edabb0b-bf3f-5b47-886e-06e32c3043ae")
#: the only payload.status a PAYMENT_PROCESSED event may carry
LEGACY_SUCCESS: Final = "SUCCESS"

_NonEmpty = Annotated[str, Meta(min_length=1)]
_Bounded = Annotated[str, Meta(max_length=MAX_ID_LENGTH)]  # an id the envelope may leave empty
_Code = Annotated[str, Meta(max_length=MAX_CODE_LENGTH)]


class LegacyAmount(Struct, kw_only=True, frozen=True):
    value: Decimal
    currency: str


class LegacyPaymentMethod(Struct, kw_only=True, frozen=True):
    type: Code
    last4: Annotated[str, Meta(pattern=r"^[0-9]{4}$")]
    expiryMonth: str | UnsetType = UNSET
    expiryYear: str | UnsetType = UNSET
    network: str | UnsetType = UNSET


class LegacyTransactionDetails(Struct, kw_only=True, frozen=True):
    processorId: Id | UnsetType = UNSET
    authorizationCode: _Code | UnsetType = UNSET
    captureId: _Code | UnsetType = UNSET


class LegacyPayload(Struct, kw_only=True, frozen=True):
    paymentId: Id
    amount: LegacyAmount
    status: Literal["SUCCESS"]
    paymentMethod: LegacyPaymentMethod
    orderId: Id | UnsetType = UNSET
    transactionDetails: LegacyTransactionDetails | UnsetType = UNSET


class LegacyMetadata(Struct, kw_only=True, frozen=True):
    idempotencyKey: Id
    correlationId: _Bounded | UnsetType = UNSET
    merchantId: _Bounded | UnsetType = UNSET
    source: str | UnsetType = UNSET
    environment: str | UnsetType = UNSET


class LegacyPaymentProcessed(Struct, kw_only=True, frozen=True):
    """The channel page's sample envelope (PAYMENT_PROCESSED 1.0). Read-only."""

    eventType: Literal["PAYMENT_PROCESSED"]
    timestamp: datetime
    version: Literal["1.0"]
    payload: LegacyPayload
    metadata: LegacyMetadata


def legacy_event_id(idempotency_key: str) -> str:
    """The derived eventId of a legacy event: uuid5 of its idempotency key in the fixed namespace."""
    return str(uuid.uuid5(LEGACY_EVENT_NAMESPACE, idempotency_key))


def as_utc(ts: datetime) -> datetime:
    """Naive timestamps are UTC (``datetime.utcnow().isoformat()``); aware ones are converted to UTC."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def normalize(legacy: LegacyPaymentProcessed) -> tuple[PaymentProcessed, dict[str, Any]]:
    """The canonical PaymentProcessed 1.0.0 of a legacy event, and the extras it carried beyond the model."""
    p = legacy.payload
    m = legacy.metadata
    ts = as_utc(legacy.timestamp)
    details = p.transactionDetails
    gateway_ref = details.processorId if details is not UNSET else UNSET
    data = PaymentProcessedData(
        paymentId=p.paymentId,
        amount=Amount(value=p.amount.value, currency=p.amount.currency),
        paymentMethod=PaymentMethod(type=p.paymentMethod.type.lower(), last4=p.paymentMethod.last4),
        processedAt=ts,
        gatewayReference=gateway_ref,
        metadata=ProcessedMetadata(orderId=p.orderId) if p.orderId is not UNSET else UNSET,
    )
    event = PaymentProcessed(
        eventId=legacy_event_id(m.idempotencyKey),
        eventType="PaymentProcessed",
        timestamp=ts,
        version=PaymentProcessed.VERSION,
        data=data,
    )
    extras: dict[str, Any] = {
        "legacyEventType": LEGACY_EVENT_TYPE,
        "legacyVersion": LEGACY_VERSION,
        "status": p.status,
        "idempotencyKey": m.idempotencyKey,
    }
    for name in ("merchantId", "correlationId", "source", "environment"):
        value = getattr(m, name)
        if value is not UNSET:
            extras[name] = value
    if p.paymentMethod.network is not UNSET:
        extras["network"] = p.paymentMethod.network
    if details is not UNSET:
        for name in ("authorizationCode", "captureId"):
            value = getattr(details, name)
            if value is not UNSET:
                extras[name] = value
    return event, extras


__all__ = [
    "LEGACY_EVENT_NAMESPACE",
    "LEGACY_EVENT_TYPE",
    "LEGACY_SUCCESS",
    "LEGACY_VERSION",
    "LegacyPaymentProcessed",
    "as_utc",
    "legacy_event_id",
    "normalize",
]
