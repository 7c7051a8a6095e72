"""Notifications' batch handler has the effects of its per-event handler: the same random stream
(duplicates, replays, legacy events, unknown customers, customers without e-mail, failed payments)
applied both ways records identical intents, and delivers identical e-mails."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import mailbox
import random
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from conftest_an import T0, consume_all, dump_tables, feed_like_runtime, legacy_envelope, lifecycle, processed, publish

from payevents.contracts.codec import DecodedEvent
from payevents.errors import PoisonEvent
from payevents.services import notifications
from payevents.services.notifications.handlers import INTENT_COLUMNS, handle_batch
from payevents.services.notifications.service import SERVICE
from payevents.settings import Settings
from payevents.store.db import connect

#: everything but the clock (created_at, next_attempt_ms: the batch takes one "now" for all its events)
COMPARED = tuple(c for c in INTENT_COLUMNS if c not in ("created_at", "next_attempt_ms"))
TABLES = {"notifications": (*COMPARED, "attempts"), "customers": ("customer_id", "name", "email", "locale")}
CUSTOMERS = [("cus_a", "Anna Müller", "anna@example.de", "de_DE"), ("cus_b", "Bob", "bob@example.com", "en_US"),
             ("cus_c", "Taro", "taro@example.jp", "ja_JP"), ("cus_nomail", "Nadia", None, "en_GB")]
CURRENCIES = {"USD": 2, "EUR": 2, "JPY": 0, "KWD": 3}


def random_stream(seed: int, payments: int = 150) -> list[DecodedEvent]:
    """Processed payments for known, unknown and mail-less customers, legacy ones without customerId, other
    lifecycle events (failed payments), every sixth event re-delivered soon after, then a replay of all."""
    rng = random.Random(seed)
    out: list[DecodedEvent] = []
    for i in range(payments):
        currency = rng.choice(list(CURRENCIES))
        value = str(Decimal(rng.randint(1, 10**6)).scaleb(-CURRENCIES[currency]))
        at = T0 - timedelta(days=rng.randint(0, 30), seconds=rng.randint(0, 86400))
        kind = rng.random()
        if kind < 0.1:
            out.append(processed(f"pay_{i}", value, currency, at=at, legacy=True, order_id=f"ORD-{i}"))
        elif kind < 0.2:
            out += lifecycle(f"pay_{i}", value, currency, at=at, fail=("card_declined", "Do not honor"))
        else:
            customer = rng.choice(["cus_a", "cus_b", "cus_c", "cus_nomail", "cus_ghost", f"cus_new_{i}"])
            out.append(processed(f"pay_{i}", value, currency, customer_id=customer, at=at,
                                 invoice_id=rng.choice([None, f"INV-{i}"]), order_id=rng.choice([None, f"ORD-{i}"]),
                                 method=rng.choice(["credit_card", "debit_card"]), last4=f"{rng.randint(0, 9999):04d}"))
        if i % 6 == 0:
            out.insert(rng.randint(max(0, len(out) - 10), len(out)), out[-1])
    return out + rng.sample(out, len(out))


def _other_store(settings: Settings) -> Settings:
    return settings.replace(data_dir=settings.data_dir.parent / "batch",
                            db_schema_prefix=f"{settings.db_schema_prefix}b_")


def _mails(settings: Settings) -> dict[str, tuple[str, ...]]:
    """Delivered mails by Message-ID: headers but Date, and the decoded bodies."""
    box = mailbox.Maildir(str(notifications.maildir_path(settings)), create=False)
    out = {}
    for key in box.keys():
        msg = email.message_from_bytes(box.get_bytes(key), policy=email.policy.default)
        bodies = tuple(str(part.get_content()) for part in msg.walk() if not part.is_multipart())
        out[str(msg["Message-ID"])] = (msg["To"], msg["Subject"], msg["From"], *bodies)
    return out


@pytest.mark.parametrize("seed", [1, 2])
def test_batch_equals_per_event(store_settings: Settings, seed: int) -> None:
    events = random_stream(seed)
    per_event, batched = store_settings, _other_store(store_settings)
    for s in (per_event, batched):
        for c in CUSTOMERS:
            notifications.add_customer(s, *c)
    assert not feed_like_runtime(per_event, SERVICE, events, batch=17, use_batch=False)
    assert not feed_like_runtime(batched, SERVICE, events, batch=71, use_batch=True)

    tables = dump_tables(per_event, SERVICE, TABLES)
    assert tables == dump_tables(batched, SERVICE, TABLES)
    expected = {e.event_id for e in events if e.event_type == "PaymentProcessed"}
    assert {r[0] for r in tables["notifications"]} == expected
    summary = notifications.summary(batched)
    assert summary == notifications.summary(per_event)
    assert set(summary["reasons"]["skipped"]) == {"no_customer_id", "no_email", "unknown_customer"}
    assert summary["pending"] > 0

    # a replay from the beginning, in batches, records nothing new
    feed_like_runtime(batched, SERVICE, events, batch=500, use_batch=True)
    assert dump_tables(batched, SERVICE, TABLES) == tables

    # and both deliver the same e-mails (but the Date: the intents' creation times differ)
    for s in (per_event, batched):
        while notifications.deliver_pending(s, limit=60).claimed:
            pass
    mails = _mails(batched)
    assert len(mails) == summary["pending"] and mails == _mails(per_event)


def test_batch_looks_customers_up_once_and_rejects_other_events(settings: Settings) -> None:
    notifications.add_customer(settings, "cus_a", "Anna", "anna@example.de", "de_DE")
    engine = connect(settings, SERVICE.name, SERVICE.migrations)
    statements: list[str] = []
    batch = [processed(f"p{i}", "1.00", "EUR", customer_id=["cus_a", "cus_x"][i % 2]) for i in range(1200)]
    with engine.begin() as conn:
        import sqlalchemy as sa

        sa.event.listen(conn, "before_cursor_execute", lambda *a: statements.append(a[2]))
        handle_batch(conn, [(d, None) for d in batch])  # type: ignore[misc]
    assert len(statements) == 2  # one customer lookup (two distinct ids), one executemany
    assert notifications.summary(settings)["pending"] == 600

    failed = lifecycle("p_f", "1.00", "EUR", fail=("card_declined", "Do not honor"))[-1]
    with pytest.raises(PoisonEvent, match="PaymentFailed"), engine.begin() as conn:
        handle_batch(conn, [(processed("p_new", "2.00", "EUR", customer_id="cus_a"), None), (failed, None)])  # type: ignore[list-item]
    assert len(notifications.list_notifications(settings, limit=2000)) == 1200


def test_batch_customer_lookup_is_one_statement_whatever_the_batch(store_settings: Settings) -> None:
    """One customer lookup per batch; on PostgreSQL its text does not depend on the batch's ids (one prepared
    statement, not a new ``IN`` list of the batch's size to parse and plan every batch), and it finds the same
    customers."""
    import sqlalchemy as sa

    for c in CUSTOMERS:
        notifications.add_customer(store_settings, *c)
    engine = connect(store_settings, SERVICE.name, SERVICE.migrations)
    lookups: list[list[str]] = []
    for n, batch_no in ((3, 0), (7, 1)):
        ids = ["cus_a", "cus_b", "cus_nomail", *[f"cus_ghost{i}" for i in range(n)]]
        batch = [processed(f"p{batch_no}_{i}", "1.00", "EUR", customer_id=c) for i, c in enumerate(ids)]
        statements: list[str] = []
        with engine.begin() as conn:
            sa.event.listen(conn, "before_cursor_execute", lambda *a, out=statements: out.append(a[2]))
            handle_batch(conn, [(d, None) for d in batch])  # type: ignore[misc]
        lookups.append([s for s in statements if "customers" in s])
    assert [len(x) for x in lookups] == [1, 1]
    if engine.dialect.name == "postgresql":
        assert lookups[0] == lookups[1]
    rows = dump_tables(store_settings, SERVICE, TABLES)["notifications"]
    recipients = {r[0]: r[COMPARED.index("recipient")] for r in rows}
    assert sorted(r for r in recipients.values() if r) == sorted(["anna@example.de", "bob@example.com"] * 2)
    assert len(rows) == 6 + 10


def test_runtime_with_batch_handler_equals_per_event(settings: Settings) -> None:
    """Through the consumer runtime (its dedup, its batches), with and without the batch handler."""
    events = [e for e in random_stream(3, payments=60) if not e.legacy]  # legacy: as envelopes below
    per_event, batched = settings, _other_store(settings)
    for s in (per_event, batched):
        for c in CUSTOMERS:
            notifications.add_customer(s, *c)
        publish(s, events)
        publish(s, [legacy_envelope("PAY-L1", "99.99")] * 2, keys=["PAY-L1"] * 2)
    a = consume_all(per_event, dataclasses.replace(SERVICE, batch_handler=None), max_batch=40)
    calls: list[int] = []

    def batch_handler(conn: Any, batch: Any) -> None:
        assert SERVICE.batch_handler is not None
        SERVICE.batch_handler(conn, batch)
        calls.append(len(batch))  # only when it did not raise (no per-event fallback)

    b = consume_all(batched, dataclasses.replace(SERVICE, batch_handler=batch_handler), max_batch=40)
    assert sum(calls) == b.applied and len(calls) > 1
    assert (a.applied, a.ignored, a.duplicates) == (b.applied, b.ignored, b.duplicates)
    assert b.duplicates > 0 and b.ignored > 0 and b.dead_lettered == 0
    tables = dump_tables(batched, SERVICE, TABLES)
    assert dump_tables(per_event, SERVICE, TABLES) == tables
    assert notifications.summary(per_event) == notifications.summary(batched)


def test_claim_tokens_are_indexed_only_while_an_intent_is_claimed(store_settings: Settings) -> None:
    """The claim token is set only while a delivery pass holds an intent (every mark clears it), so its index holds
    the intents in flight only (notifications migration 2: no entry for each intent inserted and each version a mark
    writes), and a pass's read of its claimed intents by token still goes through that index."""
    from conftest_an import feed

    from payevents.services.notifications.store import engine

    notifications.add_customer(store_settings, "cus_a", "Ann", "ann@example.com", "en_US")
    feed(store_settings, SERVICE, [processed(f"pay_{i}", "10.00", "EUR", customer_id="cus_a") for i in range(20)])
    assert notifications.deliver_pending(store_settings, 100).sent == 20
    eng = engine(store_settings)
    with eng.connect() as conn:
        if eng.dialect.name == "postgresql":
            definition = conn.exec_driver_sql(
                "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema()"
                " AND indexname = 'ix_notifications_claim'").scalar_one()
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")  # a table this small would be scanned anyway
            plan = "\n".join(conn.exec_driver_sql(
                "EXPLAIN SELECT event_id FROM notifications WHERE claim_token = 'tok'").scalars())
        else:
            definition = conn.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE name = 'ix_notifications_claim'").scalar_one()
            plan = "\n".join(str(r[-1]) for r in conn.exec_driver_sql(
                "EXPLAIN QUERY PLAN SELECT event_id FROM notifications WHERE claim_token = 'tok'"))
        in_flight = conn.exec_driver_sql(
            "SELECT COUNT(*) FROM notifications WHERE claim_token IS NOT NULL").scalar_one()
    assert "claim_token IS NOT NULL" in definition
    assert "ix_notifications_claim" in plan
    assert in_flight == 0
