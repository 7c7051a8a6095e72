"""Payments: create (idempotent), the lifecycle commands, reads."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import Field

from payevents.faces.web import idempotency
from payevents.faces.web.common import (
    Amount,
    Body,
    Cfg,
    IdemKey,
    Limit,
    StartingAfter,
    Write,
    created,
    json_response,
    page,
)
from payevents.faces.web.errors import READ_ERRORS, WRITE_ERRORS
from payevents.runtime.outbox import retry_serialization
from payevents.services import payments

router = APIRouter(tags=["payments"], responses=READ_ERRORS)


class CreatePayment(Body):
    customer_id: str
    amount: Amount
    currency: str
    description: str
    method_type: str = "credit_card"
    last4: str = "4242"
    invoice_id: str | None = None
    order_id: str | None = None
    merchant_id: str | None = None
    payment_id: str | None = None


class AuthorizePayment(Body):
    decline: str | None = Field(default=None, description="ask the simulated gateway to decline with this code")


class FailPayment(Body):
    code: str
    reason: str


@router.post("/api/payments", status_code=201, dependencies=[Write], responses=WRITE_ERRORS)
def create_payment(settings: Cfg, body: CreatePayment, idempotency_key: IdemKey = None) -> Response:
    key = idempotency.resolve_key(idempotency_key, body.payment_id, "payments")
    return created(settings, "payments", key, body, lambda: payments.create(
        settings, customer_id=body.customer_id, amount=body.amount, currency=body.currency,
        description=body.description, method_type=body.method_type, last4=body.last4,
        invoice_id=body.invoice_id, order_id=body.order_id, merchant_id=body.merchant_id,
        payment_id=body.payment_id, idempotency_key=key))


@router.post("/api/payments/{payment_id}/authorize", dependencies=[Write], responses=WRITE_ERRORS)
def authorize_payment(settings: Cfg, payment_id: str, body: AuthorizePayment | None = None,
                      idempotency_key: IdemKey = None) -> Response:
    decline = body.decline if body else None
    return json_response(retry_serialization(lambda: payments.authorize(
        settings, payment_id, idempotency_key=idempotency_key, decline=decline)))


@router.post("/api/payments/{payment_id}/capture", dependencies=[Write], responses=WRITE_ERRORS)
def capture_payment(settings: Cfg, payment_id: str, idempotency_key: IdemKey = None) -> Response:
    return json_response(retry_serialization(lambda: payments.capture(
        settings, payment_id, idempotency_key=idempotency_key)))


@router.post("/api/payments/{payment_id}/complete", dependencies=[Write], responses=WRITE_ERRORS)
def complete_payment(settings: Cfg, payment_id: str, idempotency_key: IdemKey = None) -> Response:
    return json_response(retry_serialization(lambda: payments.complete(
        settings, payment_id, idempotency_key=idempotency_key)))


@router.post("/api/payments/{payment_id}/fail", dependencies=[Write], responses=WRITE_ERRORS)
def fail_payment(settings: Cfg, payment_id: str, body: FailPayment, idempotency_key: IdemKey = None) -> Response:
    return json_response(retry_serialization(lambda: payments.fail(
        settings, payment_id, code=body.code, reason=body.reason, idempotency_key=idempotency_key)))


@router.get("/api/payments")
def list_payments(settings: Cfg, state: str | None = None, customer_id: str | None = None, limit: Limit = 100,
                  starting_after: StartingAfter = None) -> Response:
    """Payments, newest first (a page: ``data``, ``has_more``, ``next_cursor``)."""
    return page(lambda n, after: payments.list_payments(settings, state=state, customer_id=customer_id, limit=n,
                                                        starting_after=after),
                limit, starting_after, lambda p: p.payment_id)


@router.get("/api/payments/{payment_id}")
def show_payment(settings: Cfg, payment_id: str) -> Response:
    return json_response(payments.show(settings, payment_id))


@router.get("/api/payments/{payment_id}/timeline")
def payment_timeline(settings: Cfg, payment_id: str) -> Response:
    payments.show(settings, payment_id)  # 404 for an unknown payment
    return json_response(payments.timeline(settings, payment_id))
