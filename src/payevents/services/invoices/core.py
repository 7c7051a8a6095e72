"""Invoices: creation, applying PaymentProcessed events, and the reads.

Open → Partially Paid → Paid. A payment larger than what is still due pays the invoice and the
excess becomes a customer credit (an invoice never has a negative balance). A payment for an
invoice not created yet waits as an unapplied payment and is applied when the invoice is created;
a payment in another currency than its invoice is held for review with the reason.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from payevents.contracts.cardguard import check_free_text, safe_repr
from payevents.contracts.codec import DecodedEvent
from payevents.contracts.events import PaymentProcessed
from payevents.errors import ContractError, IdempotencyConflict, NotFound, PoisonEvent
from payevents.services.invoices import store
from payevents.services.payments.money import from_minor, to_minor
from payevents.settings import Settings
from payevents.store.paging import after_clause
from payevents.store.sums import combine, exact_sum
from payevents.transport.base import Message

NAMESPACE: Final = uuid.uuid5(uuid.NAMESPACE_URL, "https://payevents.local/services/invoices/credits")
STATUSES: Final = ("Open", "Partially Paid", "Paid")
PAYMENT_STATUSES: Final = ("applied", "unapplied", "held")


class Invoice(msgspec.Struct, kw_only=True, frozen=True):
    invoice_id: str
    customer_id: str
    currency: str
    amount_due: Decimal
    amount_due_minor: int
    paid: Decimal
    paid_minor: int
    balance_due: Decimal
    balance_due_minor: int
    status: str
    due_date: date
    created_at: datetime
    updated_at: datetime
    description: str | None = None


class InvoicePayment(msgspec.Struct, kw_only=True, frozen=True):
    """A PaymentProcessed naming an invoice: applied (split into applied + credit), unapplied or held."""

    event_id: str
    payment_id: str
    invoice_id: str
    customer_id: str | None
    currency: str
    amount: Decimal
    amount_minor: int
    status: str
    applied_minor: int
    credit_minor: int
    processed_at: datetime
    received_at: datetime
    applied_at: datetime | None = None
    reason: str | None = None


class CustomerCredit(msgspec.Struct, kw_only=True, frozen=True):
    customer_id: str
    currency: str
    amount: Decimal
    amount_minor: int
    payments: int


class InvoiceDetail(msgspec.Struct, kw_only=True, frozen=True):
    invoice: Invoice
    payments: list[InvoicePayment]
    credit_minor: int


def _now() -> datetime:
    return datetime.now(UTC)


def status_for(paid_minor: int, due_minor: int) -> str:
    if paid_minor <= 0:
        return "Open"
    return "Paid" if paid_minor >= due_minor else "Partially Paid"


def parse_status(value: str) -> str:
    """'Paid', 'paid', 'partially-paid', 'Partially Paid', 'open' → the canonical status."""
    norm = value.strip().lower().replace("-", " ").replace("_", " ")
    for s in STATUSES:
        if s.lower() == norm:
            return s
    raise ContractError(f"status: {safe_repr(value)} is not one of {', '.join(STATUSES)}")


# -- rows ------------------------------------------------------------------------------------------------


def _invoice(r: Any) -> Invoice:
    due, paid, cur = int(r.amount_due_minor), int(r.paid_minor), r.currency
    return Invoice(invoice_id=r.invoice_id, customer_id=r.customer_id, currency=cur,
                   amount_due=from_minor(due, cur), amount_due_minor=due, paid=from_minor(paid, cur), paid_minor=paid,
                   balance_due=from_minor(due - paid, cur), balance_due_minor=due - paid, status=r.status,
                   due_date=date.fromisoformat(r.due_date), created_at=datetime.fromisoformat(r.created_at),
                   updated_at=datetime.fromisoformat(r.updated_at), description=r.description)  # fmt: skip


def _payment(r: Any) -> InvoicePayment:
    return InvoicePayment(event_id=r.event_id, payment_id=r.payment_id, invoice_id=r.invoice_id,
                          customer_id=r.customer_id, currency=r.currency,
                          amount=from_minor(int(r.amount_minor), r.currency), amount_minor=int(r.amount_minor),
                          status=r.status, applied_minor=int(r.applied_minor), credit_minor=int(r.credit_minor),
                          processed_at=datetime.fromisoformat(r.processed_at),
                          received_at=datetime.fromisoformat(r.received_at),
                          applied_at=None if r.applied_at is None else datetime.fromisoformat(r.applied_at),
                          reason=r.reason)  # fmt: skip


def _serialize(conn: Connection, invoice_id: str) -> None:
    """On PostgreSQL, serialize work on one invoice id (an invoice being created and a payment for it
    arriving at the same moment must not miss each other). SQLite serializes writers already."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": f"invoice:{invoice_id}"})


def _lock_invoice(conn: Connection, invoice_id: str) -> Any:
    sql = "SELECT * FROM invoices WHERE invoice_id = :i"
    if conn.dialect.name == "postgresql":
        sql += " FOR UPDATE"
    return conn.execute(sa.text(sql), {"i": invoice_id}).first()


# -- applying a payment ------------------------------------------------------------------------------------

_INSERT_PAYMENT: Final = sa.text(
    "INSERT INTO invoice_payments (event_id, payment_id, invoice_id, customer_id, amount_minor, currency, status,"
    " applied_minor, credit_minor, reason, processed_at, received_at, applied_at) VALUES (:event_id, :payment_id,"
    " :invoice_id, :customer_id, :amount_minor, :currency, :status, :applied_minor, :credit_minor, :reason,"
    " :processed_at, :received_at, :applied_at)"
)
_SETTLE_PAYMENT: Final = sa.text(
    "UPDATE invoice_payments SET status = :status, applied_minor = :applied_minor, credit_minor = :credit_minor,"
    " reason = :reason, applied_at = :applied_at WHERE event_id = :event_id AND status = 'unapplied'"
)


def _settle(conn: Connection, invoice: Any, pay: dict[str, Any], now: datetime) -> dict[str, Any]:
    """Decide how ``pay`` (a row dict) lands on ``invoice``; update the invoice and write any credit.
    Returns the payment's new status fields."""
    if pay["currency"] != invoice.currency:
        return {"status": "held", "applied_minor": 0, "credit_minor": 0, "applied_at": None,
                "reason": f"currency mismatch: payment in {pay['currency']}, invoice {invoice.invoice_id} is in"
                          f" {invoice.currency}; held for review"}  # fmt: skip
    due, paid = int(invoice.amount_due_minor), int(invoice.paid_minor)
    applied = min(int(pay["amount_minor"]), due - paid)
    credit = int(pay["amount_minor"]) - applied
    if applied:
        conn.execute(
            sa.text("UPDATE invoices SET paid_minor = :p, status = :s, updated_at = :t WHERE invoice_id = :i"),
            {"p": paid + applied, "s": status_for(paid + applied, due), "t": now.isoformat(), "i": invoice.invoice_id},
        )
    reason = None
    if credit:
        conn.execute(
            sa.text("INSERT INTO customer_credits (credit_id, customer_id, currency, amount_minor, source_event_id,"
                    " payment_id, invoice_id, created_at) VALUES (:id, :c, :cur, :a, :e, :p, :i, :t)"),
            {"id": str(uuid.uuid5(NAMESPACE, pay["event_id"])), "c": invoice.customer_id, "cur": invoice.currency,
             "a": credit, "e": pay["event_id"], "p": pay["payment_id"], "i": invoice.invoice_id, "t": now.isoformat()},
        )  # fmt: skip
        excess = f"{from_minor(credit, invoice.currency)} {invoice.currency}"
        reason = f"overpayment: {excess} credited to {invoice.customer_id}"
    return {"status": "applied", "applied_minor": applied, "credit_minor": credit, "applied_at": now.isoformat(),
            "reason": reason}  # fmt: skip


def on_payment_processed(conn: Connection, decoded: DecodedEvent, message: Message | None = None) -> None:
    """PaymentProcessed with an invoiceId → applied, unapplied (unknown invoice) or held (currency mismatch).

    Without an invoiceId (legacy events included) it is not an invoice matter. A replayed eventId
    changes nothing; a second PaymentProcessed for the same payment is refused (dead-lettered with the reason).
    """
    event = decoded.event
    if not isinstance(event, PaymentProcessed):
        raise PoisonEvent(f"invoices: expected PaymentProcessed, got {decoded.event_type}")
    d = event.data
    invoice_id = d.invoiceId
    if not isinstance(invoice_id, str):
        return
    try:
        minor = to_minor(d.amount.value, d.amount.currency, field="data.amount.value")
    except ContractError as exc:
        raise PoisonEvent(f"invoices: {exc}") from None
    _serialize(conn, invoice_id)
    seen = conn.execute(
        sa.text("SELECT event_id FROM invoice_payments WHERE payment_id = :p OR event_id = :e"),
        {"p": d.paymentId, "e": event.eventId},
    ).first()
    if seen is not None:
        if seen.event_id == event.eventId:
            return
        raise PoisonEvent(f"invoices: payment {d.paymentId} was already counted from event {seen.event_id};"
                          f" PaymentProcessed {event.eventId} would count it twice")  # fmt: skip
    now = _now()
    pay: dict[str, Any] = {
        "event_id": event.eventId, "payment_id": d.paymentId, "invoice_id": invoice_id,
        "customer_id": d.customerId if isinstance(d.customerId, str) else None, "amount_minor": minor,
        "currency": d.amount.currency, "processed_at": d.processedAt.isoformat(), "received_at": now.isoformat(),
    }  # fmt: skip
    invoice = _lock_invoice(conn, invoice_id)
    if invoice is None:
        outcome = {"status": "unapplied", "applied_minor": 0, "credit_minor": 0, "applied_at": None,
                   "reason": f"invoice {invoice_id} not found; applied when it is created"}  # fmt: skip
        conn.execute(_INSERT_PAYMENT, {**pay, **outcome})
        return
    # insert first (the credit row refers to it), then settle
    placeholder = {"status": "unapplied", "applied_minor": 0, "credit_minor": 0, "applied_at": None, "reason": "-"}
    conn.execute(_INSERT_PAYMENT, {**pay, **placeholder})
    outcome = _settle(conn, invoice, pay, now)
    conn.execute(_SETTLE_PAYMENT, {**outcome, "event_id": event.eventId})


def _driver(conn: Connection, sql: str) -> str:
    """``sql`` written with ``?`` placeholders, for the connection's driver (sqlite3: qmark, psycopg: format)."""
    return sql if conn.dialect.paramstyle == "qmark" else sql.replace("?", "%s")


def _in_chunks(conn: Connection, sql: str, values: list[str], repeat: int = 1) -> list[Any]:
    """Rows of ``sql`` (one ``IN ({})`` per ``repeat``, each given all of a chunk) over ``values`` in chunks."""
    rows: list[Any] = []
    for i in range(0, len(values), 400):
        chunk = values[i : i + 400]
        marks = ",".join("?" * len(chunk))
        rows.extend(conn.exec_driver_sql(_driver(conn, sql.format(*[marks] * repeat)), tuple(chunk) * repeat).all())
    return rows


_BATCH_PAYMENTS_SQL: Final = (
    "INSERT INTO invoice_payments (event_id, payment_id, invoice_id, customer_id, amount_minor, currency, status,"
    " applied_minor, credit_minor, reason, processed_at, received_at, applied_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_BATCH_CREDITS_SQL: Final = (
    "INSERT INTO customer_credits (credit_id, customer_id, currency, amount_minor, source_event_id, payment_id,"
    " invoice_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_BATCH_INVOICES_SQL: Final = "UPDATE invoices SET paid_minor = ?, status = ?, updated_at = ? WHERE invoice_id = ?"


def on_payment_processed_batch(conn: Connection, batch: Sequence[tuple[DecodedEvent, Message]]) -> None:
    """The batch form of :func:`on_payment_processed` (same effects, in order): one query for payments
    already counted, one for the invoices named, then each payment settled in memory against its invoice
    and written with executemany (payments with their final status, credits, one update per invoice).

    Raises PoisonEvent for anything the per-event handler would refuse, and for a payment named twice in
    the batch: the runtime then re-applies the batch one event at a time."""
    todo: list[tuple[PaymentProcessed, str, int]] = []
    for decoded, _message in batch:
        event = decoded.event
        if not isinstance(event, PaymentProcessed):
            raise PoisonEvent(f"invoices: expected PaymentProcessed, got {decoded.event_type}")
        invoice_id = event.data.invoiceId
        if not isinstance(invoice_id, str):
            continue
        try:
            minor = to_minor(event.data.amount.value, event.data.amount.currency, field="data.amount.value")
        except ContractError as exc:
            raise PoisonEvent(f"invoices: {exc}") from None
        todo.append((event, invoice_id, minor))
    if not todo:
        return
    invoice_ids = sorted({inv for _, inv, _ in todo})
    if conn.dialect.name == "postgresql":  # same locks as the per-event path, taken in one order
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
                     [{"k": f"invoice:{i}"} for i in invoice_ids])
    pids = list(dict.fromkeys(e.data.paymentId for e, _, _ in todo))
    eids = [e.eventId for e, _, _ in todo]
    by_pid: dict[str, str] = {}
    seen_events: set[str] = set()
    for r in _in_chunks(conn, "SELECT event_id, payment_id FROM invoice_payments WHERE payment_id IN ({})", pids):
        by_pid[r[1]] = r[0]
        seen_events.add(r[0])
    for r in _in_chunks(conn, "SELECT event_id, payment_id FROM invoice_payments WHERE event_id IN ({})", eids):
        seen_events.add(r[0])
    lock = " FOR UPDATE" if conn.dialect.name == "postgresql" else ""
    invoices: dict[str, list[Any]] = {
        r[0]: list(r)
        for r in _in_chunks(conn, "SELECT invoice_id, customer_id, currency, amount_due_minor, paid_minor FROM"
                                  " invoices WHERE invoice_id IN ({})" + lock, invoice_ids)
    }  # fmt: skip
    payments: list[tuple[Any, ...]] = []
    credits_: list[tuple[Any, ...]] = []
    touched: dict[str, str] = {}
    last = ""
    for event, invoice_id, minor in todo:
        d = event.data
        counted_by = by_pid.get(d.paymentId)
        if event.eventId in seen_events:
            if counted_by is not None and counted_by != event.eventId:
                raise PoisonEvent(f"invoices: payment {d.paymentId} and event {event.eventId} are both counted"
                                  " already, by different records")  # the per-event path decides
            continue  # a replay
        if counted_by is not None:
            raise PoisonEvent(f"invoices: payment {d.paymentId} was already counted from event {counted_by};"
                              f" PaymentProcessed {event.eventId} would count it twice")  # fmt: skip
        by_pid[d.paymentId] = event.eventId
        seen_events.add(event.eventId)
        now = _now().isoformat()
        if now <= last:  # strictly increasing within the batch: received_at orders waiting payments
            now = (datetime.fromisoformat(last) + timedelta(microseconds=1)).isoformat()
        last = now
        customer = d.customerId if isinstance(d.customerId, str) else None
        cur = d.amount.currency
        row = [event.eventId, d.paymentId, invoice_id, customer, minor, cur, "unapplied", 0, 0, None,
               d.processedAt.isoformat(), now, None]
        inv = invoices.get(invoice_id)
        if inv is None:
            row[9] = f"invoice {invoice_id} not found; applied when it is created"
        elif cur != inv[2]:
            row[6] = "held"
            row[9] = (f"currency mismatch: payment in {cur}, invoice {invoice_id} is in {inv[2]};"
                      " held for review")
        else:
            due, paid = int(inv[3]), int(inv[4])
            applied = min(minor, due - paid)
            credit = minor - applied
            if applied:
                inv[4] = paid + applied
                touched[invoice_id] = now
            if credit:
                credits_.append((str(uuid.uuid5(NAMESPACE, event.eventId)), inv[1], cur, credit, event.eventId,
                                 d.paymentId, invoice_id, now))
                row[9] = f"overpayment: {from_minor(credit, cur)} {cur} credited to {inv[1]}"
            row[6], row[7], row[8], row[12] = "applied", applied, credit, now
        payments.append(tuple(row))
    if payments:
        conn.exec_driver_sql(_driver(conn, _BATCH_PAYMENTS_SQL), payments)
    if credits_:
        conn.exec_driver_sql(_driver(conn, _BATCH_CREDITS_SQL), credits_)
    if touched:
        conn.exec_driver_sql(_driver(conn, _BATCH_INVOICES_SQL), [
            (invoices[i][4], status_for(int(invoices[i][4]), int(invoices[i][3])), t, i) for i, t in touched.items()])


def fact_history(conn: Connection) -> Iterator[tuple[str, str, str, dict[str, Any]]]:
    """The completions counted before the one-fact rule existed (runtime.facts): one per invoice payment."""
    from payevents.runtime.facts import content_from

    for r in conn.exec_driver_sql("SELECT payment_id, event_id, amount_minor, currency, invoice_id, customer_id"
                                  " FROM invoice_payments ORDER BY received_at, event_id"):
        fields = {"invoiceId": r[4], "customerId": r[5]}
        yield r[0], "PaymentProcessed", r[1], content_from(from_minor(int(r[2]), r[3]), r[3], **fields)


# -- commands ----------------------------------------------------------------------------------------------


def create(
    settings: Settings,
    *,
    customer_id: str,
    amount_due: Decimal | str | int,
    currency: str,
    due_date: date | str,
    invoice_id: str | None = None,
    description: str | None = None,
) -> InvoiceDetail:
    """Create an invoice (Open) and apply any payments that arrived for it before it existed.

    Creating the same invoice again with the same content returns it; other content is an IdempotencyConflict.
    """
    if not isinstance(customer_id, str) or not customer_id.strip():
        raise ContractError("customer_id: required non-empty string")
    if invoice_id is not None and (not isinstance(invoice_id, str) or not invoice_id.strip() or len(invoice_id) > 255):
        raise ContractError("invoice_id: must be a non-empty string of at most 255 characters")
    if description is not None and not isinstance(description, str):
        raise ContractError("description: must be a string")
    for field, text in (("customer_id", customer_id), ("invoice_id", invoice_id), ("description", description)):
        check_free_text(field, text)  # no card number enters the store or a log
    if not isinstance(currency, str):
        raise ContractError(f"currency: {safe_repr(currency)} is not an ISO 4217 code")
    due_minor = to_minor(amount_due, currency, field="amount_due")
    try:
        due = due_date if isinstance(due_date, date) else date.fromisoformat(str(due_date))
    except ValueError:
        raise ContractError(f"due_date: {safe_repr(due_date)} is not a date (YYYY-MM-DD)") from None
    invoice_id = invoice_id or f"INV-{uuid.uuid4().hex[:16].upper()}"
    now = _now()
    row = {"invoice_id": invoice_id, "customer_id": customer_id, "amount_due_minor": due_minor, "currency": currency,
           "due_date": due.isoformat(), "description": description, "t": now.isoformat()}  # fmt: skip
    with store.engine(settings).begin() as conn:
        _serialize(conn, invoice_id)
        inserted = conn.execute(
            sa.text("INSERT INTO invoices (invoice_id, customer_id, amount_due_minor, currency, due_date, description,"
                    " paid_minor, status, created_at, updated_at) VALUES (:invoice_id, :customer_id,"
                    " :amount_due_minor, :currency, :due_date, :description, 0, 'Open', :t, :t)"
                    " ON CONFLICT (invoice_id) DO NOTHING RETURNING invoice_id"),
            row,
        ).first()  # fmt: skip
        invoice = _lock_invoice(conn, invoice_id)
        if inserted is None:
            same = (invoice.customer_id, int(invoice.amount_due_minor), invoice.currency, invoice.due_date,
                    invoice.description) == (customer_id, due_minor, currency, due.isoformat(), description)
            if not same:
                raise IdempotencyConflict(f"invoice {invoice_id}: already exists with other content")
            return _detail(conn, invoice_id)
        waiting = conn.execute(
            sa.text("SELECT * FROM invoice_payments WHERE invoice_id = :i AND status = 'unapplied'"
                    " ORDER BY received_at, event_id"),
            {"i": invoice_id},
        ).all()
        for w in waiting:
            outcome = _settle(conn, invoice, dict(w._mapping), now)
            conn.execute(_SETTLE_PAYMENT, {**outcome, "event_id": w.event_id})
            invoice = _lock_invoice(conn, invoice_id)
        return _detail(conn, invoice_id)


# -- reads -------------------------------------------------------------------------------------------------


def _detail(conn: Connection, invoice_id: str) -> InvoiceDetail:
    r = conn.execute(sa.text("SELECT * FROM invoices WHERE invoice_id = :i"), {"i": invoice_id}).first()
    if r is None:
        raise NotFound(f"invoice {safe_repr(invoice_id)}: not found")
    pays = conn.execute(
        sa.text("SELECT * FROM invoice_payments WHERE invoice_id = :i ORDER BY received_at, event_id"),
        {"i": invoice_id},
    ).all()
    payments = [_payment(p) for p in pays]
    return InvoiceDetail(invoice=_invoice(r), payments=payments,
                         credit_minor=sum(p.credit_minor for p in payments))  # fmt: skip


def show(settings: Settings, invoice_id: str) -> InvoiceDetail:
    """One invoice with the payments that name it (applied, unapplied, held) and the credit they left."""
    with store.engine(settings).connect() as conn:
        return _detail(conn, invoice_id)


def list_invoices(
    settings: Settings, *, status: str | None = None, customer_id: str | None = None, limit: int = 1000,
    starting_after: str | None = None,
) -> list[Invoice]:
    """Invoices, oldest first, optionally by status (Open, Partially Paid, Paid) and customer;
    ``starting_after``: those after that invoice id in this order (keyset paging)."""
    where, args = [], {}
    if status is not None:
        where.append("status = :s")
        args["s"] = parse_status(status)
    if customer_id is not None:
        where.append("customer_id = :c")
        args["c"] = customer_id
    with store.engine(settings).connect() as conn:
        if starting_after is not None:
            clause, more = after_clause(conn, "invoices", "created_at", "invoice_id", descending=False,
                                        starting_after=starting_after)
            where.append(clause)
            args.update(more)
        sql = "SELECT * FROM invoices" + (" WHERE " + " AND ".join(where) if where else "")
        sql += f" ORDER BY created_at, invoice_id LIMIT {int(limit)}"
        return [_invoice(r) for r in conn.execute(sa.text(sql), args)]


def unapplied(settings: Settings, *, include_held: bool = True) -> list[InvoicePayment]:
    """Payments not (yet) applied: waiting for their invoice, or held for review, with the reason."""
    statuses = "('unapplied', 'held')" if include_held else "('unapplied')"
    with store.engine(settings).connect() as conn:
        rows = conn.exec_driver_sql(
            f"SELECT * FROM invoice_payments WHERE status IN {statuses} ORDER BY received_at, event_id"
        ).all()
    return [_payment(r) for r in rows]


def credits(settings: Settings, *, customer_id: str | None = None) -> list[CustomerCredit]:
    """Customer credit balances from overpayments, per customer and currency."""
    sql = (f"SELECT customer_id, currency, {exact_sum('amount_minor', 'total')}, COUNT(*) AS n FROM customer_credits"
           + (" WHERE customer_id = :c" if customer_id else "") + " GROUP BY customer_id, currency"
           " ORDER BY customer_id, currency")  # fmt: skip
    with store.engine(settings).connect() as conn:
        rows = conn.execute(sa.text(sql), {"c": customer_id} if customer_id else {}).all()
    return [CustomerCredit(customer_id=r.customer_id, currency=r.currency,
                           amount=from_minor(combine(r.total_hi, r.total_lo), r.currency),
                           amount_minor=combine(r.total_hi, r.total_lo), payments=int(r.n)) for r in rows]  # fmt: skip


class InvoiceProblem(msgspec.Struct, kw_only=True, frozen=True):
    rule: str
    detail: str


def check(settings: Settings) -> list[InvoiceProblem]:
    """Re-check the invoice invariants over the whole store (empty list: all hold)."""
    problems: list[InvoiceProblem] = []
    with store.engine(settings).connect() as conn:
        for r in conn.exec_driver_sql(
            f"SELECT i.invoice_id, i.paid_minor, {exact_sum('p.applied_minor', 'applied')} FROM invoices i"
            " LEFT JOIN invoice_payments p ON p.invoice_id = i.invoice_id AND p.status = 'applied'"
            " GROUP BY i.invoice_id, i.paid_minor"
        ):
            applied = combine(r.applied_hi, r.applied_lo)  # exact beyond 64 bits (store.sums)
            if int(r.paid_minor) != applied:
                problems.append(InvoiceProblem(rule="paid-equals-applied",
                                               detail=f"{r.invoice_id}: paid {r.paid_minor} != applied {applied}"))
        for r in conn.exec_driver_sql(
            "SELECT invoice_id, paid_minor, amount_due_minor, status FROM invoices"
        ):
            if r.status != status_for(int(r.paid_minor), int(r.amount_due_minor)):
                problems.append(InvoiceProblem(rule="status", detail=f"{r.invoice_id}: {r.status} with paid"
                                               f" {r.paid_minor} of {r.amount_due_minor}"))  # fmt: skip
        for r in conn.exec_driver_sql(
            "SELECT p.event_id, p.credit_minor, COALESCE(c.amount_minor, 0) AS credited FROM invoice_payments p"
            " LEFT JOIN customer_credits c ON c.source_event_id = p.event_id"
            " WHERE p.credit_minor <> COALESCE(c.amount_minor, 0)"
        ):
            problems.append(InvoiceProblem(rule="credit-recorded",
                                           detail=f"event {r.event_id}: credit {r.credit_minor} != {r.credited}"))
    return problems
