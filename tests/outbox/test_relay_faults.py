"""Publishing faults (issue #11): records refused for good are set aside and the relay goes on; one relay
per outbox; PostgreSQL isolation set explicitly."""

from __future__ import annotations

import logging
import threading
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import sqlalchemy as sa
from outbox_helpers import append_one, headers_for, read_channel, wait_until
from prometheus_client import REGISTRY
from sqlalchemy.engine import Engine

from payevents.contracts.channel import topic_for
from payevents.contracts.events import (
    Amount,
    PaymentMethod,
    PaymentProcessed,
    PaymentProcessedData,
    ProcessedMetadata,
)
from payevents.runtime import outbox
from payevents.runtime.outbox import OUTBOX_MIGRATIONS, append, pending_count
from payevents.runtime.relay import Relay
from payevents.settings import Settings
from payevents.store.db import connect
from payevents.transport import open_transport
from payevents.transport.base import Record, RecordsRefused

BIG = 1_200_000  # over the producer's default message.max.bytes (1,000,000) on Kafka and on the embedded log


def _set_aside_total(cause: str) -> float:
    return REGISTRY.get_sample_value("payevents_relay_set_aside_total", {"cause": cause}) or 0.0


def big_event(payment_id: str, size: int = BIG) -> PaymentProcessed:
    return PaymentProcessed(
        eventId=str(uuid.uuid4()), eventType="PaymentProcessed", timestamp=datetime.now(UTC), version="1.0.0",
        data=PaymentProcessedData(
            paymentId=payment_id, amount=Amount(value=Decimal("10.00"), currency="USD"),
            paymentMethod=PaymentMethod(type="card", last4="4242"), processedAt=datetime(2024, 5, 1, tzinfo=UTC),
            transactionId="txn-big", customerId="cust-1", gatewayReference="gw-big",
            metadata=ProcessedMetadata(description="x" * size, orderId="ord-1")),
    )


def _append_big(engine: Engine, payment_id: str, key: str) -> str:
    event = big_event(payment_id)
    with engine.begin() as conn:
        append(conn, event, headers=headers_for(key, payment_id), idempotency_key=key, env="dev")
    return event.eventId


def _drain(relay: Relay, engine: Engine) -> None:
    for _ in range(20):
        relay.publish_pending()
        if pending_count(engine) == 0:
            return
    raise AssertionError(f"{pending_count(engine)} events still pending")


def test_a_record_too_large_is_set_aside_and_the_others_are_published(transport_settings: Settings) -> None:
    engine = connect(transport_settings, "payments", OUTBOX_MIGRATIONS)
    tag = uuid.uuid4().hex[:8]
    before = append_one(engine, f"pay-a-{tag}", f"a-{tag}").event_id
    big = _append_big(engine, f"pay-b-{tag}", f"b-{tag}")
    behind = append_one(engine, f"pay-b-{tag}", f"c-{tag}").event_id  # same payment, behind the refused one
    counted = _set_aside_total("too_large")
    with Relay(transport_settings, engine=engine) as relay:
        relay.ensure_topics()
        _drain(relay, engine)
        assert relay.set_aside == 1
        on_channel = {m.header("eventId") for m in read_channel(relay.transport, topic_for("dev"))}
    assert {before, behind} <= on_channel and big not in on_channel
    assert _set_aside_total("too_large") == counted + 1
    [aside] = outbox.list_set_aside(engine)
    assert aside.event_id == big and aside.waiting and aside.times == 1 and aside.size > BIG
    assert "message.max.bytes" in aside.reason or "too large" in aside.reason.lower(), aside.reason
    stored = outbox.get_event(engine, big)  # never dropped: the immutable row is still there, unpublished
    assert stored is not None and not stored.published
    assert outbox.set_aside_count(engine) == 1


def test_resend_puts_it_back_and_a_new_refusal_sets_it_aside_again(transport_settings: Settings) -> None:
    engine = connect(transport_settings, "payments", OUTBOX_MIGRATIONS)
    big = _append_big(engine, "pay-resend", f"r-{uuid.uuid4().hex[:8]}")
    with Relay(transport_settings, engine=engine) as relay:
        relay.ensure_topics()
        _drain(relay, engine)
        [aside] = outbox.list_set_aside(engine)
        assert outbox.resend(engine, [aside.seq + 1000]) == []  # not set aside: ignored
        assert outbox.resend(engine, [aside.seq]) == [aside.seq]
        assert pending_count(engine) == 1 and outbox.list_set_aside(engine) == []
        assert outbox.resend(engine, [aside.seq]) == []  # already re-sent: nothing happens twice
        _drain(relay, engine)
    [again] = outbox.list_set_aside(engine)
    assert again.event_id == big and again.times == 2 and again.waiting
    assert [r.resent_at is None for r in outbox.list_set_aside(engine, include_resent=True)] == [True]


def test_after_the_limit_is_raised_a_resent_record_is_published(settings: Settings) -> None:
    engine = connect(settings, "payments", OUTBOX_MIGRATIONS)
    big = _append_big(engine, "pay-fixed", "fixed-1")
    with Relay(settings, engine=engine) as relay:
        relay.ensure_topics()
        _drain(relay, engine)
    assert [a.event_id for a in outbox.list_set_aside(engine)] == [big]
    raised = settings.replace(kafka_config={"message.max.bytes": str(4 * BIG)})
    assert outbox.resend(engine) == [outbox.list_set_aside(engine, include_resent=True)[0].seq]
    with Relay(raised, engine=engine) as relay:
        _drain(relay, engine)
        assert big in {m.header("eventId") for m in read_channel(relay.transport, topic_for("dev"))}
    stored = outbox.get_event(engine, big)
    assert stored is not None and stored.published and outbox.set_aside_count(engine) == 0


def test_producers_refuse_invalid_topic_names_and_too_large_records_and_send_the_rest(
        transport_settings: Settings) -> None:
    t = open_transport(transport_settings)
    try:
        t.create_topics([topic_for("dev")], transport_settings.partitions)
        p = t.producer()
        good = Record(topic_for("dev"), b'{"ok": 1}', key=b"k")
        with pytest.raises(RecordsRefused) as err:
            p.send([Record("payments dev events!", b"{}", key=b"k"), good,
                    Record(topic_for("dev"), b"x" * BIG, key=b"k"), good])
        p.close()
    finally:
        t.close()
    assert sorted(err.value.refused) == [0, 2]
    assert "topic" in err.value.refused[0]
    assert [d is not None for d in err.value.deliveries] == [False, True, False, True]


# -- one relay per outbox ----------------------------------------------------------------------------------


def test_a_second_relay_waits_and_says_so(outbox_engine: Engine, store_settings: Settings,
                                         caplog: pytest.LogCaptureFixture) -> None:
    append_one(outbox_engine, "pay-lock", "lock-1")
    first = Relay(store_settings, engine=outbox_engine)
    first.ensure_topics()
    assert first.publish_pending() == 1
    append_one(outbox_engine, "pay-lock", "lock-2")
    second = Relay(store_settings, engine=outbox_engine)
    caplog.set_level(logging.INFO, logger="payevents.relay")
    assert second.publish_pending() == 0 and pending_count(outbox_engine) == 1  # waits: publishes nothing
    assert any("relay waiting" in r.getMessage() for r in caplog.records)
    stop = threading.Event()
    worker = threading.Thread(target=second.run, args=(stop,), kwargs={"create_topics": False}, daemon=True)
    worker.start()
    try:
        wait_until(lambda: REGISTRY.get_sample_value("payevents_relay_waiting_for_lock") == 1.0, 30,
                   "the second relay to wait for the lock")
        assert pending_count(outbox_engine) == 1
        first.close()  # the first relay stops: the second takes over
        wait_until(lambda: pending_count(outbox_engine) == 0, 30, "the second relay to publish")
        assert any("took over" in r.getMessage() for r in caplog.records)
    finally:
        stop.set()
        worker.join(10)
        second.close()


# -- PostgreSQL isolation ------------------------------------------------------------------------------------


def test_postgresql_outbox_transactions_run_read_committed_whatever_the_server_default(
        pg_settings: Settings) -> None:
    engine = connect(pg_settings, "payments", OUTBOX_MIGRATIONS)
    with engine.connect() as conn:
        conn.exec_driver_sql("SET SESSION default_transaction_isolation = 'serializable'")
        conn.commit()
        with conn.begin():
            level = conn.exec_driver_sql("SHOW transaction_isolation").scalar_one()
        conn.exec_driver_sql("RESET default_transaction_isolation")
        conn.commit()
    assert level == outbox.ISOLATION_LEVEL.lower()


def test_retry_serialization_retries_then_answers_a_transient_error() -> None:
    import psycopg

    calls: list[int] = []

    def conflicting() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise sa.exc.OperationalError("UPDATE x", {}, psycopg.errors.SerializationFailure("could not serialize"))
        return "done"

    assert outbox.retry_serialization(conflicting, base_delay=0) == "done" and len(calls) == 3

    def always() -> str:
        raise sa.exc.OperationalError("UPDATE x", {}, psycopg.errors.DeadlockDetected("deadlock detected"))

    from payevents.errors import TransientError

    with pytest.raises(TransientError, match="40P01"):
        outbox.retry_serialization(always, attempts=3, base_delay=0)

    def other() -> str:
        raise sa.exc.OperationalError("UPDATE x", {}, psycopg.errors.UndefinedTable("nope"))

    with pytest.raises(sa.exc.OperationalError):
        outbox.retry_serialization(other, base_delay=0)


# -- the CLI ------------------------------------------------------------------------------------------------


def test_cli_lists_set_aside_records_and_resends_them_deliberately(settings: Settings) -> None:
    import json

    from typer.testing import CliRunner

    from payevents.faces.cli import app

    engine = connect(settings, "payments", OUTBOX_MIGRATIONS)
    big = _append_big(engine, "pay-cli", "cli-1")
    with Relay(settings, engine=engine) as relay:
        relay.ensure_topics()
        _drain(relay, engine)
    common = ["--env", "dev", "--data-dir", str(settings.data_dir)]
    runner = CliRunner()
    listed = runner.invoke(app, ["outbox", "set-aside", "--json", *common])
    assert listed.exit_code == 0, listed.output
    [row] = json.loads(listed.output)
    assert row["event_id"] == big and row["waiting"] and "message.max.bytes" in row["reason"]
    table = runner.invoke(app, ["outbox", "set-aside", *common])
    assert table.exit_code == 0 and str(row["seq"]) in table.output and "set aside by the relay (1)" in table.output
    refused = runner.invoke(app, ["outbox", "resend", *common])
    assert refused.exit_code != 0 and pending_count(engine) == 0  # nothing named: nothing re-sent
    done = runner.invoke(app, ["outbox", "resend", str(row["seq"]), *common])
    assert done.exit_code == 0 and f"outbox seq {row['seq']}: back to pending" in done.output, done.output
    assert pending_count(engine) == 1
    assert json.loads(runner.invoke(app, ["outbox", "set-aside", "--json", *common]).output) == []


def test_set_aside_and_resend_on_both_databases(outbox_engine: Engine, store_settings: Settings) -> None:
    ok = append_one(outbox_engine, "pay-db", "db-1").event_id
    big = _append_big(outbox_engine, "pay-db", "db-2")
    with Relay(store_settings, engine=outbox_engine) as relay:
        relay.ensure_topics()
        _drain(relay, outbox_engine)
        [aside] = outbox.list_set_aside(outbox_engine)
        assert aside.event_id == big and outbox.resend(outbox_engine) == [aside.seq]
        _drain(relay, outbox_engine)
    [again] = outbox.list_set_aside(outbox_engine)
    assert again.times == 2 and again.waiting
    first = outbox.get_event(outbox_engine, ok)
    assert first is not None and first.published
