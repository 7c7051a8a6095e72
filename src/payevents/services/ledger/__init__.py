"""Ledger: "creates journal entries (debit Cash, credit Accounts Receivable)".

Double entry in integer minor units with the currency on every line, accounts per currency, an
append-only journal whose invariants hold in code and in the database.
"""

from __future__ import annotations

from payevents.services.ledger.journal import (
    ACCOUNTS,
    AccountBalance,
    CurrencyBalance,
    JournalEntry,
    JournalLine,
    Line,
    TrialBalance,
    VerifyReport,
    Violation,
    balances,
    journal,
    on_payment_processed,
    post,
    reverse,
    verify,
)
from payevents.services.ledger.store import MIGRATIONS

__all__ = [
    "ACCOUNTS",
    "MIGRATIONS",
    "AccountBalance",
    "CurrencyBalance",
    "JournalEntry",
    "JournalLine",
    "Line",
    "TrialBalance",
    "VerifyReport",
    "Violation",
    "balances",
    "journal",
    "on_payment_processed",
    "post",
    "reverse",
    "verify",
]
