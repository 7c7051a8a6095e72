"""Invoices: creation, applying PaymentProcessed events, and the reads.

Open → Partially Paid → Paid. A payment larger than what is still due pays the invoice and the
excess becomes a customer credit (an invoice never has a negative balance). A payment for an
invoice not created yet waits as an unapplied payment and is applied when the invoice is created;
a payment in another currency than its invoice is held for review with the reason.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from payevents.contracts import ids
from payevents.contracts.cardguard import check_free_text, safe_repr
from payevents.contracts.codec import DecodedEvent
from payevents.contracts.events import MAX_ID_LENGTH, PaymentProcessed
from payevents.contracts.money import MINOR_UNITS, amount_ok, from_minor, parse_minor
from payevents.errors import ContractError, IdempotencyConflict, NotFound, PoisonEvent
from payevents.runtime.bulk import copy_rows, lookup
from payevents.services.invoices import store
from payevents.settings import Settings
from payevents.store.db import dialect
from payevents.store.paging import after_clause
from payevents.store.sql import driver_sql
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


def _serialize(conn: Connection, invoice_ids: Sequence[str]) -> None:
    """On PostgreSQL, serialize work on each invoice id, taken in one order (an invoice being created and a
    payment for it arriving at the same moment must not miss each other). SQLite serializes writers already."""
    dialect(conn).lock_keys(conn, [f"invoice:{i}" for i in invoice_ids])


def _lock_invoice(conn: Connection, invoice_id: str) -> Any:
    sql = dialect(conn).for_update("SELECT * FROM invoices WHERE invoice_id = :i")
    return conn.execute(sa.text(sql), {"i": invoice_id}).first()


# -- what a payment means for an invoice (pure) --------------------------------------------------------------


@dataclasses.dataclass
class InvoiceState:
    """What settling needs of an invoice; ``paid_minor`` grows as payments are settled in memory."""

    invoice_id: str
    customer_id: str
    currency: str
    due_minor: int
    paid_minor: int


class Settlement(msgspec.Struct, kw_only=True, frozen=True):
    status: str
    applied_minor: int = 0
    credit_minor: int = 0
    reason: str | None = None


def settle(invoice: InvoiceState | None, invoice_id: str, currency: str, minor: int) -> Settlement:
    """How a payment of ``minor`` units in ``currency`` for ``invoice_id`` lands: unapplied (no such invoice
    yet), held (another currency), or applied up to what is still due with the excess as a customer credit."""
    if invoice is None:
        return Settlement(status="unapplied", reason=f"invoice {invoice_id} not found; applied when it is created")
    if currency != invoice.currency:
        return Settlement(status="held", reason=f"currency mismatch: payment in {currency}, invoice {invoice_id} is"
                                                f" in {invoice.currency}; held for review")  # fmt: skip
    applied = min(minor, invoice.due_minor - invoice.paid_minor)
    credit = minor - applied
    reason = (f"overpayment: {from_minor(credit, currency)} {currency} credited to {invoice.customer_id}"
              if credit else None)
    return Settlement(status="applied", applied_minor=applied, credit_minor=credit, reason=reason)


def decide(decoded: DecodedEvent, *, counted_by: str | None, seen: bool) -> tuple[PaymentProcessed, str, int] | None:
    """Whether a PaymentProcessed is an invoice matter: ``(event, invoiceId, minor units)``, or None (no invoiceId,
    or a replay of an event already counted). ``counted_by``: the eventId that already counted its payment;
    ``seen``: its eventId is already counted. Raises PoisonEvent for a second event counting the same payment."""
    event = decoded.event
    if not isinstance(event, PaymentProcessed):
        raise PoisonEvent(f"invoices: expected PaymentProcessed, got {decoded.event_type}")
    d = event.data
    invoice_id = d.invoiceId
    if not isinstance(invoice_id, str):
        return None
    value, code = d.amount.value, d.amount.currency
    if type(value) is Decimal and amount_ok(value, code):  # the codec's own check: exact, > 0, bounded
        minor = int(value.scaleb(MINOR_UNITS[code]))
    else:
        try:  # parse_minor says why
            minor = parse_minor(value, code, field="data.amount.value")
        except ContractError as exc:
            raise PoisonEvent(f"invoices: {exc}") from None
    if seen:
        return None  # a replay: counted already
    if counted_by is not None:
        raise PoisonEvent(f"invoices: payment {d.paymentId} was already counted from event {counted_by};"
                          f" PaymentProcessed {event.eventId} would count it twice")  # fmt: skip
    return event, invoice_id, minor


# -- applying it (one path: a single event is a batch of one) -----------------------------------------------

_PAYMENT_COLUMNS: Final = ("event_id", "payment_id", "invoice_id", "customer_id", "amount_minor", "currency", "status",
                           "applied_minor", "credit_minor", "reason", "processed_at", "received_at", "applied_at")
_CREDIT_COLUMNS: Final = ("credit_id", "customer_id", "currency", "amount_minor", "source_event_id", "payment_id",
                          "invoice_id", "created_at")
_SETTLE_PAYMENTS: Final = ("UPDATE invoice_payments SET status = ?, applied_minor = ?, credit_minor = ?, reason = ?,"
                           " applied_at = ? WHERE event_id = ? AND status = 'unapplied'")
_UPDATE_INVOICES: Final = "UPDATE invoices SET paid_minor = ?, status = ?, updated_at = ? WHERE invoice_id = ?"
_INVOICE_STATE: Final = "invoice_id, customer_id, currency, amount_due_minor, paid_minor"


class _Writes:
    """The rows a batch of settlements writes, each kind in one executemany (payments before their credits)."""

    def __init__(self) -> None:
        self.payments: list[tuple[Any, ...]] = []
        self.settled: list[tuple[Any, ...]] = []
        self.credits: list[tuple[Any, ...]] = []
        self.touched: dict[str, tuple[InvoiceState, str]] = {}

    def settled_on(self, invoice: InvoiceState | None, s: Settlement, *, event_id: str, payment_id: str,
                   now: str) -> None:
        if invoice is None or s.status != "applied":
            return
        if s.applied_minor:
            invoice.paid_minor += s.applied_minor
            self.touched[invoice.invoice_id] = (invoice, now)
        if s.credit_minor:
            self.credits.append((ids.derived(NAMESPACE, event_id, event_id), invoice.customer_id, invoice.currency,
                                 s.credit_minor, event_id, payment_id, invoice.invoice_id, now))

    def write(self, conn: Connection) -> None:
        # inserts: one COPY on PostgreSQL (a row per statement on the server with executemany), executemany on SQLite
        if self.payments:
            copy_rows(conn, "invoice_payments", _PAYMENT_COLUMNS, self.payments)
        if self.settled:
            conn.exec_driver_sql(driver_sql(conn, _SETTLE_PAYMENTS), self.settled)
        if self.credits:
            copy_rows(conn, "customer_credits", _CREDIT_COLUMNS, self.credits)
        if self.touched:
            conn.exec_driver_sql(driver_sql(conn, _UPDATE_INVOICES), [
                (inv.paid_minor, status_for(inv.paid_minor, inv.due_minor), t, inv.invoice_id)
                for inv, t in self.touched.values()])


def _states(conn: Connection, invoice_ids: Sequence[str]) -> dict[str, InvoiceState]:
    """The named invoices, locked (PostgreSQL: one prepared statement, a key probe per id; it was an ``IN`` list
    of the batch's ids, a new statement to parse and plan every batch)."""
    return {r[0]: InvoiceState(invoice_id=r[0], customer_id=r[1], currency=r[2], due_minor=int(r[3]),
                               paid_minor=int(r[4]))
            for r in lookup(conn, _INVOICE_STATE, "invoices", "1 = 1", "invoice_id", invoice_ids,
                            lock=True)}  # fmt: skip


def on_payment_processed_batch(conn: Connection, batch: Sequence[tuple[DecodedEvent, Message | None]]) -> None:
    """PaymentProcessed with an invoiceId → applied, unapplied (unknown invoice) or held (currency mismatch).

    Invoices' one path (a single event is a batch of one): one query for payments already counted, one for the
    invoices named (locked), then :func:`decide` and :func:`settle` per event in order, in memory, and the rows
    written with executemany (payments with their final status, credits, one update per invoice). Without an
    invoiceId (legacy events included) an event is not an invoice matter; a replayed eventId changes nothing; a
    second PaymentProcessed for the same payment (also earlier in the batch) raises PoisonEvent, and the runtime
    re-applies the batch one event at a time to dead-letter just that one."""
    named = [(d, d.event.data.invoiceId) for d, _ in batch if isinstance(d.event, PaymentProcessed)]
    invoice_ids = sorted({i for _, i in named if isinstance(i, str)})
    if not invoice_ids and len(named) == len(batch):
        return
    _serialize(conn, invoice_ids)
    pids = list(dict.fromkeys(d.payment_id for d, _ in batch))
    eids = [d.event_id for d, _ in batch]
    counted: dict[str, str] = {}
    seen: set[str] = set()
    # one primary-key (unique-key) probe per id on PostgreSQL, IN lists on SQLite (runtime.bulk.lookup)
    for r in lookup(conn, "event_id, payment_id", "invoice_payments", "1 = 1", "payment_id", pids):
        counted[r[1]] = r[0]
        seen.add(r[0])
    for r in lookup(conn, "event_id", "invoice_payments", "1 = 1", "event_id", eids):
        seen.add(r[0])
    invoices = _states(conn, invoice_ids)
    out = _Writes()
    last = ""
    for decoded, _message in batch:
        todo = decide(decoded, counted_by=counted.get(decoded.payment_id), seen=decoded.event_id in seen)
        if todo is None:
            continue
        event, invoice_id, minor = todo
        d = event.data
        counted[d.paymentId] = event.eventId
        seen.add(event.eventId)
        now = _now().isoformat()
        if now <= last:  # strictly increasing within the batch: received_at orders waiting payments
            now = (datetime.fromisoformat(last) + timedelta(microseconds=1)).isoformat()
        last = now
        inv = invoices.get(invoice_id)
        s = settle(inv, invoice_id, d.amount.currency, minor)
        out.payments.append((event.eventId, d.paymentId, invoice_id, d.customerId if isinstance(d.customerId, str)
                             else None, minor, d.amount.currency, s.status, s.applied_minor, s.credit_minor, s.reason,
                             d.processedAt.isoformat(), now, now if s.status == "applied" else None))  # fmt: skip
        out.settled_on(inv, s, event_id=event.eventId, payment_id=d.paymentId, now=now)
    out.write(conn)


def on_payment_processed(conn: Connection, decoded: DecodedEvent, message: Message | None = None) -> None:
    """One event: :func:`on_payment_processed_batch` with a batch of one (there is one semantics)."""
    on_payment_processed_batch(conn, [(decoded, message)])


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
    if invoice_id is not None and (not isinstance(invoice_id, str) or not invoice_id.strip()):
        raise ContractError(f"invoice_id: must be a non-empty string of at most {MAX_ID_LENGTH} characters")
    if description is not None and not isinstance(description, str):
        raise ContractError("description: must be a string")
    for field, text, width in (("customer_id", customer_id, MAX_ID_LENGTH), ("invoice_id", invoice_id, MAX_ID_LENGTH),
                               ("description", description, None)):
        check_free_text(field, text, width)  # the column's width; no NUL, no card number in the store or a log
    if not isinstance(currency, str):
        raise ContractError(f"currency: {safe_repr(currency)} is not an ISO 4217 code")
    due_minor = parse_minor(amount_due, currency, field="amount_due")
    try:
        due = due_date if isinstance(due_date, date) else date.fromisoformat(str(due_date))
    except ValueError:
        raise ContractError(f"due_date: {safe_repr(due_date)} is not a date (YYYY-MM-DD)") from None
    invoice_id = invoice_id or ids.short("INV-", uuid.uuid4())
    now = _now()
    row = {"invoice_id": invoice_id, "customer_id": customer_id, "amount_due_minor": due_minor, "currency": currency,
           "due_date": due.isoformat(), "description": description, "t": now.isoformat()}  # fmt: skip
    with store.engine(settings).begin() as conn:
        _serialize(conn, [invoice_id])
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
        state = _states(conn, [invoice_id])[invoice_id]
        out = _Writes()
        t = now.isoformat()
        for w in waiting:
            s = settle(state, invoice_id, w.currency, int(w.amount_minor))
            out.settled.append((s.status, s.applied_minor, s.credit_minor, s.reason,
                                t if s.status == "applied" else None, w.event_id))
            out.settled_on(state, s, event_id=w.event_id, payment_id=w.payment_id, now=t)
        out.write(conn)
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
