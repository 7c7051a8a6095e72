"""Analytics handlers: every lifecycle event becomes one fact row (replay-safe by eventId) and
updates its payment's timestamps (first write wins, so a replay changes nothing).

:func:`handle_batch` is the runtime's per-batch fast path with the same effects: one driver-level
executemany for the facts, and the batch's payment updates merged in memory into one upsert per payment.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import Any

import sqlalchemy as sa
from msgspec import UNSET
from sqlalchemy.engine import Connection

from payevents.contracts.codec import DecodedEvent
from payevents.runtime import bulk
from payevents.services.analytics.money import to_minor
from payevents.store.sql import mark as sql_mark
from payevents.store.sql import pg_array
from payevents.transport.base import Message

#: eventType -> (the data field with the business time, the per-payment timestamp column)
TIME_FIELDS: dict[str, tuple[str, str]] = {
    "PaymentInitiated": ("initiatedAt", "initiated_ms"),
    "PaymentAuthorized": ("authorizedAt", "authorized_ms"),
    "PaymentCaptured": ("capturedAt", "captured_ms"),
    "PaymentProcessed": ("processedAt", "processed_ms"),
    "PaymentFailed": ("failedAt", "failed_ms"),
}

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_INSERT_FACT = sa.text(
    "INSERT INTO analytics_events (event_id, event_type, payment_id, occurred_ms, day, month, currency,"
    " amount_minor, method_type, merchant_id, failure_code, failed_stage, legacy)"
    " VALUES (:event_id, :event_type, :payment_id, :occurred_ms, :day, :month, :currency,"
    " :amount_minor, :method_type, :merchant_id, :failure_code, :failed_stage, :legacy)"
    " ON CONFLICT (event_id) DO NOTHING"
)


def _upsert_payment(column: str) -> sa.TextClause:
    return sa.text(
        f"INSERT INTO analytics_payments (payment_id, currency, method_type, merchant_id, {column})"
        " VALUES (:payment_id, :currency, :method_type, :merchant_id, :at)"
        " ON CONFLICT (payment_id) DO UPDATE SET"
        " currency = COALESCE(analytics_payments.currency, excluded.currency),"
        " method_type = COALESCE(analytics_payments.method_type, excluded.method_type),"
        " merchant_id = COALESCE(analytics_payments.merchant_id, excluded.merchant_id),"
        f" {column} = COALESCE(analytics_payments.{column}, excluded.{column})"
    )


_UPSERT_PAYMENT = {event_type: _upsert_payment(column) for event_type, (_f, column) in TIME_FIELDS.items()}


def _opt(value: Any) -> Any:
    return None if value is UNSET else value


def fact_of(decoded: DecodedEvent) -> dict[str, Any]:
    """The fact row of one event (plain values; amounts in integer minor units)."""
    event = decoded.event
    data: Any = event.data
    time_field, _column = TIME_FIELDS[event.eventType]
    at: datetime = getattr(data, time_field).astimezone(UTC)
    method = getattr(data, "paymentMethod", None)
    merchant = _opt(getattr(data, "merchantId", UNSET)) or decoded.extras.get("merchantId")
    day = at.date().isoformat()  # YYYY-MM-DD (UTC)
    return {
        "event_id": event.eventId,
        "event_type": event.eventType,
        "payment_id": data.paymentId,
        "occurred_ms": (at - EPOCH) // timedelta(milliseconds=1),
        "day": day,
        "month": day[:7],
        "currency": data.amount.currency,
        "amount_minor": to_minor(data.amount.value, data.amount.currency),
        "method_type": method.type.lower() if method is not None else None,
        "merchant_id": str(merchant) if merchant else None,
        "failure_code": getattr(data, "failureCode", None),
        "failed_stage": getattr(data, "failedStage", None),
        "legacy": 1 if decoded.legacy else 0,
    }


def apply_facts(conn: Connection, facts: list[dict[str, Any]]) -> None:
    """Write facts (and their payments' timestamps) through ``conn``; facts already seen add nothing."""
    if not facts:
        return
    conn.execute(_INSERT_FACT, facts)
    by_type: dict[str, list[dict[str, Any]]] = {}
    for f in facts:
        by_type.setdefault(f["event_type"], []).append(
            {
                "payment_id": f["payment_id"],
                "currency": f["currency"],
                "method_type": f["method_type"],
                "merchant_id": f["merchant_id"],
                "at": f["occurred_ms"],
            }
        )
    for event_type, rows in by_type.items():
        conn.execute(_UPSERT_PAYMENT[event_type], rows)


def fact_history(conn: Connection) -> Iterator[tuple[str, str, str, dict[str, Any]]]:
    """The events counted before the one-fact rule existed (runtime.facts): the first per payment and type."""
    from payevents.runtime.facts import content_from
    from payevents.services.analytics.money import from_minor

    for r in conn.exec_driver_sql("SELECT payment_id, event_type, event_id, amount_minor, currency, failure_code,"
                                  " failed_stage FROM analytics_events ORDER BY occurred_ms, event_id"):
        fields = {"failureCode": r[5], "failedStage": r[6]} if r[1] == "PaymentFailed" else {}
        yield r[0], r[1], r[2], content_from(from_minor(int(r[3]), r[4]), r[4], **fields)


def handle_event(conn: Connection, decoded: DecodedEvent, message: Message) -> None:
    """The analytics handler for every lifecycle event type."""
    apply_facts(conn, [fact_of(decoded)])


FACT_COLUMNS = ("event_id", "event_type", "payment_id", "occurred_ms", "day", "month", "currency", "amount_minor",
                "method_type", "merchant_id", "failure_code", "failed_stage", "legacy")
_fact_tuple = itemgetter(*FACT_COLUMNS)
_FACT_DRIVER_SQL = (f"INSERT INTO analytics_events ({', '.join(FACT_COLUMNS)}) VALUES ({{}})"
                    " ON CONFLICT (event_id) DO NOTHING")
TIME_COLUMNS = tuple(column for _f, column in TIME_FIELDS.values())
#: eventType -> the index of its timestamp column in a merged payment row
_TIME_INDEX = {event_type: 4 + i for i, event_type in enumerate(TIME_FIELDS)}
PAYMENT_COLUMNS = ("payment_id", "currency", "method_type", "merchant_id", *TIME_COLUMNS)
_PAYMENT_DRIVER_SQL = (
    f"INSERT INTO analytics_payments ({', '.join(PAYMENT_COLUMNS)}) VALUES ({{}})"
    " ON CONFLICT (payment_id) DO UPDATE SET "
    + ", ".join(f"{c} = COALESCE(analytics_payments.{c}, excluded.{c})" for c in PAYMENT_COLUMNS[1:])
)

#: the same upsert, all rows in one statement (PostgreSQL): one array per column
_PAYMENT_UNNEST_SQL = (
    f"INSERT INTO analytics_payments ({', '.join(PAYMENT_COLUMNS)}) SELECT * FROM unnest("
    "%s::varchar[], %s::char(3)[], %s::varchar[], %s::varchar[], %s::bigint[], %s::bigint[], %s::bigint[],"
    " %s::bigint[], %s::bigint[])"
    + _PAYMENT_DRIVER_SQL[_PAYMENT_DRIVER_SQL.index(" ON CONFLICT"):]
)


def _driver_sql(conn: Connection, template: str, columns: int) -> str:
    return template.format(", ".join([sql_mark(conn)] * columns))


def merge_payments(facts: Sequence[dict[str, Any]]) -> list[list[Any]]:
    """One analytics_payments row per payment of ``facts`` (in payment order): each column the first
    non-null value in offset order — what the per-event upserts (``COALESCE``, first write wins) leave."""
    merged: dict[str, list[Any]] = {}
    for f in facts:
        row = merged.get(f["payment_id"])
        column = _TIME_INDEX[f["event_type"]]
        if row is None:
            row = merged[f["payment_id"]] = [f["payment_id"], f["currency"], f["method_type"], f["merchant_id"],
                                             None, None, None, None, None]
        else:
            if row[1] is None:
                row[1] = f["currency"]
            if row[2] is None:
                row[2] = f["method_type"]
            if row[3] is None:
                row[3] = f["merchant_id"]
        if row[column] is None:
            row[column] = f["occurred_ms"]
    return [merged[k] for k in sorted(merged)]  # a stable lock order for concurrent writers (PostgreSQL)


def handle_batch(conn: Connection, batch: Sequence[tuple[DecodedEvent, Message]]) -> None:
    """The batch handler: the effects of :func:`handle_event` on each event in order, in two statements."""
    facts = [fact_of(decoded) for decoded, _m in batch]
    if not facts:
        return
    # PostgreSQL: one COPY (ON CONFLICT (event_id) DO NOTHING kept by runtime.bulk's fallback) and one
    # upsert over arrays instead of a statement per row; SQLite: driver-level executemany
    bulk.copy_rows(conn, "analytics_events", FACT_COLUMNS, [_fact_tuple(f) for f in facts], or_ignore="event_id")
    payments = merge_payments(facts)
    if bulk.is_postgresql(conn):
        # each column as one array literal (store.sql.pg_array: psycopg dumps a list element by element)
        conn.exec_driver_sql(_PAYMENT_UNNEST_SQL, tuple(pg_array(column) for column in zip(*payments, strict=True)))
    else:
        conn.exec_driver_sql(_driver_sql(conn, _PAYMENT_DRIVER_SQL, len(PAYMENT_COLUMNS)),
                             [tuple(r) for r in payments])
