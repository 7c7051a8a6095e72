"""``payevents demo``: the whole platform on one machine, showing itself working.

It starts the relay and the four consumer services as processes (:func:`payevents.runtime.runner.run_workers`),
seeds customers and invoices, drives a realistic mix of payments through the Payments service, publishes a few
events the way the channel page's sample producer does (the legacy envelope) and a few malformed records, waits
until every service has caught up, and prints a summary read back from the services' own stores.
"""

from __future__ import annotations

import dataclasses
import json
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from payevents.contracts.channel import dead_letter_topic_for, topic_for
from payevents.errors import PayeventsError
from payevents.settings import Settings

#: (currency, typical amounts) — 0, 2 and 3 decimal currencies
CURRENCIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("USD", ("19.99", "49.00", "99.99", "250.00", "1200.50")),
    ("EUR", ("15.00", "79.90", "310.25")),
    ("JPY", ("500", "3980", "12800")),
    ("KWD", ("12.500", "45.750", "130.125")),
)

CUSTOMERS: tuple[tuple[str, str, str | None, str], ...] = (
    ("cus_ada", "Ada Lovelace", "ada@example.com", "en_GB"),
    ("cus_grace", "Grace Hopper", "grace@example.com", "en_US"),
    ("cus_hiro", "Hiroshi Tanaka", "hiro@example.jp", "ja_JP"),
    ("cus_lena", "Lena Müller", "lena@example.de", "de_DE"),
    ("cus_omar", "Omar Al-Sabah", "omar@example.com.kw", "ar_KW"),
    ("cus_chloe", "Chloé Martin", "chloe@example.fr", "fr_FR"),
    ("cus_noemail", "Pat No-Mail", None, "en_US"),
)
#: a customer the Notifications directory does not know: its e-mails are skipped with the reason
UNKNOWN_CUSTOMER = "cus_unknown"

DECLINES = ("card_declined", "insufficient_funds", "expired_card", "fraud_suspected")
METHODS = (("credit_card", "4242"), ("debit_card", "1881"), ("credit_card", "0005"), ("wallet", "7731"))


@dataclasses.dataclass
class DemoResult:
    settings: Settings
    payments: int = 0
    processed: int = 0
    failed: int = 0
    events: int = 0
    legacy_published: int = 0
    malformed_published: int = 0
    seconds: float = 0.0
    delays: dict[str, float] = dataclasses.field(default_factory=dict)
    breaches: int = 0
    ledger_ok: bool = False
    ledger_violations: list[str] = dataclasses.field(default_factory=list)
    trial_balance: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    invoices_by_status: dict[str, int] = dataclasses.field(default_factory=dict)
    unapplied: int = 0
    credits: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    revenue: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    emails: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: reason -> services that dead-lettered a record for it (each service reads every record)
    dead_letters: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    lag: dict[str, int | None] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What the demo will do, decided up front from a seeded random generator."""

    invoices: list[dict[str, Any]]
    late_invoices: list[dict[str, Any]]
    specs: list[Any]
    open_then_fail: list[Any]


def _plan(n: int, seed: int, run: str) -> _Plan:
    """``run`` tags the invoices so that a demo run in a reused data directory starts fresh ones."""
    from payevents.services.payments import PaymentSpec

    rnd = random.Random(seed)
    today = datetime.now(UTC).date()
    due = (today + timedelta(days=30)).isoformat()
    invoices: list[dict[str, Any]] = []
    late: list[dict[str, Any]] = []
    specs: list[PaymentSpec] = []

    def spec(customer: str, amount: str, currency: str, *, invoice: str | None = None, decline: str | None = None,
             order: str | None = None) -> PaymentSpec:
        method, last4 = rnd.choice(METHODS)
        return PaymentSpec(customer_id=customer, amount=amount, currency=currency, method_type=method, last4=last4,
                           invoice_id=invoice, order_id=order, decline=decline, merchant_id=rnd.choice(
                               ("MERCH-456", "MERCH-789", "MERCH-123")),
                           description=f"Payment for {'invoice ' + invoice if invoice else 'order ' + (order or '-')}")

    # Several partial payments of one invoice: 300.00 USD = 100.00 + 120.50 + 79.50
    invoices.append({"invoice_id": f"INV-DEMO-PARTIAL-{run}", "customer_id": "cus_grace", "amount_due": "300.00",
                     "currency": "USD", "due_date": due, "description": "Annual plan, paid in instalments"})
    for amt in ("100.00", "120.50", "79.50"):
        specs.append(spec("cus_grace", amt, "USD", invoice=f"INV-DEMO-PARTIAL-{run}"))
    # One invoice left Partially Paid: 12,800 JPY, 5,000 paid
    invoices.append({"invoice_id": f"INV-DEMO-HALF-{run}", "customer_id": "cus_hiro", "amount_due": "12800",
                     "currency": "JPY", "due_date": due, "description": "Hardware order"})
    specs.append(spec("cus_hiro", "5000", "JPY", invoice=f"INV-DEMO-HALF-{run}"))
    # An overpayment: 45.750 KWD due, 50.000 KWD paid -> Paid + customer credit of 4.250 KWD
    invoices.append({"invoice_id": f"INV-DEMO-OVER-{run}", "customer_id": "cus_omar", "amount_due": "45.750",
                     "currency": "KWD", "due_date": due, "description": "Consulting"})
    specs.append(spec("cus_omar", "50.000", "KWD", invoice=f"INV-DEMO-OVER-{run}"))
    # A payment for an invoice that does not exist yet: unapplied, then applied when the invoice is created
    late.append({"invoice_id": f"INV-DEMO-LATE-{run}", "customer_id": "cus_lena", "amount_due": "79.90",
                 "currency": "EUR", "due_date": due, "description": "Invoice raised after the payment"})
    specs.append(spec("cus_lena", "79.90", "EUR", invoice=f"INV-DEMO-LATE-{run}"))
    # A currency mismatch: held for review
    invoices.append({"invoice_id": f"INV-DEMO-MISMATCH-{run}", "customer_id": "cus_chloe", "amount_due": "310.25",
                     "currency": "EUR", "due_date": due, "description": "Paid in the wrong currency"})
    specs.append(spec("cus_chloe", "310.25", "USD", invoice=f"INV-DEMO-MISMATCH-{run}"))
    # Payments of unknown and e-mail-less customers: processed, their e-mails skipped with a reason
    specs.append(spec(UNKNOWN_CUSTOMER, "19.99", "USD", order="ORD-UNKNOWN-1"))
    specs.append(spec("cus_noemail", "49.00", "USD", order="ORD-NOMAIL-1"))

    customers = [c[0] for c in CUSTOMERS if c[2]]
    k = 0
    while len(specs) < n:
        k += 1
        customer = rnd.choice(customers)
        currency, amounts = rnd.choice(CURRENCIES)
        amount = rnd.choice(amounts)
        roll = rnd.random()
        if roll < 0.08:  # declined by the gateway
            specs.append(spec(customer, amount, currency, decline=rnd.choice(DECLINES), order=f"ORD-{k:05d}"))
        elif roll < 0.45:  # pays its invoice in full
            inv = f"INV-{run}-{k:05d}"
            invoices.append({"invoice_id": inv, "customer_id": customer, "amount_due": amount, "currency": currency,
                             "due_date": due, "description": f"Order {k}"})
            specs.append(spec(customer, amount, currency, invoice=inv))
        else:  # no invoice: a card payment for an order
            specs.append(spec(customer, amount, currency, order=f"ORD-{k:05d}"))
    specs = specs[:n] if n >= 8 else specs
    # A few payments that stop half-way and are then failed (cancelled / authorization expired)
    open_then_fail = [spec("cus_ada", "99.99", "USD", order="ORD-CANCEL-1"),
                      spec("cus_lena", "15.00", "EUR", order="ORD-EXPIRE-1")]
    return _Plan(invoices, late, specs, open_then_fail)


def legacy_event(i: int, env: str, run: str = "0") -> dict[str, Any]:
    """An event exactly as the channel page's sample producer builds it (kafka-python, naive utcnow)."""
    amount = ("99.99", "45.50", "120.00")[i % 3]
    payment_id = f"PAY-LEGACY-{run}-{i:03d}"
    return {
        "eventType": "PAYMENT_PROCESSED",
        "timestamp": datetime.now(UTC).replace(tzinfo=None).isoformat(),
        "version": "1.0",
        "payload": {
            "paymentId": payment_id,
            "orderId": f"ORD-LEGACY-{run}-{i:03d}",
            "amount": {"value": float(amount), "currency": "USD"},
            "status": "SUCCESS",
            "paymentMethod": {"type": "CREDIT_CARD", "last4": "4242", "expiryMonth": "12", "expiryYear": "2025",
                              "network": "VISA"},
            "transactionDetails": {"processorId": f"stripe_{i:03d}xyz", "authorizationCode": f"AUTH{i:03d}",
                                   "captureId": f"CAP{i:03d}"},
        },
        "metadata": {
            "correlationId": f"corr-legacy-{i:03d}",
            "merchantId": "MERCH-456",
            "source": "payment_service",
            "environment": env,
            "idempotencyKey": f"{payment_id}-{datetime.now(UTC).date().isoformat()}-{amount}",
        },
    }


def malformed_records() -> list[tuple[str, bytes, bytes]]:
    """(what, key, value) of records that must land in the dead-letter channel."""
    from payevents.contracts.codec import to_builtins
    from payevents.contracts.examples import example_event

    enc = msgspec.json.Encoder(decimal_format="number")
    base = to_builtins(example_event("PaymentProcessed"))
    base["eventId"] = "0b9d3c43-3f4a-4c52-9c39-5b8a1f2f6e01"
    base["data"]["paymentId"] = "pay_bad_currency"
    base["data"]["amount"]["currency"] = "usd"
    card = to_builtins(example_event("PaymentProcessed"))
    card["eventId"] = "0b9d3c43-3f4a-4c52-9c39-5b8a1f2f6e02"
    card["data"]["paymentId"] = "pay_card_leak"
    card["data"]["metadata"]["description"] = "card 4111 1111 1111 1111 please"
    return [
        ("not JSON", b"pay_not_json", b'{"eventType": "PaymentProcessed", '),
        ("not UTF-8", b"pay_not_utf8", b"\xff\xfe\x00garbage"),
        ("lowercase currency", b"pay_bad_currency", enc.encode(base)),
        ("card number in description", b"pay_card_leak", enc.encode(card)),
    ]


def _publish_raw(settings: Settings, records: list[tuple[bytes, bytes]]) -> None:
    """Publish as a foreign producer would: our transport, but bytes we did not validate."""
    from payevents.transport import open_transport
    from payevents.transport.base import Record

    transport = open_transport(settings)
    try:
        topic = topic_for(settings.env)
        producer = transport.producer()
        try:
            producer.send([Record(topic=topic, key=k, value=v, headers=(("content-type", b"application/json"),))
                           for k, v in records])
        finally:
            producer.close()
    finally:
        transport.close()


def _judged_counts(settings: Settings) -> dict[str, int]:
    """Records of the channel each consumer service has judged — applied, ignored, passed over (a type it does
    not handle) or dead-lettered: the sum of its group's committed offsets over the channel's partitions."""
    from payevents.services import CONSUMER_SERVICES, load_service
    from payevents.transport import open_transport

    topic = topic_for(settings.env)
    transport = open_transport(settings)
    try:
        return {name: sum(transport.group_offsets(load_service(name).group, topic).values())
                for name in CONSUMER_SERVICES}
    finally:
        transport.close()


def run_demo(
    settings: Settings,
    *,
    payments: int = 200,
    seed: int = 7,
    progress: Callable[[str, int, int], None] | None = None,
    timeout: float = 300.0,
) -> DemoResult:
    """Run the demo and return its summary (the CLI prints it)."""
    from payevents.runtime.runner import expand, run_workers
    from payevents.services import invoices as inv
    from payevents.services import notifications as notif
    from payevents.services import payments as pay
    from payevents.store.db import dispose_engines, engine_for
    from payevents.transport import open_transport

    def tick(stage: str, done: int, total: int) -> None:
        if progress:
            progress(stage, done, total)

    started, started_at = time.monotonic(), time.time()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    result = DemoResult(settings=settings)
    transport = open_transport(settings)
    try:
        transport.create_topics([topic_for(settings.env), dead_letter_topic_for(settings.env)], settings.partitions)
    finally:
        transport.close()
    before = _judged_counts(settings)
    pay_engine = engine_for(settings, "payments")
    # make sure the payments store exists before counting its outbox
    pay.list_payments(settings, limit=1)
    with pay_engine.connect() as conn:
        events_before = int(conn.exec_driver_sql("SELECT COUNT(*) FROM outbox_events").scalar_one())
    dispose_engines()

    stop, ready = threading.Event(), threading.Event()
    exits: list[Any] = []
    log_file = settings.data_dir / "workers.log"
    workers = threading.Thread(
        target=lambda: exits.extend(run_workers(settings, expand(["all"]), stop=stop, ready=ready, report=False,
                                                log_file=str(log_file))),
        name="payevents-demo-workers", daemon=True)
    workers.start()
    try:
        tick("workers", 0, 1)
        if not ready.wait(timeout=120):
            raise PayeventsError(f"the relay and the services did not start within 120 s (see {log_file})")
        tick("workers", 1, 1)
        run = uuid.uuid4().hex[:6]
        plan = _plan(payments, seed, run)
        for c in CUSTOMERS:
            notif.add_customer(settings, c[0], c[1], c[2], c[3])
        for i, invoice in enumerate(plan.invoices, 1):
            inv.create(settings, **invoice)
            tick("invoices", i, len(plan.invoices))
        chunk = 50
        results: list[Any] = []
        for start in range(0, len(plan.specs), chunk):
            results.extend(pay.process_payments(settings, plan.specs[start:start + chunk]))
            tick("payments", len(results), len(plan.specs))
        for s in plan.open_then_fail:
            p = pay.create(settings, customer_id=s.customer_id, amount=s.amount, currency=s.currency,
                           method_type=s.method_type, last4=s.last4, description=s.description, order_id=s.order_id)
            p = pay.authorize(settings, p.payment_id)
            reason = ("cancelled", "Cancelled by the customer") if "CANCEL" in (s.order_id or "") else (
                "authorization_expired", "Authorization expired before capture")
            results.append(pay.fail(settings, p.payment_id, code=reason[0], reason=reason[1]))
        for invoice in plan.late_invoices:
            inv.create(settings, **invoice)
        legacy = [legacy_event(i, settings.env.value, run) for i in range(3)]
        _publish_raw(settings, [(e["payload"]["paymentId"].encode(), json.dumps(e).encode()) for e in legacy])
        bad = malformed_records()
        _publish_raw(settings, [(k, v) for _what, k, v in bad])
        result.legacy_published, result.malformed_published = len(legacy), len(bad)
        result.payments = len(results)
        result.processed = sum(1 for p in results if p.state == "processed")
        result.failed = sum(1 for p in results if p.state == "failed")
        with pay_engine.connect() as conn:
            result.events = int(conn.exec_driver_sql("SELECT COUNT(*) FROM outbox_events").scalar_one()) - events_before

        # wait until each service has judged every record this run put on the channel (its group's committed
        # offsets past them) and the e-mails are out
        expected = result.events + result.legacy_published + result.malformed_published
        deadline = time.monotonic() + timeout
        while True:
            counts = _judged_counts(settings)
            done = min(counts[s] - before.get(s, 0) for s in counts)
            tick("consumers", min(done, expected), expected)
            pending = notif.summary(settings).get("pending", 0)
            if done >= expected and not pending:
                break
            if any(e.exitcode not in (0, None) for e in exits) or not workers.is_alive():
                raise PayeventsError(f"a worker stopped early: {[(e.name, e.exitcode) for e in exits]}")
            if time.monotonic() > deadline:
                raise PayeventsError(f"the services did not catch up within {timeout:.0f}s: {counts}")
            time.sleep(0.2)
        # dead letters are produced before the offsets are committed; give the last ones a moment
        time.sleep(0.5)
    finally:
        stop.set()
        workers.join(timeout=60)
    result.seconds = time.monotonic() - started
    _summarize(settings, result, since=started_at)
    return result


def _summarize(settings: Settings, result: DemoResult, since: float) -> None:
    """Publish delays of this run's events; ledger, invoices, revenue, e-mails and dead letters as the stores
    hold them (a reused data directory adds up over runs)."""
    from payevents.runtime import deadletter, outbox
    from payevents.services import analytics, ledger
    from payevents.services import invoices as inv
    from payevents.services import notifications as notif
    from payevents.store.db import engine_for

    delays = outbox.published_delays(engine_for(settings, "payments"), since=since)
    if delays:
        pct = outbox.percentiles(delays, (0.5, 0.99))
        result.delays = {"p50": pct[0.5], "p99": pct[0.99], "max": max(delays), "count": float(len(delays))}
        result.breaches = sum(1 for d in delays if d > 5.0)
    report = ledger.verify(settings)
    result.ledger_ok = report.ok
    result.ledger_violations = [f"{v.rule}: {v.detail}" for v in report.violations]
    result.trial_balance = [_plain(c) for c in ledger.balances(settings).currencies]
    result.invoices_by_status = dict(Counter(i.status for i in inv.list_invoices(settings, limit=100_000)))
    result.unapplied = len(inv.unapplied(settings))
    result.credits = [_plain(c) for c in inv.credits(settings)]
    today = datetime.now(UTC).date()
    rows = analytics.report(settings, today - timedelta(days=31), today, by="month")
    result.revenue = [r.as_dict() for r in rows]
    result.emails = notif.summary(settings)
    letters = deadletter.list_dead_letters(settings, limit=10_000)
    by_reason: dict[str, list[str]] = {}
    for d in letters:
        by_reason.setdefault(d.reason, []).append(d.service)
    result.dead_letters = {reason: sorted(services) for reason, services in by_reason.items()}


def _plain(value: Any) -> dict[str, Any]:
    out = msgspec.to_builtins(value)
    return out if isinstance(out, dict) else {"value": out}


def money_str(minor: int, currency: str) -> str:
    from payevents.contracts.money import from_minor

    return f"{from_minor(minor, currency)} {currency}"


def as_json(result: DemoResult) -> dict[str, Any]:
    data = dataclasses.asdict(result)
    shown = result.settings.redacted()  # never a password
    data["settings"] = {k: shown[k] for k in ("env", "broker", "data_dir", "database_url")}
    return json.loads(json.dumps(data, default=str))

