"""The Payments store: its tables (after the outbox's), row mapping, and the engine.

Versions 1..99 are the outbox's (:data:`payevents.runtime.outbox.OUTBOX_MIGRATIONS`); the
payments tables start at 100. The database refuses a change to a final payment (processed or
failed) and a payment whose recorded fields contradict its state.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from payevents.contracts.money import from_minor
from payevents.runtime import bulk
from payevents.runtime.outbox import OUTBOX_MIGRATIONS
from payevents.services.payments.models import Payment
from payevents.settings import Settings
from payevents.store.db import Migration, connect, dialect, writer
from payevents.store.sql import rows_in_chunks

SERVICE: Final = "payments"

_PAYMENTS_TABLE: Final = """CREATE TABLE payments (
    payment_id VARCHAR(255) PRIMARY KEY,
    correlation_id VARCHAR(255) NOT NULL,
    customer_id VARCHAR(255) NOT NULL,
    merchant_id VARCHAR(255),
    amount_minor BIGINT NOT NULL CHECK (amount_minor > 0),
    currency CHAR(3) NOT NULL CHECK (length(currency) = 3),
    method_type VARCHAR(64) NOT NULL,
    last4 CHAR(4) NOT NULL CHECK (length(last4) = 4),
    description TEXT NOT NULL CHECK (length(description) > 0),
    invoice_id VARCHAR(255),
    order_id VARCHAR(255),
    state VARCHAR(16) NOT NULL CHECK (state IN ('initiated', 'authorized', 'captured', 'processed', 'failed')),
    authorization_code VARCHAR(64),
    capture_id VARCHAR(64),
    gateway_reference VARCHAR(255),
    transaction_id VARCHAR(255),
    failure_code VARCHAR(64),
    failure_reason TEXT,
    failed_stage VARCHAR(16) CHECK (failed_stage IS NULL OR failed_stage IN ('initiated', 'authorized', 'captured')),
    created_at VARCHAR(40) NOT NULL,
    authorized_at VARCHAR(40),
    captured_at VARCHAR(40),
    processed_at VARCHAR(40),
    failed_at VARCHAR(40),
    updated_at VARCHAR(40) NOT NULL,
    CHECK (state <> 'authorized' OR authorization_code IS NOT NULL),
    CHECK (state <> 'captured' OR (authorization_code IS NOT NULL AND capture_id IS NOT NULL)),
    CHECK (state <> 'processed' OR (authorization_code IS NOT NULL AND capture_id IS NOT NULL
                                    AND transaction_id IS NOT NULL AND processed_at IS NOT NULL)),
    CHECK (state <> 'failed' OR (failure_code IS NOT NULL AND failure_reason IS NOT NULL
                                 AND failed_stage IS NOT NULL AND failed_at IS NOT NULL))
)"""

_COMMANDS_TABLE: Final = """CREATE TABLE payment_commands (
    idempotency_key VARCHAR(255) PRIMARY KEY,
    command VARCHAR(32) NOT NULL,
    fingerprint CHAR(64) NOT NULL,
    command_id VARCHAR(64) NOT NULL,
    payment_id VARCHAR(255),
    result TEXT,
    created_at VARCHAR(40) NOT NULL
)"""

FINAL_MESSAGE: Final = "payments: a processed or failed payment is final"

PAYMENTS_MIGRATIONS: Final[list[Migration]] = [
    Migration(
        100,
        "payments and idempotent command results",
        both=[
            _PAYMENTS_TABLE,
            "CREATE INDEX ix_payments_customer ON payments (customer_id)",
            "CREATE INDEX ix_payments_state ON payments (state)",
            "CREATE INDEX ix_payments_invoice ON payments (invoice_id)",
            _COMMANDS_TABLE,
        ],
    ),
    Migration(
        101,
        "final payments are immutable",
        sqlite=[
            f"""CREATE TRIGGER payments_final BEFORE UPDATE ON payments
                WHEN OLD.state IN ('processed', 'failed')
                BEGIN SELECT RAISE(ABORT, '{FINAL_MESSAGE}'); END""",
            """CREATE TRIGGER payments_no_delete BEFORE DELETE ON payments
                BEGIN SELECT RAISE(ABORT, 'payments: DELETE refused'); END""",
        ],
        postgresql=[
            f"""CREATE OR REPLACE FUNCTION payments_guard() RETURNS trigger LANGUAGE plpgsql AS $fn$
                BEGIN
                    IF TG_OP = 'DELETE' THEN
                        RAISE EXCEPTION USING MESSAGE = 'payments: DELETE refused', ERRCODE = 'restrict_violation';
                    END IF;
                    IF OLD.state IN ('processed', 'failed') THEN
                        RAISE EXCEPTION USING MESSAGE = '{FINAL_MESSAGE}', ERRCODE = 'restrict_violation';
                    END IF;
                    RETURN NEW;
                END
                $fn$""",
            """CREATE TRIGGER payments_final BEFORE UPDATE OR DELETE ON payments
                FOR EACH ROW EXECUTE FUNCTION payments_guard()""",
        ],
    ),
]

#: everything the payments database needs, outbox first
MIGRATIONS: Final[list[Migration]] = [*OUTBOX_MIGRATIONS, *PAYMENTS_MIGRATIONS]

def engine(settings: Settings) -> Engine:
    """The payments database, migrated (migrations run once per engine per process)."""
    return connect(settings, SERVICE, MIGRATIONS)


def writer_engine(settings: Settings) -> Engine:
    """The payments database for a command's transaction: on SQLite it holds the write lock from its BEGIN (a
    read-then-write transaction could fail on a WAL snapshot upgrade when another writer, e.g. the relay,
    committed in between), taken as soon as it is free (``payevents.sqlitelock``: SQLite's own wait left the
    relay's marks waiting for seconds behind a busy writer)."""
    return writer(engine(settings))


COLUMNS: Final = (
    "payment_id", "correlation_id", "customer_id", "merchant_id", "amount_minor", "currency", "method_type",
    "last4", "description", "invoice_id", "order_id", "state", "authorization_code", "capture_id",
    "gateway_reference", "transaction_id", "failure_code", "failure_reason", "failed_stage", "created_at",
    "authorized_at", "captured_at", "processed_at", "failed_at", "updated_at",
)  # fmt: skip
_TIMES: Final = ("created_at", "authorized_at", "captured_at", "processed_at", "failed_at")

INSERT_PAYMENT: Final = sa.text(
    f"INSERT INTO payments ({', '.join(COLUMNS)}) VALUES ({', '.join(':' + c for c in COLUMNS)})"
)
_UPDATE_COLS: Final = [c for c in COLUMNS if c != "payment_id"]
UPDATE_PAYMENT: Final = sa.text(
    f"UPDATE payments SET {', '.join(f'{c} = :{c}' for c in _UPDATE_COLS)} WHERE payment_id = :payment_id"
)
_COMMAND_COLUMNS: Final = ("idempotency_key", "command", "fingerprint", "command_id", "payment_id", "result",
                           "created_at")


def to_tuple(p: Payment, updated_at: datetime) -> tuple[Any, ...]:
    """The payment's row as a tuple in :data:`COLUMNS` order (:func:`insert_payments`)."""
    return (
        p.payment_id, p.correlation_id, p.customer_id, p.merchant_id, p.amount_minor, p.currency, p.method_type,
        p.last4, p.description, p.invoice_id, p.order_id, p.state, p.authorization_code, p.capture_id,
        p.gateway_reference, p.transaction_id, p.failure_code, p.failure_reason, p.failed_stage, ts(p.created_at),
        ts(p.authorized_at), ts(p.captured_at), ts(p.processed_at), ts(p.failed_at), updated_at.isoformat(),
    )  # fmt: skip


def insert_payments(conn: Connection, rows: list[tuple[Any, ...]]) -> None:
    """INSERT many :func:`to_tuple` rows in one statement (``runtime.bulk.copy_rows``)."""
    bulk.copy_rows(conn, "payments", COLUMNS, rows)


def insert_commands(conn: Connection, rows: list[tuple[Any, ...]]) -> None:
    """INSERT many payment_commands rows (idempotency_key, command, fingerprint, command_id, payment_id, result,
    created_at) in one statement (``runtime.bulk.copy_rows``)."""
    bulk.copy_rows(conn, "payment_commands", _COMMAND_COLUMNS, rows)


def select_commands(conn: Connection, keys: list[str]) -> dict[str, Any]:
    """The stored commands of these idempotency keys (rows with idempotency_key, command, fingerprint,
    payment_id, result), by key."""
    sql = ("SELECT idempotency_key, command, fingerprint, payment_id, result FROM payment_commands"
           " WHERE idempotency_key IN ({})")
    return {r.idempotency_key: r for r in rows_in_chunks(conn, sql, keys)}


def ts(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _dt(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def to_row(p: Payment, updated_at: datetime) -> dict[str, Any]:
    row = {c: getattr(p, c, None) for c in COLUMNS if c != "updated_at"}
    for c in _TIMES:
        row[c] = ts(row[c])
    row["updated_at"] = updated_at.isoformat()
    return row


def from_row(row: Any, *, with_events: bool = True) -> Payment:
    m = row._mapping if hasattr(row, "_mapping") else row
    values = {c: m[c] for c in COLUMNS if c != "updated_at"}
    for c in _TIMES:
        values[c] = _dt(values[c])
    values["amount_minor"] = int(values["amount_minor"])
    p = Payment(amount=from_minor(values["amount_minor"], values["currency"]), **values)
    if with_events:
        from payevents.services.payments.events import event_refs

        p = Payment(**{**{f: getattr(p, f) for f in p.__struct_fields__}, "events": event_refs(p)})
    return p


def load(conn: Connection, payment_id: str, *, for_update: bool = False) -> Payment | None:
    sql = "SELECT * FROM payments WHERE payment_id = :pid"
    if for_update:
        sql = dialect(conn).for_update(sql)
    row = conn.execute(sa.text(sql), {"pid": payment_id}).first()
    return None if row is None else from_row(row)
