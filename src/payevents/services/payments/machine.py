"""The payment state machine, once: initiated -> authorized -> captured -> processed; failed from any open state.

Each transition is one function from a payment (and the gateway's answer) to the next payment and the event
it emits; it checks that the transition is allowed (:data:`~payevents.services.payments.models.ALLOWED_FROM`)
and writes nothing. The single-step commands (``authorize``, ``capture``, ``complete``, ``fail``) and the bulk
path (``process_payments``) both go through these functions, so a rule changes in one place.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from payevents.contracts import ids
from payevents.contracts.events import FAILURE_CODES
from payevents.errors import IllegalTransition
from payevents.services.payments import events as ev
from payevents.services.payments.gateway import Authorization, Gateway, GatewayRequest
from payevents.services.payments.models import ALLOWED_FROM, Payment, PaymentState

#: (the payment after the transition, the event it emits)
Step = tuple[Payment, Any]


def new_id(prefix: str) -> str:
    """A new payment or transaction id, ``{prefix}_{uuid7}``: time-ordered, so the payments' indexes grow at their
    right edge and the ids derived from it (eventIds, journal entries) carry its time (:mod:`payevents.contracts.ids`).
    Dashed, not .hex: 32 hex chars hold a Luhn-valid 13+ digit run in ~1 of 500 ids, which the card guard
    (rightly) refuses; a UUID's groups never do."""
    return f"{prefix}_{ids.uuid7()}"


def check(p: Payment, command: str) -> None:
    """IllegalTransition unless ``command`` may start from the payment's state."""
    allowed = ALLOWED_FROM[command]
    if PaymentState(p.state) not in allowed:
        names = ", ".join(sorted(s.value for s in allowed))
        raise IllegalTransition(
            f"payment {p.payment_id}: cannot {command} a payment that is {p.state} (allowed from: {names})"
        )


def request(p: Payment, decline: str | None) -> GatewayRequest:
    return GatewayRequest(payment_id=p.payment_id, customer_id=p.customer_id, amount_minor=p.amount_minor,
                          currency=p.currency, method_type=p.method_type, last4=p.last4, force_decline=decline)


def declined(p: Payment, code: str | None, reason: str | None, stage: str, reference: str | None,
             now: datetime) -> Payment:
    """The payment failed at ``stage`` (an unknown code becomes ``processing_error``)."""
    code = code if code in FAILURE_CODES else "processing_error"
    return msgspec.structs.replace(p, state=PaymentState.failed.value, failure_code=code,
                                   failure_reason=reason or "The gateway gave no reason.", failed_stage=stage,
                                   gateway_reference=reference, failed_at=now)  # fmt: skip


def authorize(p: Payment, gw: Gateway, now: datetime, *, decline: str | None = None) -> Step:
    """``authorized`` + PaymentAuthorized, or on a decline ``failed`` + PaymentFailed (failedStage ``initiated``)."""
    check(p, "authorize")
    auth = gw.authorize(request(p, decline))
    if not auth.approved:
        p = declined(p, auth.decline_code, auth.decline_reason, "initiated", auth.gateway_reference, now)
        return p, ev.failed(p, now)
    p = msgspec.structs.replace(p, state=PaymentState.authorized.value, authorization_code=auth.authorization_code,
                                gateway_reference=auth.gateway_reference, authorized_at=now)
    return p, ev.authorized(p, now)


def capture(p: Payment, gw: Gateway, now: datetime, *, decline: str | None = None) -> Step:
    """``captured`` + PaymentCaptured, or ``failed`` + PaymentFailed (failedStage ``authorized``)."""
    check(p, "capture")
    assert p.gateway_reference is not None
    auth = Authorization(approved=True, gateway_reference=p.gateway_reference, authorization_code=p.authorization_code)
    cap = gw.capture(request(p, decline), auth)
    if not cap.captured:
        p = declined(p, cap.failure_code, cap.failure_reason, "authorized", cap.gateway_reference, now)
        return p, ev.failed(p, now)
    p = msgspec.structs.replace(p, state=PaymentState.captured.value, capture_id=cap.capture_id, captured_at=now)
    return p, ev.captured(p, now)


def complete(p: Payment, now: datetime) -> Step:
    """``processed`` with a new transactionId + PaymentProcessed."""
    check(p, "complete")
    p = msgspec.structs.replace(p, state=PaymentState.processed.value, transaction_id=new_id("txn"),
                                processed_at=now)
    return p, ev.processed(p, now)


def fail(p: Payment, code: str, reason: str, now: datetime) -> Step:
    """``failed`` from any open state with the caller's code and reason + PaymentFailed."""
    check(p, "fail")
    p = declined(p, code, reason, p.state, p.gateway_reference, now)
    return p, ev.failed(p, now)
