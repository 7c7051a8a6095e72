"""Payments: the reference publisher of the payments.{env}.events channel.

A payment's lifecycle is a small state machine — initiate → authorize → capture → complete, or
fail from any open state — and every step records the payment and appends its event to the
outbox in one transaction. Functions take the settings first and return msgspec Structs.
"""

from __future__ import annotations

from payevents.services.payments.gateway import (
    Authorization,
    Capture,
    Gateway,
    GatewayRequest,
    SimulatedGateway,
)
from payevents.services.payments.lifecycle import (
    TimelineEvent,
    authorize,
    capture,
    complete,
    create,
    fail,
    list_payments,
    process_payment,
    process_payments,
    show,
    timeline,
)
from payevents.services.payments.models import EventRef, Payment, PaymentSpec, PaymentState
from payevents.services.payments.store import MIGRATIONS

__all__ = [
    "MIGRATIONS",
    "Authorization",
    "Capture",
    "EventRef",
    "Gateway",
    "GatewayRequest",
    "Payment",
    "PaymentSpec",
    "PaymentState",
    "SimulatedGateway",
    "TimelineEvent",
    "authorize",
    "capture",
    "complete",
    "create",
    "fail",
    "list_payments",
    "process_payment",
    "process_payments",
    "show",
    "timeline",
]
