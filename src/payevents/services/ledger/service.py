"""The Ledger as a consumer of payments.{env}.events."""

from __future__ import annotations

from payevents.runtime.service import ServiceDef
from payevents.services.ledger.journal import fact_history, on_payment_processed, on_payment_processed_batch
from payevents.services.ledger.store import MIGRATIONS

SERVICE = ServiceDef(
    name="ledger",
    description="Double-entry journal in integer minor units: one balanced entry per processed payment.",
    migrations=MIGRATIONS,
    handlers={"PaymentProcessed": on_payment_processed},
    batch_handler=on_payment_processed_batch,
    fact_history=fact_history,
    # seen marks, facts, accounts (ON CONFLICT DO NOTHING), lines and entries: copied rows, each guarded by a key
    # (one entry per event and per payment)
    insert_only=True,
    downstream_action="Creates journal entries (debit Cash, credit Accounts Receivable)",
)
