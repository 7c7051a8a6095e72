"""The customer directory: customerId -> name, e-mail, locale."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from babel import Locale, UnknownLocaleError

from payevents.contracts.cardguard import check_free_text, safe_repr
from payevents.contracts.events import MAX_ID_LENGTH
from payevents.errors import ContractError, NotFound
from payevents.services.notifications.store import engine
from payevents.settings import Settings
from payevents.store.paging import after_clause

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
EMAIL_RE = re.compile(rf"^[^@\s<>\"',;]+@{_LABEL}(?:\.{_LABEL})+$")


@dataclasses.dataclass(frozen=True, slots=True)
class Customer:
    customer_id: str
    name: str
    email: str | None
    locale: str
    created_at: str
    updated_at: str


def normalize_locale(locale: str) -> str:
    """A babel locale identifier (``de-DE`` -> ``de_DE``); an unknown locale is a ContractError."""
    try:
        return str(Locale.parse(locale.strip().replace("-", "_")))
    except (UnknownLocaleError, ValueError, TypeError):
        raise ContractError(f"locale: {safe_repr(locale)} is not a known locale (e.g. en_US, de_DE, ja_JP)") from None


def _check(customer_id: str, name: str, email: str | None) -> None:
    if not customer_id.strip():
        raise ContractError("customerId: must not be empty")
    if not name.strip():
        raise ContractError("name: must not be empty")
    for field, text, width in (("customerId", customer_id, MAX_ID_LENGTH), ("name", name, 255), ("email", email, 320)):
        check_free_text(field, text, width)  # the column's width; no NUL, no card number in the directory or a log
    if email is not None and not EMAIL_RE.match(email):
        raise ContractError(f"email: {safe_repr(email)} is not an e-mail address")
    if email is not None and not email.isascii():
        # the confirmations are 7-bit messages sent without SMTPUTF8 (render.message_bytes): such an address would
        # be accepted here and then fail every payment's confirmation as unrenderable
        raise ContractError(f"email: {safe_repr(email)} is not ASCII; internationalized addresses cannot be sent to")


def add_customer(
    settings: Settings, customer_id: str, name: str, email: str | None = None, locale: str = "en_US"
) -> Customer:
    """Add a customer, or update the name, e-mail and locale of an existing one. Returns the stored customer."""
    email = email.strip() if email and email.strip() else None
    _check(customer_id, name, email)
    loc = normalize_locale(locale)
    now = datetime.now(UTC).isoformat()
    with engine(settings).begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO customers (customer_id, name, email, locale, created_at, updated_at)"
                " VALUES (:id, :name, :email, :locale, :now, :now)"
                " ON CONFLICT (customer_id) DO UPDATE SET name = excluded.name, email = excluded.email,"
                " locale = excluded.locale, updated_at = excluded.updated_at"
            ),
            {"id": customer_id, "name": name.strip(), "email": email, "locale": loc, "now": now},
        )
    return get_customer(settings, customer_id)


def _row(r: sa.Row) -> Customer:  # type: ignore[type-arg]
    return Customer(customer_id=r.customer_id, name=r.name, email=r.email, locale=r.locale,
                    created_at=r.created_at, updated_at=r.updated_at)


def get_customer(settings: Settings, customer_id: str) -> Customer:
    """One customer; NotFound if the directory does not have it."""
    with engine(settings).connect() as conn:
        r = conn.execute(sa.text("SELECT * FROM customers WHERE customer_id = :id"), {"id": customer_id}).first()
    if r is None:
        raise NotFound(f"customerId: no customer {safe_repr(customer_id)} in the directory")
    return _row(r)


def list_customers(settings: Settings, limit: int | None = None, *, starting_after: str | None = None
                   ) -> list[Customer]:
    """Customers ordered by id; ``starting_after``: those after that customer id (keyset paging)."""
    with engine(settings).connect() as conn:
        sql = "SELECT * FROM customers"
        params: dict[str, Any] = {}
        if starting_after is not None:
            clause, params = after_clause(conn, "customers", "customer_id", "customer_id", descending=False,
                                          starting_after=starting_after)
            sql += f" WHERE {clause}"
        sql += " ORDER BY customer_id"
        if limit is not None:
            sql += " LIMIT :limit"
            params["limit"] = limit
        return [_row(r) for r in conn.execute(sa.text(sql), params)]
