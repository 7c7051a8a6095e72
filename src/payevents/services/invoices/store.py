"""The Invoices store: invoices, the payments applied to them, and customer credits.

The database holds the rules too: an invoice's status always matches its paid amount
(Open: nothing paid; Partially Paid: 0 < paid < due; Paid: paid = due), paid never exceeds the
amount due and never decreases, an applied payment is split exactly into applied + credit, a
payment (and an event) counts at most once, and nothing is deleted.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy.engine import Engine

from payevents.settings import Settings
from payevents.store.db import Migration, connect

SERVICE: Final = "invoices"

_TABLES: Final = [
    """CREATE TABLE invoices (
        invoice_id VARCHAR(255) PRIMARY KEY,
        customer_id VARCHAR(255) NOT NULL,
        amount_due_minor BIGINT NOT NULL CHECK (amount_due_minor > 0),
        currency CHAR(3) NOT NULL CHECK (length(currency) = 3),
        due_date VARCHAR(10) NOT NULL,
        description TEXT,
        paid_minor BIGINT NOT NULL DEFAULT 0 CHECK (paid_minor >= 0 AND paid_minor <= amount_due_minor),
        status VARCHAR(16) NOT NULL CHECK (status IN ('Open', 'Partially Paid', 'Paid')),
        created_at VARCHAR(40) NOT NULL,
        updated_at VARCHAR(40) NOT NULL,
        CHECK ((status = 'Open' AND paid_minor = 0)
               OR (status = 'Partially Paid' AND paid_minor > 0 AND paid_minor < amount_due_minor)
               OR (status = 'Paid' AND paid_minor = amount_due_minor))
    )""",
    "CREATE INDEX ix_invoices_status ON invoices (status)",
    "CREATE INDEX ix_invoices_customer ON invoices (customer_id)",
    """CREATE TABLE invoice_payments (
        event_id VARCHAR(128) PRIMARY KEY,
        payment_id VARCHAR(255) NOT NULL UNIQUE,
        invoice_id VARCHAR(255) NOT NULL,
        customer_id VARCHAR(255),
        amount_minor BIGINT NOT NULL CHECK (amount_minor > 0),
        currency CHAR(3) NOT NULL CHECK (length(currency) = 3),
        status VARCHAR(16) NOT NULL CHECK (status IN ('applied', 'unapplied', 'held')),
        applied_minor BIGINT NOT NULL DEFAULT 0 CHECK (applied_minor >= 0),
        credit_minor BIGINT NOT NULL DEFAULT 0 CHECK (credit_minor >= 0),
        reason TEXT,
        processed_at VARCHAR(40) NOT NULL,
        received_at VARCHAR(40) NOT NULL,
        applied_at VARCHAR(40),
        CHECK (status <> 'applied' OR (applied_minor + credit_minor = amount_minor AND applied_at IS NOT NULL)),
        CHECK (status = 'applied' OR (applied_minor = 0 AND credit_minor = 0)),
        CHECK (status = 'applied' OR reason IS NOT NULL)
    )""",
    "CREATE INDEX ix_invoice_payments_invoice ON invoice_payments (invoice_id, status)",
    """CREATE TABLE customer_credits (
        credit_id VARCHAR(64) PRIMARY KEY,
        customer_id VARCHAR(255) NOT NULL,
        currency CHAR(3) NOT NULL CHECK (length(currency) = 3),
        amount_minor BIGINT NOT NULL CHECK (amount_minor > 0),
        source_event_id VARCHAR(128) NOT NULL UNIQUE REFERENCES invoice_payments (event_id),
        payment_id VARCHAR(255) NOT NULL,
        invoice_id VARCHAR(255) NOT NULL,
        created_at VARCHAR(40) NOT NULL
    )""",
    "CREATE INDEX ix_customer_credits_customer ON customer_credits (customer_id, currency)",
]

_SQLITE_TRIGGERS: Final = [
    """CREATE TRIGGER invoices_guard BEFORE UPDATE ON invoices
        WHEN NEW.paid_minor < OLD.paid_minor OR NEW.amount_due_minor <> OLD.amount_due_minor
             OR NEW.currency <> OLD.currency OR NEW.customer_id <> OLD.customer_id OR NEW.invoice_id <> OLD.invoice_id
        BEGIN SELECT RAISE(ABORT, 'invoices: paid never decreases; amount, currency and customer are fixed'); END""",
    """CREATE TRIGGER invoice_payments_guard BEFORE UPDATE ON invoice_payments
        WHEN OLD.status <> 'unapplied' OR NEW.amount_minor <> OLD.amount_minor OR NEW.currency <> OLD.currency
             OR NEW.event_id <> OLD.event_id OR NEW.payment_id <> OLD.payment_id OR NEW.invoice_id <> OLD.invoice_id
        BEGIN SELECT RAISE(ABORT, 'invoice_payments: only an unapplied payment may be applied or held, once'); END""",
    *[
        f"""CREATE TRIGGER {t}_no_delete BEFORE DELETE ON {t}
            BEGIN SELECT RAISE(ABORT, '{t}: DELETE refused'); END"""
        for t in ("invoices", "invoice_payments", "customer_credits")
    ],
    """CREATE TRIGGER customer_credits_no_update BEFORE UPDATE ON customer_credits
        BEGIN SELECT RAISE(ABORT, 'customer_credits: UPDATE refused'); END""",
]

_PG_TRIGGERS: Final = [
    """CREATE OR REPLACE FUNCTION invoices_guard() RETURNS trigger LANGUAGE plpgsql AS $fn$
        BEGIN
            IF NEW.paid_minor < OLD.paid_minor OR NEW.amount_due_minor <> OLD.amount_due_minor
               OR NEW.currency <> OLD.currency OR NEW.customer_id <> OLD.customer_id
               OR NEW.invoice_id <> OLD.invoice_id THEN
                RAISE EXCEPTION USING ERRCODE = 'restrict_violation',
                    MESSAGE = 'invoices: paid never decreases; amount, currency and customer are fixed';
            END IF;
            RETURN NEW;
        END $fn$""",
    """CREATE OR REPLACE FUNCTION invoice_payments_guard() RETURNS trigger LANGUAGE plpgsql AS $fn$
        BEGIN
            IF OLD.status <> 'unapplied' OR NEW.amount_minor <> OLD.amount_minor OR NEW.currency <> OLD.currency
               OR NEW.event_id <> OLD.event_id OR NEW.payment_id <> OLD.payment_id
               OR NEW.invoice_id <> OLD.invoice_id THEN
                RAISE EXCEPTION USING ERRCODE = 'restrict_violation',
                    MESSAGE = 'invoice_payments: only an unapplied payment may be applied or held, once';
            END IF;
            RETURN NEW;
        END $fn$""",
    """CREATE OR REPLACE FUNCTION invoices_refuse() RETURNS trigger LANGUAGE plpgsql AS $fn$
        BEGIN
            RAISE EXCEPTION USING ERRCODE = 'restrict_violation',
                MESSAGE = TG_TABLE_NAME || ': ' || TG_OP || ' refused';
        END $fn$""",
    "CREATE TRIGGER invoices_guard BEFORE UPDATE ON invoices FOR EACH ROW EXECUTE FUNCTION invoices_guard()",
    """CREATE TRIGGER invoice_payments_guard BEFORE UPDATE ON invoice_payments
        FOR EACH ROW EXECUTE FUNCTION invoice_payments_guard()""",
    *[
        f"CREATE TRIGGER {t}_no_delete BEFORE DELETE ON {t} FOR EACH ROW EXECUTE FUNCTION invoices_refuse()"
        for t in ("invoices", "invoice_payments", "customer_credits")
    ],
    """CREATE TRIGGER customer_credits_no_update BEFORE UPDATE ON customer_credits
        FOR EACH ROW EXECUTE FUNCTION invoices_refuse()""",
]

MIGRATIONS: Final[list[Migration]] = [
    Migration(1, "invoices, applied payments, customer credits", both=_TABLES),
    Migration(2, "invoice guards", sqlite=_SQLITE_TRIGGERS, postgresql=_PG_TRIGGERS),
]

def engine(settings: Settings) -> Engine:
    """The invoices database, migrated once per engine per process."""
    return connect(settings, SERVICE, MIGRATIONS)
