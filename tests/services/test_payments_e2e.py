"""End to end, through the embedded log and through Kafka (Apache Kafka): payments completed in Payments
show up as balanced journal entries and Paid / Partially Paid invoices — via the outbox, the Relay and
the ConsumerRuntime of the Ledger and Invoices services — and a re-sent record changes nothing."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import pytest

from payevents.runtime.consumer import ConsumerRuntime
from payevents.runtime.outbox import list_events
from payevents.runtime.relay import Relay
from payevents.runtime.service import ServiceDef
from payevents.services import invoices, ledger, payments
from payevents.services.invoices.service import SERVICE as INVOICES
from payevents.services.ledger.service import SERVICE as LEDGER
from payevents.services.payments import store as payments_store
from payevents.settings import Settings
from payevents.transport import open_transport
from payevents.transport.base import Record


@dataclasses.dataclass(frozen=True)
class _FreshGroup(ServiceDef):
    """The same service under a consumer group of its own (the session's Kafka broker is shared)."""

    group_id: str = ""

    @property
    def group(self) -> str:
        return self.group_id


def _until(condition: Callable[[], bool], runtimes: list[ConsumerRuntime], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for rt in runtimes:
            rt.step()
        if condition():
            return
    raise AssertionError("the services did not apply the payments in time")


@pytest.mark.timeout(180)
def test_completed_payment_becomes_balanced_entry_and_paid_invoice(transport_settings: Settings, unique: str) -> None:
    s = transport_settings
    inv_full, inv_part = f"INV-E2E-{unique}-1", f"INV-E2E-{unique}-2"
    invoices.create(s, invoice_id=inv_full, customer_id="cus_e2e", amount_due="100.00", currency="USD",
                    due_date="2026-01-31")  # fmt: skip
    invoices.create(s, invoice_id=inv_part, customer_id="cus_e2e", amount_due="5000", currency="JPY",
                    due_date="2026-01-31")  # fmt: skip

    # one payment step by step, others through the batch path (one declined)
    p = payments.create(s, customer_id="cus_e2e", amount="100.00", currency="USD", description="Order E2E",
                        invoice_id=inv_full, order_id="ORD-E2E", idempotency_key=f"e2e-{unique}")  # fmt: skip
    payments.authorize(s, p.payment_id)
    payments.capture(s, p.payment_id)
    p = payments.complete(s, p.payment_id)
    batch = payments.process_payments(s, [
        payments.PaymentSpec(customer_id="cus_e2e", amount="2000", currency="JPY", description="Part 1",
                             invoice_id=inv_part),
        payments.PaymentSpec(customer_id="cus_e2e", amount="1000", currency="JPY", description="Part 2",
                             invoice_id=inv_part),
        payments.PaymentSpec(customer_id="cus_e2e", amount="9000", currency="JPY", description="Declined",
                             invoice_id=inv_part, last4="0002"),
    ])  # fmt: skip
    assert [b.state for b in batch] == ["processed", "processed", "failed"]
    processed_ids = [p.payment_id, batch[0].payment_id, batch[1].payment_id]

    with Relay(s) as relay:
        relay.ensure_topics()
        while relay.publish_pending():
            pass

    services = [_FreshGroup(**{f.name: getattr(svc, f.name) for f in dataclasses.fields(ServiceDef)},
                            group_id=f"{svc.group}.{unique}") for svc in (LEDGER, INVOICES)]  # fmt: skip
    runtimes = [ConsumerRuntime(s, svc, max_batch=200, poll_timeout=0.1) for svc in services]
    published = len(list_events(payments_store.engine(s), limit=10_000))
    try:
        def applied() -> bool:
            # every record read (a partition's records can come a poll after another's) and every effect there
            entries = [e for pid in processed_ids for e in ledger.journal(s, payment_id=pid)]
            return (all(rt.stats.consumed >= published for rt in runtimes) and len(entries) == 3
                    and invoices.show(s, inv_part).invoice.paid_minor == 3000
                    and invoices.show(s, inv_full).invoice.paid_minor == 10000)

        _until(applied, runtimes)
        [entry] = ledger.journal(s, payment_id=p.payment_id)
        assert [(ln.account, ln.side, ln.currency, ln.amount_minor) for ln in entry.lines] == [
            ("cash", "D", "USD", 10000), ("accounts_receivable", "C", "USD", 10000)]
        assert entry.event_id == p.events[-1].event_id
        full = invoices.show(s, inv_full)
        assert (full.invoice.status, full.invoice.paid_minor) == ("Paid", 10000)
        assert [x.payment_id for x in full.payments] == [p.payment_id]
        part = invoices.show(s, inv_part)
        assert (part.invoice.status, part.invoice.paid_minor) == ("Partially Paid", 3000)
        assert ledger.journal(s, payment_id=batch[2].payment_id) == []  # declined: nothing to post

        # the producer re-sends every record of the completed payment: the effects stay as they are
        rows = [r for r in list_events(payments_store.engine(s), limit=10_000) if r.payment_id == p.payment_id]
        transport = open_transport(s)
        try:
            producer = transport.producer()
            producer.send([Record(topic=r.topic, value=r.body, key=r.partition_key,
                                  headers=tuple((k, v.encode()) for k, v in r.headers.items())) for r in rows * 2])
            producer.close()
        finally:
            transport.close()
        # ledger and invoices handle PaymentProcessed only: its two copies are duplicates, the other types'
        # six records are passed over unread (ignored)
        ignored_before = [rt.stats.ignored for rt in runtimes]
        others = 2 * sum(1 for r in rows if r.event_type != "PaymentProcessed")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(rt.stats.consumed < published + 2 * len(rows) for rt in runtimes):
            for rt in runtimes:
                rt.step()
        assert [rt.stats.duplicates for rt in runtimes] == [2, 2]
        assert [rt.stats.ignored - before for rt, before in zip(runtimes, ignored_before, strict=True)] == [
            others, others]
        assert len(ledger.journal(s, payment_id=p.payment_id)) == 1
        assert invoices.show(s, inv_full).invoice.paid_minor == 10000
        report = ledger.verify(s)
        assert report.ok, report.violations
        assert ledger.balances(s).balanced
    finally:
        for rt in runtimes:
            rt.close()


def test_legacy_payment_processed_posts_to_the_ledger_and_is_not_an_invoice_matter(settings: Settings) -> None:
    """The channel page's sample event, built the way its code builds it, published with a plain producer."""
    import json
    from datetime import UTC, datetime

    from payevents.contracts.channel import topic_for

    legacy = {
        "eventType": "PAYMENT_PROCESSED",
        "timestamp": datetime.now(UTC).replace(tzinfo=None).isoformat(),
        "version": "1.0",
        "payload": {
            "paymentId": "PAY-123-456", "orderId": "ORD-789", "amount": {"value": 99.99, "currency": "USD"},
            "status": "SUCCESS",
            "paymentMethod": {"type": "CREDIT_CARD", "last4": "4242", "expiryMonth": "12", "expiryYear": "2025",
                              "network": "VISA"},
            "transactionDetails": {"processorId": "stripe_123xyz", "authorizationCode": "AUTH123",
                                   "captureId": "CAP456"},
        },
        "metadata": {"correlationId": "corr-123-abc", "merchantId": "MERCH-456", "source": "payment_service",
                     "environment": "prod", "idempotencyKey": "PAY-123-456-2024-11-11-99.99"},
    }  # fmt: skip
    transport = open_transport(settings)
    try:
        transport.create_topics([topic_for(settings.env), topic_for(settings.env) + ".dlq"], settings.partitions)
        producer = transport.producer()
        body = json.dumps(legacy).encode("utf-8")
        producer.send([Record(topic=topic_for(settings.env), value=body, key=b"PAY-123-456")] * 2)  # sent twice
        producer.close()
    finally:
        transport.close()
    runtimes = [ConsumerRuntime(settings, svc, max_batch=50, poll_timeout=0.1) for svc in (LEDGER, INVOICES)]
    try:
        _until(lambda: bool(ledger.journal(settings, payment_id="PAY-123-456")), runtimes, timeout=30)
        for rt in runtimes:
            rt.step()
        [entry] = ledger.journal(settings, payment_id="PAY-123-456")
        assert entry.legacy and [ln.amount_minor for ln in entry.lines] == [9999, 9999]
        assert invoices.unapplied(settings) == [] and invoices.list_invoices(settings) == []
        assert ledger.verify(settings).ok
    finally:
        for rt in runtimes:
            rt.close()
