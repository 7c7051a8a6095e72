"""Invoices: "updates invoice status to Paid or Partially Paid"."""

from __future__ import annotations

from payevents.services.invoices.core import (
    PAYMENT_STATUSES,
    STATUSES,
    CustomerCredit,
    Invoice,
    InvoiceDetail,
    InvoicePayment,
    InvoiceProblem,
    check,
    create,
    credits,
    list_invoices,
    on_payment_processed,
    parse_status,
    show,
    unapplied,
)
from payevents.services.invoices.store import MIGRATIONS

__all__ = [
    "MIGRATIONS",
    "PAYMENT_STATUSES",
    "STATUSES",
    "CustomerCredit",
    "Invoice",
    "InvoiceDetail",
    "InvoicePayment",
    "InvoiceProblem",
    "check",
    "create",
    "credits",
    "list_invoices",
    "on_payment_processed",
    "parse_status",
    "show",
    "unapplied",
]
