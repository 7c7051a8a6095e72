"""Customers (the notifications service's directory): add (idempotent) and reads."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from payevents.faces.web import idempotency
from payevents.faces.web.common import Body, Cfg, IdemKey, Limit, StartingAfter, Write, created, json_response, page
from payevents.faces.web.errors import READ_ERRORS, WRITE_ERRORS
from payevents.services import notifications

router = APIRouter(tags=["customers"], responses=READ_ERRORS)


class AddCustomer(Body):
    customer_id: str
    name: str
    email: str | None = None
    locale: str = "en_US"


@router.post("/api/customers", status_code=201, dependencies=[Write], responses=WRITE_ERRORS)
def add_customer(settings: Cfg, body: AddCustomer, idempotency_key: IdemKey = None) -> Response:
    key = idempotency.resolve_key(idempotency_key, body.customer_id, "customers")
    return created(settings, "customers", key, body, lambda: notifications.add_customer(
        settings, body.customer_id, body.name, body.email, body.locale))


@router.get("/api/customers")
def list_customers(settings: Cfg, limit: Limit = 100, starting_after: StartingAfter = None) -> Response:
    """Customers by id (a page)."""
    return page(lambda n, after: notifications.list_customers(settings, n, starting_after=after),
                limit, starting_after, lambda c: c.customer_id)


@router.get("/api/customers/{customer_id}")
def show_customer(settings: Cfg, customer_id: str) -> Response:
    return json_response(notifications.get_customer(settings, customer_id))
