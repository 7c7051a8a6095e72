"""The event contracts: one typed model per event type and version (msgspec Structs).

``PaymentProcessed`` 1.0.0 is exactly the event page (``shared/seeds/001_*.txt``): 20 properties
counted recursively. The other lifecycle events of the channel page use the same envelope
(eventId, eventType, timestamp, version, data) and version 1.0.0.

Fields that the legacy envelope (channel page sample) lacks are declared with an ``UNSET`` default
so that a normalized legacy event can leave them absent instead of filling placeholders; for a
canonical (non-legacy) event they are required, which :mod:`payevents.contracts.codec` enforces
(see ``CANONICAL_REQUIRED``). Audit fields travel as headers, see :mod:`.channel`.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Final, Literal, TypeVar

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

UUID_PATTERN: Final = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
SEMVER_PATTERN: Final = r"^\d+\.\d+\.\d+$"

EventId = Annotated[str, Meta(pattern=UUID_PATTERN)]
Version = Annotated[str, Meta(pattern=SEMVER_PATTERN)]
AwareDatetime = Annotated[datetime, Meta(tz=True)]
NonEmpty = Annotated[str, Meta(min_length=1)]
#: the longest id or reference a field may hold: every store keeps ids in columns this wide (PostgreSQL refuses a
#: longer value, so an event carrying one would be refused by the store, not by the contract, and never applied)
MAX_ID_LENGTH: Final = 255
#: the longest code: a payment method's type, an authorization code, a capture id
MAX_CODE_LENGTH: Final = 64
Id = Annotated[str, Meta(min_length=1, max_length=MAX_ID_LENGTH)]
Code = Annotated[str, Meta(min_length=1, max_length=MAX_CODE_LENGTH)]
Last4 = Annotated[str, Meta(pattern=r"^[0-9]{4}$")]
CurrencyCode = Annotated[str, Meta(pattern=r"^[A-Z]{3}$")]


class Amount(Struct, kw_only=True, frozen=True, forbid_unknown_fields=False):
    """A positive amount in a currency; ``value`` is a lossless Decimal (JSON number on the wire)."""

    value: Decimal
    currency: CurrencyCode


class PaymentMethod(Struct, kw_only=True, frozen=True):
    """Only the method type and the last four digits: never a card number."""

    type: Code
    last4: Last4


# -- PaymentProcessed 1.0.0 (the event page) -------------------------------------------------------


class ProcessedMetadata(Struct, kw_only=True, frozen=True):
    orderId: Id | UnsetType = UNSET
    description: NonEmpty | UnsetType = UNSET


class PaymentProcessedData(Struct, kw_only=True, frozen=True):
    """Fields in the event page's order (kw_only lets required and optional fields interleave)."""

    paymentId: Id
    transactionId: Id | UnsetType = UNSET
    customerId: Id | UnsetType = UNSET
    amount: Amount
    paymentMethod: PaymentMethod
    invoiceId: Id | UnsetType = UNSET  # optional: absent, never null
    gatewayReference: Id | UnsetType = UNSET
    processedAt: AwareDatetime
    metadata: ProcessedMetadata | UnsetType = UNSET


class PaymentProcessed(Struct, kw_only=True, frozen=True):
    """Emitted when a payment has been successfully processed and funds have been captured."""

    EVENT_TYPE: ClassVar[str] = "PaymentProcessed"
    VERSION: ClassVar[str] = "1.0.0"

    eventId: EventId
    eventType: Literal["PaymentProcessed"]
    timestamp: AwareDatetime
    version: Version
    data: PaymentProcessedData


# -- the other lifecycle events of the channel page, 1.0.0 -------------------------------------------


class OrderMetadata(Struct, kw_only=True, frozen=True):
    description: NonEmpty | UnsetType = UNSET
    orderId: Id | UnsetType = UNSET


class PaymentInitiatedData(Struct, kw_only=True, frozen=True):
    paymentId: Id
    customerId: Id
    amount: Amount
    paymentMethod: PaymentMethod
    initiatedAt: AwareDatetime
    invoiceId: Id | UnsetType = UNSET
    merchantId: Id | UnsetType = UNSET
    metadata: OrderMetadata | UnsetType = UNSET


class PaymentInitiated(Struct, kw_only=True, frozen=True):
    """A payment was created and is about to be sent to the gateway for authorization."""

    EVENT_TYPE: ClassVar[str] = "PaymentInitiated"
    VERSION: ClassVar[str] = "1.0.0"

    eventId: EventId
    eventType: Literal["PaymentInitiated"]
    timestamp: AwareDatetime
    version: Version
    data: PaymentInitiatedData


class PaymentAuthorizedData(Struct, kw_only=True, frozen=True):
    paymentId: Id
    customerId: Id
    amount: Amount
    paymentMethod: PaymentMethod
    authorizationCode: Code
    gatewayReference: Id
    authorizedAt: AwareDatetime
    merchantId: Id | UnsetType = UNSET


class PaymentAuthorized(Struct, kw_only=True, frozen=True):
    """The gateway authorized the amount: funds are reserved, not yet captured."""

    EVENT_TYPE: ClassVar[str] = "PaymentAuthorized"
    VERSION: ClassVar[str] = "1.0.0"

    eventId: EventId
    eventType: Literal["PaymentAuthorized"]
    timestamp: AwareDatetime
    version: Version
    data: PaymentAuthorizedData


class PaymentCapturedData(Struct, kw_only=True, frozen=True):
    paymentId: Id
    customerId: Id
    amount: Amount
    captureId: Code
    gatewayReference: Id
    capturedAt: AwareDatetime
    merchantId: Id | UnsetType = UNSET


class PaymentCaptured(Struct, kw_only=True, frozen=True):
    """The authorized funds were captured; PaymentProcessed follows once the payment is recorded."""

    EVENT_TYPE: ClassVar[str] = "PaymentCaptured"
    VERSION: ClassVar[str] = "1.0.0"

    eventId: EventId
    eventType: Literal["PaymentCaptured"]
    timestamp: AwareDatetime
    version: Version
    data: PaymentCapturedData


FailureCode = Literal[
    "card_declined",
    "insufficient_funds",
    "expired_card",
    "invalid_card",
    "fraud_suspected",
    "authorization_expired",
    "capture_failed",
    "processing_error",
    "cancelled",
]
FAILURE_CODES: Final[tuple[str, ...]] = FailureCode.__args__  # type: ignore[attr-defined]
FailedStage = Literal["initiated", "authorized", "captured"]


class PaymentFailedData(Struct, kw_only=True, frozen=True):
    paymentId: Id
    customerId: Id
    amount: Amount
    failureCode: FailureCode
    failureReason: NonEmpty
    failedStage: FailedStage
    failedAt: AwareDatetime
    gatewayReference: Id | UnsetType = UNSET
    merchantId: Id | UnsetType = UNSET


class PaymentFailed(Struct, kw_only=True, frozen=True):
    """The payment failed (declined, expired, cancelled, ...) from any open state."""

    EVENT_TYPE: ClassVar[str] = "PaymentFailed"
    VERSION: ClassVar[str] = "1.0.0"

    eventId: EventId
    eventType: Literal["PaymentFailed"]
    timestamp: AwareDatetime
    version: Version
    data: PaymentFailedData


PaymentEvent = PaymentInitiated | PaymentAuthorized | PaymentCaptured | PaymentProcessed | PaymentFailed

#: (eventType, version) -> model. The catalog, schemas and the runtime's registry all start here.
EVENT_MODELS: Final[dict[tuple[str, str], type[Struct]]] = {
    (m.EVENT_TYPE, m.VERSION): m  # type: ignore[attr-defined]
    for m in (PaymentInitiated, PaymentAuthorized, PaymentCaptured, PaymentProcessed, PaymentFailed)
}
EVENT_TYPES: Final[tuple[str, ...]] = tuple(t for t, _ in EVENT_MODELS)

_E = TypeVar("_E", PaymentInitiated, PaymentAuthorized, PaymentCaptured, PaymentProcessed, PaymentFailed)


def envelope(cls: type[_E], event_id: str, timestamp: datetime, data: Any) -> _E:
    """An event of model ``cls``: the envelope every payment event shares (eventId, eventType = the model's,
    timestamp, the model's version) around ``data``."""
    return cls(eventId=event_id, eventType=cls.EVENT_TYPE, timestamp=timestamp,  # type: ignore[arg-type]
               version=cls.VERSION, data=data)

#: Fields that may be UNSET only on a normalized legacy event; a canonical event must carry them.
CANONICAL_REQUIRED: Final[dict[str, tuple[str, ...]]] = {
    "PaymentProcessed": (
        "data.transactionId",
        "data.customerId",
        "data.gatewayReference",
        "data.metadata",
        "data.metadata.description",
    ),
}

__all__ = [
    "EVENT_MODELS",
    "EVENT_TYPES",
    "UNSET",
    "Amount",
    "PaymentAuthorized",
    "PaymentCaptured",
    "PaymentEvent",
    "PaymentFailed",
    "PaymentInitiated",
    "PaymentMethod",
    "PaymentProcessed",
    "UnsetType",
    "msgspec",
]
