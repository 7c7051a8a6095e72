"""Invoices: create (idempotent) and reads."""

from __future__ import annotations

from datetime import date

from fastapi import APIRouter
from fastapi.responses import Response

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
    page_of_list,
)
from payevents.faces.web.errors import READ_ERRORS, WRITE_ERRORS
from payevents.services import invoices

router = APIRouter(tags=["invoices"], responses=READ_ERRORS)


class CreateInvoice(Body):
    customer_id: str
    amount_due: Amount
    currency: str
    due_date: date
    invoice_id: str | None = None
    description: str | None = None


@router.post("/api/invoices", status_code=201, dependencies=[Write], responses=WRITE_ERRORS)
def create_invoice(settings: Cfg, body: CreateInvoice, idempotency_key: IdemKey = None) -> Response:
    key = idempotency.resolve_key(idempotency_key, body.invoice_id, "invoices")
    # no id chosen: one derived from the key, so a retry after a crash finds the same invoice
    invoice_id = body.invoice_id or idempotency.derived_id("INV-", "invoices", key)
    return created(settings, "invoices", key, body, lambda: invoices.create(
        settings, customer_id=body.customer_id, amount_due=body.amount_due, currency=body.currency,
        due_date=body.due_date, invoice_id=invoice_id, description=body.description))


@router.get("/api/invoices")
def list_invoices(settings: Cfg, status: str | None = None, customer_id: str | None = None, limit: Limit = 100,
                  starting_after: StartingAfter = None) -> Response:
    """Invoices, oldest first (a page)."""
    return page(lambda n, after: invoices.list_invoices(settings, status=status, customer_id=customer_id, limit=n,
                                                        starting_after=after),
                limit, starting_after, lambda i: i.invoice_id)


@router.get("/api/invoices/unapplied")
def unapplied_payments(settings: Cfg, limit: Limit = 100, starting_after: StartingAfter = None) -> Response:
    """Payments not applied to an invoice (waiting for it, or held), oldest first (a page)."""
    return page_of_list(invoices.unapplied(settings), limit, starting_after, lambda p: p.event_id)


@router.get("/api/invoices/{invoice_id}")
def show_invoice(settings: Cfg, invoice_id: str) -> Response:
    return json_response(invoices.show(settings, invoice_id))
