"""The Ledger's and Invoices' batch handlers have the same effects as their per-event handlers.

Since issue #12 ("one place for every rule") this equivalence holds by construction: each service has ONE
path (``decide`` then a batched write), and the per-event handler is the batch handler called with a batch
of one. This test is therefore no longer needed to prove the two paths agree; it is kept only as a cheap
guard of the runtime's fallback (a batch that raises PoisonEvent is re-applied one event at a time and must
refuse the same events).

The same random sequence of batches (new payments in JPY/USD/KWD/CLF, replays of earlier events,
legacy events, unknown invoices created later, overpayments, currency mismatches, second completions of
a payment) is applied to two fresh stores the way the runtime does: per event, or through the batch
handler with the per-event fallback when it raises PoisonEvent. Afterwards the tables are identical
(apart from wall-clock timestamps) and the same events were refused."""

from __future__ import annotations

import random
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, event, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from money_helpers import message_for, processed

from payevents.contracts.codec import DecodedEvent
from payevents.errors import PoisonEvent
from payevents.services import invoices, load_service
from payevents.services.invoices import store as invoices_store
from payevents.services.ledger import store as ledger_store
from payevents.settings import Settings
from payevents.store.db import dispose_engines

CURRENCIES = {"JPY": 0, "USD": 2, "KWD": 3, "CLF": 4}
INVOICES = [(f"INV-{i}", cur, due) for i, (cur, due) in enumerate(
    [("USD", 10_000), ("JPY", 5_000), ("KWD", 12_345), ("CLF", 50_000), ("USD", 999), ("JPY", 1)])]

Op = tuple[str, Any]


def scenario(rnd: random.Random) -> list[Op]:
    """Batches of events and, in between, invoices created (some after payments for them arrived)."""
    ops: list[Op] = []
    sent: list[DecodedEvent] = []
    to_create = list(INVOICES)
    rnd.shuffle(to_create)
    for _ in range(rnd.randint(2, 7)):
        batch: list[DecodedEvent] = []
        for _ in range(rnd.randint(1, 25)):
            roll = rnd.random()
            if sent and roll < 0.15:
                batch.append(rnd.choice(sent))  # a replay of an earlier event
                continue
            if sent and roll < 0.18:  # a second completion of a payment: refused
                first = rnd.choice(sent)
                d = processed(amount=str(first.event.data.amount.value), currency=first.event.data.amount.currency,
                              payment_id=first.payment_id, invoice_id=rnd.choice(INVOICES)[0])
            else:
                cur = rnd.choice(list(CURRENCIES))
                minor = rnd.choice([1, rnd.randint(1, 3_000), rnd.randint(1, 60_000)])
                amount = str(Decimal(minor).scaleb(-CURRENCIES[cur]))
                if roll < 0.30:
                    d = processed(amount=amount, currency=cur, legacy=True)
                elif roll < 0.45:
                    d = processed(amount=amount, currency=cur)  # no invoice
                elif roll < 0.55:
                    d = processed(amount=amount, currency=cur, invoice_id="INV-NEVER")
                else:
                    inv, inv_cur, _ = rnd.choice(INVOICES)
                    d = processed(amount=amount, currency=inv_cur if rnd.random() < 0.85 else cur, invoice_id=inv)
            sent.append(d)
            batch.append(d)
        # the runtime hands a batch each eventId once (its seen marks); earlier batches are not filtered
        unique = list({d.event_id: d for d in reversed(batch)}.values())[::-1]
        ops.append(("batch", unique))
        if to_create and rnd.random() < 0.6:
            ops.append(("create", to_create.pop()))
    return ops


def apply(settings: Settings, service: str, ops: list[Op], *, batch: bool) -> tuple[list[str], int]:
    """Run ``ops``; returns the refused eventIds (in order) and how many batches the fast path applied."""
    svc = load_service(service)
    handler = svc.handlers["PaymentProcessed"]
    engine = (ledger_store if service == "ledger" else invoices_store).engine(settings)
    refused: list[str] = []
    fast = 0
    for kind, arg in ops:
        if kind == "create":
            if service == "invoices":
                inv, cur, due = arg
                invoices.create(settings, invoice_id=inv, customer_id=f"cus_{inv}", currency=cur,
                                amount_due=Decimal(due).scaleb(-CURRENCIES[cur]), due_date="2026-01-31")
            continue
        items = [(d, message_for(d, i)) for i, d in enumerate(arg)]
        with engine.begin() as conn:
            if batch:
                assert svc.batch_handler is not None
                try:
                    with conn.begin_nested():
                        svc.batch_handler(conn, items)
                    fast += 1
                    continue
                except PoisonEvent:
                    pass  # the runtime re-applies the batch per event
            for d, m in items:
                try:
                    with conn.begin_nested():
                        handler(conn, d, m)
                except PoisonEvent:
                    refused.append(d.event_id)
    return refused, fast


TABLES = {
    "ledger": [
        ("journal_entries", "entry_id, event_id, payment_id, kind, description, legacy, line_count, occurred_at,"
                            " corrects", "entry_id"),
        ("journal_lines", "*", "entry_id, line_no"),
        ("ledger_accounts", "code, currency, name, kind", "code, currency"),
    ],
    "invoices": [
        ("invoices", "invoice_id, customer_id, amount_due_minor, currency, due_date, description, paid_minor, status",
         "invoice_id"),
        ("invoice_payments", "event_id, payment_id, invoice_id, customer_id, amount_minor, currency, status,"
                             " applied_minor, credit_minor, reason, processed_at, applied_at IS NULL", "event_id"),
        ("customer_credits", "credit_id, customer_id, currency, amount_minor, source_event_id, payment_id, invoice_id",
         "credit_id"),
    ],
}


def tables(settings: Settings, service: str) -> dict[str, list[tuple[Any, ...]]]:
    engine = (ledger_store if service == "ledger" else invoices_store).engine(settings)
    with engine.connect() as conn:
        return {t: [tuple(r) for r in conn.execute(sa.text(f"SELECT {cols} FROM {t} ORDER BY {order}"))]
                for t, cols, order in TABLES[service]}


def check_equivalent(per_event: Settings, batched: Settings, service: str, ops: list[Op]) -> int:
    refused_a, _ = apply(per_event, service, ops, batch=False)
    refused_b, fast = apply(batched, service, ops, batch=True)
    assert refused_a == refused_b
    a, b = tables(per_event, service), tables(batched, service)
    assert a == b
    assert any(a.values())
    return fast


@pytest.mark.parametrize("service", ["ledger", "invoices"])
@hsettings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_batch_handler_equals_per_event_handler_sqlite(service: str, seed: int) -> None:
    ops = scenario(random.Random(seed))
    with tempfile.TemporaryDirectory() as tmp:
        try:
            fast = check_equivalent(Settings(env="dev", data_dir=Path(tmp) / "a"),  # type: ignore[arg-type]
                                    Settings(env="dev", data_dir=Path(tmp) / "b"),  # type: ignore[arg-type]
                                    service, ops)
        finally:
            dispose_engines()
    event(f"batches through the fast path: {'some' if fast else 'none'}")


@pytest.mark.parametrize("service", ["ledger", "invoices"])
def test_batch_handler_equals_per_event_handler_on_each_store(store_settings: Settings, service: str) -> None:
    fast = 0
    for seed in range(4):
        s = store_settings
        a = s.replace(data_dir=s.data_dir / f"a{seed}", db_schema_prefix=f"{s.db_schema_prefix}a{seed}_")
        b = s.replace(data_dir=s.data_dir / f"b{seed}", db_schema_prefix=f"{s.db_schema_prefix}b{seed}_")
        fast += check_equivalent(a, b, service, scenario(random.Random(seed)))
    assert fast > 0  # the fast path was exercised, not only its fallback
