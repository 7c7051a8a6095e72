"""The Payments service's values: a payment, its lifecycle states, and a batch spec."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Final

import msgspec


class PaymentState(StrEnum):
    """initiated -> authorized -> captured -> processed; failed from any open state."""

    initiated = "initiated"
    authorized = "authorized"
    captured = "captured"
    processed = "processed"
    failed = "failed"


OPEN_STATES: Final = frozenset({PaymentState.initiated, PaymentState.authorized, PaymentState.captured})

#: command -> the states it may start from
ALLOWED_FROM: Final[dict[str, frozenset[PaymentState]]] = {
    "authorize": frozenset({PaymentState.initiated}),
    "capture": frozenset({PaymentState.authorized}),
    "complete": frozenset({PaymentState.captured}),
    "fail": OPEN_STATES,
}


class EventRef(msgspec.Struct, kw_only=True, frozen=True):
    """One event a payment emitted (its id is derived from paymentId and eventType)."""

    event_type: str
    event_id: str
    at: datetime


class Payment(msgspec.Struct, kw_only=True, frozen=True):
    """A payment as recorded by the Payments service. Card data: method type and last4 only."""

    payment_id: str
    state: str
    customer_id: str
    amount: Decimal
    amount_minor: int
    currency: str
    method_type: str
    last4: str
    description: str
    correlation_id: str
    invoice_id: str | None = None
    order_id: str | None = None
    merchant_id: str | None = None
    authorization_code: str | None = None
    capture_id: str | None = None
    gateway_reference: str | None = None
    transaction_id: str | None = None
    failure_code: str | None = None
    failure_reason: str | None = None
    failed_stage: str | None = None
    created_at: datetime | None = None
    authorized_at: datetime | None = None
    captured_at: datetime | None = None
    processed_at: datetime | None = None
    failed_at: datetime | None = None
    events: list[EventRef] = msgspec.field(default_factory=list)


class PaymentSpec(msgspec.Struct, kw_only=True, frozen=True):
    """One payment for :func:`process_payment` / :func:`process_payments` (the whole lifecycle)."""

    customer_id: str
    amount: Decimal | str | int
    currency: str
    description: str
    method_type: str = "credit_card"
    last4: str = "4242"
    invoice_id: str | None = None
    order_id: str | None = None
    merchant_id: str | None = None
    correlation_id: str | None = None
    #: a retried spec with the same key returns the first result (None: a fresh key)
    idempotency_key: str | None = None
    #: ask the simulated gateway to decline with this failure code (demo: declines on purpose)
    decline: str | None = None
