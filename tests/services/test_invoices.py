"""Invoices: Open → Partially Paid → Paid, overpayment credit, unknown invoices applied later, currency
mismatch held, no invoiceId ignored, never counted twice. Store tests run on SQLite and PostgreSQL."""

from __future__ import annotations

from decimal import Decimal

import pytest
import sqlalchemy as sa
from money_helpers import deliver, processed

from payevents.errors import ContractError, IdempotencyConflict, NotFound, PoisonEvent
from payevents.services import invoices
from payevents.services.invoices import store
from payevents.settings import Settings


def _invoice(settings: Settings, invoice_id: str, amount: str, currency: str = "USD") -> invoices.InvoiceDetail:
    return invoices.create(settings, invoice_id=invoice_id, customer_id="cus_johndoe", amount_due=amount,
                           currency=currency, due_date="2025-12-31", description="Consulting")  # fmt: skip


def test_partial_payments_add_up_exactly_to_paid(store_settings: Settings) -> None:
    inv = _invoice(store_settings, "INV-1", "100.00").invoice
    assert (inv.status, inv.paid_minor, inv.balance_due) == ("Open", 0, Decimal("100.00"))
    deliver(store_settings, "invoices", [processed(amount="33.33", invoice_id="INV-1")])
    assert invoices.show(store_settings, "INV-1").invoice.status == "Partially Paid"
    deliver(store_settings, "invoices", [processed(amount="33.33", invoice_id="INV-1"),
                                         processed(amount="33.34", invoice_id="INV-1")])
    d = invoices.show(store_settings, "INV-1")
    assert (d.invoice.status, d.invoice.paid_minor, d.invoice.balance_due_minor) == ("Paid", 10000, 0)
    assert [p.applied_minor for p in d.payments] == [3333, 3333, 3334] and d.credit_minor == 0
    assert [i.invoice_id for i in invoices.list_invoices(store_settings, status="paid")] == ["INV-1"]
    assert invoices.list_invoices(store_settings, status="Partially Paid") == []
    assert invoices.check(store_settings) == []


def test_overpayment_pays_and_credits_the_customer(store_settings: Settings) -> None:
    _invoice(store_settings, "INV-2", "1.000", "KWD")
    deliver(store_settings, "invoices", [processed(amount="0.400", currency="KWD", invoice_id="INV-2"),
                                         processed(amount="0.750", currency="KWD", invoice_id="INV-2")])
    d = invoices.show(store_settings, "INV-2")
    assert (d.invoice.status, d.invoice.paid_minor, d.invoice.balance_due_minor) == ("Paid", 1000, 0)
    assert [(p.applied_minor, p.credit_minor) for p in d.payments] == [(400, 0), (600, 150)]
    assert "overpayment" in (d.payments[1].reason or "")
    [credit] = invoices.credits(store_settings)
    assert (credit.customer_id, credit.currency, credit.amount) == ("cus_johndoe", "KWD", Decimal("0.150"))
    # a further payment on a Paid invoice is all credit, never a negative balance
    deliver(store_settings, "invoices", [processed(amount="0.100", currency="KWD", invoice_id="INV-2")])
    assert invoices.show(store_settings, "INV-2").invoice.balance_due_minor == 0
    assert invoices.credits(store_settings, customer_id="cus_johndoe")[0].amount_minor == 250
    assert invoices.check(store_settings) == []


def test_unknown_invoice_is_unapplied_then_applied_on_creation(store_settings: Settings) -> None:
    early = [processed(amount="600", currency="JPY", invoice_id="INV-LATER"),
             processed(amount="500", currency="JPY", invoice_id="INV-LATER")]
    deliver(store_settings, "invoices", early)
    waiting = invoices.unapplied(store_settings)
    assert [(p.status, p.invoice_id) for p in waiting] == [("unapplied", "INV-LATER")] * 2
    assert "not found" in (waiting[0].reason or "")
    d = _invoice(store_settings, "INV-LATER", "1000", "JPY")
    assert (d.invoice.status, d.invoice.paid_minor) == ("Paid", 1000)
    assert sorted((p.applied_minor, p.credit_minor) for p in d.payments) == [(400, 100), (600, 0)]
    assert invoices.unapplied(store_settings) == []
    assert invoices.credits(store_settings)[0].amount_minor == 100
    # creating it again with the same content returns it; other content is a conflict
    assert _invoice(store_settings, "INV-LATER", "1000", "JPY").invoice.paid_minor == 1000
    with pytest.raises(IdempotencyConflict):
        _invoice(store_settings, "INV-LATER", "2000", "JPY")
    assert invoices.check(store_settings) == []


def test_currency_mismatch_is_held_with_the_reason(store_settings: Settings) -> None:
    _invoice(store_settings, "INV-USD", "50.00")
    deliver(store_settings, "invoices", [processed(amount="50.00", currency="EUR", invoice_id="INV-USD"),
                                         processed(amount="9.99", currency="GBP", invoice_id="INV-NEW")])
    _invoice(store_settings, "INV-NEW", "9.99", "USD")
    held = invoices.unapplied(store_settings)
    assert [(p.status, p.invoice_id, p.currency) for p in held] == [("held", "INV-USD", "EUR"),
                                                                    ("held", "INV-NEW", "GBP")]
    assert "currency mismatch" in (held[0].reason or "") and "EUR" in (held[0].reason or "")
    assert invoices.show(store_settings, "INV-USD").invoice.status == "Open"
    assert invoices.show(store_settings, "INV-NEW").invoice.status == "Open"


def test_no_invoice_id_and_legacy_are_not_an_invoice_matter(store_settings: Settings) -> None:
    deliver(store_settings, "invoices", [processed(amount="10.00"), processed(amount="99.99", legacy=True)])
    with store.engine(store_settings).connect() as conn:
        assert conn.exec_driver_sql("SELECT COUNT(*) FROM invoice_payments").scalar_one() == 0


def test_duplicates_and_replays_never_count_twice(store_settings: Settings) -> None:
    _invoice(store_settings, "INV-3", "10.00")
    e = processed(amount="4.00", invoice_id="INV-3")
    deliver(store_settings, "invoices", [e, e, e])
    deliver(store_settings, "invoices", [e])
    assert invoices.show(store_settings, "INV-3").invoice.paid_minor == 400
    other = processed(amount="4.00", invoice_id="INV-3", payment_id=e.payment_id)  # same payment, new eventId
    with pytest.raises(PoisonEvent, match="twice"):
        deliver(store_settings, "invoices", [other])
    unknown = processed(amount="1.00", invoice_id="INV-X")
    deliver(store_settings, "invoices", [unknown, unknown])
    assert len(invoices.unapplied(store_settings)) == 1
    assert invoices.show(store_settings, "INV-3").invoice.paid_minor == 400


def test_bad_input_and_database_guards(store_settings: Settings) -> None:
    with pytest.raises(ContractError, match="amount_due"):
        _invoice(store_settings, "INV-B", "10.001")
    with pytest.raises(ContractError, match="due_date"):
        invoices.create(store_settings, customer_id="c", amount_due="1", currency="USD", due_date="tomorrow")
    with pytest.raises(ContractError, match="status"):
        invoices.list_invoices(store_settings, status="Overdue")
    with pytest.raises(NotFound):
        invoices.show(store_settings, "INV-NOPE")
    _invoice(store_settings, "INV-G", "10.00")
    deliver(store_settings, "invoices", [processed(amount="4.00", invoice_id="INV-G")])
    eng = store.engine(store_settings)
    for sql in ["UPDATE invoices SET status = 'Paid'",  # status contradicting paid
                "UPDATE invoices SET paid_minor = 0, status = 'Open'",  # paid never decreases
                "UPDATE invoices SET paid_minor = 2000, status = 'Paid'",  # paid above due
                "UPDATE invoice_payments SET applied_minor = 1",
                "DELETE FROM invoice_payments", "DELETE FROM invoices"]:  # fmt: skip
        with pytest.raises(sa.exc.DBAPIError), eng.begin() as conn:
            conn.exec_driver_sql(sql)
    d = invoices.show(store_settings, "INV-G")
    assert (d.invoice.status, d.invoice.paid_minor) == ("Partially Paid", 400)


def test_invoice_created_while_its_payment_arrives_is_never_missed(store_settings: Settings) -> None:
    """An invoice being created and a payment for it being applied at the same moment: afterwards every
    payment is applied (none left waiting for an invoice that exists)."""
    import threading

    n = 12
    store.engine(store_settings)
    errors: list[BaseException] = []

    def create_all() -> None:
        try:
            for i in range(n):
                _invoice(store_settings, f"INV-RACE-{i}", "10.00")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def pay_all() -> None:
        try:
            for i in range(n):
                e = processed(amount="10.00", invoice_id=f"INV-RACE-{i}")
                for attempt in range(50):  # a transient fault: the runtime retries the batch
                    try:
                        deliver(store_settings, "invoices", [e])
                        break
                    except sa.exc.OperationalError:
                        if attempt == 49:
                            raise
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=create_all), threading.Thread(target=pay_all)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert invoices.unapplied(store_settings) == []
    assert {i.status for i in invoices.list_invoices(store_settings)} == {"Paid"}
    assert len(invoices.list_invoices(store_settings)) == n


def test_settle_is_pure_and_is_what_both_paths_use() -> None:
    """Issue #12: what a payment means for an invoice is decided by one pure function (no database), used by
    the event path (a single event is a batch of one) and by ``create`` for payments that waited."""
    import importlib

    core = importlib.import_module("payevents.services.invoices.core")
    inv = core.InvoiceState(invoice_id="INV-1", customer_id="cus_1", currency="USD", due_minor=1000, paid_minor=900)
    assert core.settle(None, "INV-1", "USD", 50).status == "unapplied"
    held = core.settle(inv, "INV-1", "EUR", 50)
    assert held.status == "held" and "currency mismatch" in (held.reason or "")
    over = core.settle(inv, "INV-1", "USD", 250)
    assert (over.status, over.applied_minor, over.credit_minor) == ("applied", 100, 150)
    assert over.reason == "overpayment: 1.50 USD credited to cus_1" and inv.paid_minor == 900  # nothing changed
    assert core.on_payment_processed.__doc__ and "batch of one" in core.on_payment_processed.__doc__


def test_a_batch_locks_the_invoices_it_names_with_one_statement(store_settings: Settings) -> None:
    """The batch reads (and on PostgreSQL locks until its commit) the invoices it names with one statement whose
    text does not depend on the batch (prepared once; it was an ``IN`` list of the batch's ids), and settles on
    what it read."""
    from payevents.services.invoices.core import on_payment_processed_batch

    for i in range(4):
        _invoice(store_settings, f"INV-L{i}", "10.00")
    eng = store.engine(store_settings)
    texts: list[list[str]] = []
    for names in (["INV-L0", "INV-L1"], ["INV-L2", "INV-L3", "INV-GHOST"]):
        statements: list[str] = []
        with eng.begin() as conn:
            sa.event.listen(conn, "before_cursor_execute", lambda *a, out=statements: out.append(a[2]))
            on_payment_processed_batch(conn, [(processed(amount="4.00", invoice_id=n), None) for n in names])
            if eng.dialect.name == "postgresql":  # the named invoices are locked until this transaction ends
                with eng.connect() as other, pytest.raises(sa.exc.OperationalError, match="could not obtain lock"):
                    other.exec_driver_sql("SELECT 1 FROM invoices WHERE invoice_id = %s FOR UPDATE NOWAIT",
                                          (names[0],))
        texts.append([s for s in statements if "FROM invoices" in s])
    assert [len(t) for t in texts] == [1, 1]
    if eng.dialect.name == "postgresql":
        assert texts[0] == texts[1]
    assert [invoices.show(store_settings, f"INV-L{i}").invoice.paid_minor for i in range(4)] == [400] * 4
    assert invoices.check(store_settings) == []


def test_an_invoice_the_service_names_can_be_paid(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """An invoice created without an id gets one the card guard never takes for a card number. It was ``INV-``
    and 16 hex digits of a random UUID, which hold 13–19 digits in a row that pass Luhn about once in 2,500
    (CI drew ``INV-F134594772494960``): such an invoice was stored, and a payment naming it was refused."""
    import uuid

    from payevents.contracts.cardguard import check_free_text
    from payevents.services import payments
    from payevents.services.payments import PaymentSpec

    drawn = iter([uuid.UUID("f1345947-7249-4960-8abc-def012345678")])
    real = uuid.uuid4
    monkeypatch.setattr(uuid, "uuid4", lambda: next(drawn, None) or real())
    invoice_id = invoices.create(settings, customer_id="cus_1", amount_due="99.99", currency="USD",
                                 due_date="2030-01-31").invoice.invoice_id
    check_free_text("invoice_id", invoice_id)
    [paid] = payments.process_payments(settings, [PaymentSpec(customer_id="cus_1", amount="99.99", currency="USD",
                                                              description="Order 1", invoice_id=invoice_id)])
    assert paid.state == "processed"
