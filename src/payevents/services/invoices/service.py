"""Invoices as a consumer of payments.{env}.events."""

from __future__ import annotations

from payevents.runtime.service import ServiceDef
from payevents.services.invoices.core import fact_history, on_payment_processed, on_payment_processed_batch
from payevents.services.invoices.store import MIGRATIONS

SERVICE = ServiceDef(
    name="invoices",
    description="Invoices paid by PaymentProcessed events: Open → Partially Paid → Paid, overpayments as credit.",
    migrations=MIGRATIONS,
    handlers={"PaymentProcessed": on_payment_processed},
    batch_handler=on_payment_processed_batch,
    fact_history=fact_history,
    downstream_action="Updates invoice status to “Paid” or “Partially Paid”",
)
