"""append(): one event per idempotency key, immutable rows, publish status kept apart."""

from __future__ import annotations

import uuid

import orjson
import pytest
import sqlalchemy as sa
from outbox_helpers import append_one, headers_for, processed_event
from sqlalchemy.engine import Engine

from payevents.contracts.channel import topic_for
from payevents.errors import ContractError, IdempotencyConflict
from payevents.runtime.audit import verify_engine
from payevents.runtime.outbox import (
    OUTBOX_MIGRATIONS,
    OutboxItem,
    append,
    append_many,
    events_for_payment,
    get_event,
    pending_count,
)
from payevents.settings import Settings
from payevents.store.db import connect


def test_append_stores_event_with_headers_and_chain(outbox_engine: Engine) -> None:
    pid = f"pay-{uuid.uuid4()}"
    first = append_one(outbox_engine, pid, "k1")
    second = append_one(outbox_engine, pid, "k2", amount="7.00")
    assert first.created and second.created
    assert second.seq == first.seq + 1
    stored = events_for_payment(outbox_engine, pid)
    assert [e.event_id for e in stored] == [first.event_id, second.event_id]
    ev = stored[0]
    assert ev.topic == topic_for("dev") == "payments.dev.events"
    assert ev.partition_key == pid.encode()
    assert ev.headers["eventId"] == first.event_id
    assert ev.headers["eventType"] == "PaymentProcessed" and ev.headers["version"] == "1.0.0"
    assert ev.headers["content-type"] == "application/json"
    assert ev.headers["idempotencyKey"] == "k1" and ev.headers["correlationId"] == pid
    assert orjson.loads(ev.body)["eventId"] == first.event_id
    assert stored[1].prev_hash == stored[0].hash != stored[1].hash
    assert not ev.published and pending_count(outbox_engine) == 2


def test_same_key_same_content_returns_first_event(outbox_engine: Engine) -> None:
    pid = f"pay-{uuid.uuid4()}"
    first = append_one(outbox_engine, pid, "same-key")
    # A retried command builds a new envelope (new eventId, new timestamp) around the same data.
    again = append_one(outbox_engine, pid, "same-key")
    assert again.created is False
    assert (again.event_id, again.seq) == (first.event_id, first.seq)
    assert len(events_for_payment(outbox_engine, pid)) == 1
    assert pending_count(outbox_engine) == 1


def test_same_key_different_content_conflicts(outbox_engine: Engine) -> None:
    pid = f"pay-{uuid.uuid4()}"
    first = append_one(outbox_engine, pid, "conflict-key")
    with pytest.raises(IdempotencyConflict, match="conflict-key"):
        append_one(outbox_engine, pid, "conflict-key", amount="99.99")
    assert [e.event_id for e in events_for_payment(outbox_engine, pid)] == [first.event_id]
    assert get_event(outbox_engine, first.event_id) is not None


def test_append_rolls_back_with_callers_transaction(outbox_engine: Engine) -> None:
    pid = f"pay-{uuid.uuid4()}"
    with pytest.raises(RuntimeError), outbox_engine.begin() as conn:
        append(conn, processed_event(pid), headers=headers_for("rb", pid), idempotency_key="rb", env="dev")
        raise RuntimeError("the payment update failed")
    assert events_for_payment(outbox_engine, pid) == []
    assert pending_count(outbox_engine) == 0
    # The chain head was rolled back too: the next append continues the chain from seq 1.
    assert append_one(outbox_engine, pid, "rb").seq == 1


def test_append_requires_audit_headers(outbox_engine: Engine) -> None:
    pid = f"pay-{uuid.uuid4()}"
    headers = headers_for("hk", pid)
    del headers["correlationId"]
    with pytest.raises(ContractError, match=r"headers\.correlationId"), outbox_engine.begin() as conn:
        append(conn, processed_event(pid), headers=headers, idempotency_key="hk", env="dev")
    with pytest.raises(ContractError, match="env"), outbox_engine.begin() as conn:
        append(conn, processed_event(pid), headers=headers_for("hk", pid), idempotency_key="hk", env="production")


@pytest.mark.parametrize("statement", [
    "UPDATE outbox_events SET body = :b WHERE seq = 1",
    "UPDATE outbox_events SET payment_id = 'other' WHERE seq = 1",
    "DELETE FROM outbox_events WHERE seq = 1",
])
def test_database_refuses_update_and_delete_of_events(outbox_engine: Engine, statement: str) -> None:
    pid = f"pay-{uuid.uuid4()}"
    append_one(outbox_engine, pid, "imm")
    before = events_for_payment(outbox_engine, pid)
    with pytest.raises(sa.exc.DatabaseError, match="outbox_events is immutable"), outbox_engine.begin() as conn:
        conn.execute(sa.text(statement), {"b": b"{}"} if ":b" in statement else {})
    assert events_for_payment(outbox_engine, pid) == before


def test_postgresql_refuses_truncate(pg_settings: Settings) -> None:
    """TRUNCATE exists on PostgreSQL only (SQLite has no such statement), so this runs there alone."""
    outbox_engine = connect(pg_settings, "payments", OUTBOX_MIGRATIONS)
    append_one(outbox_engine, "pay-t", "trunc")
    with pytest.raises(sa.exc.DatabaseError, match="outbox_events is immutable"), outbox_engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE outbox_events")
    assert pending_count(outbox_engine) == 1


def test_append_many_batches_with_the_same_rules(outbox_engine: Engine) -> None:
    pid = f"pay-{uuid.uuid4()}"
    stored = append_one(outbox_engine, pid, "many-0")
    items = [OutboxItem(processed_event(pid), headers_for("many-0", pid), "many-0")]  # replay of a stored key
    items += [OutboxItem(processed_event(pid, amount=f"{i}.00"), headers_for(f"many-{i}", pid), f"many-{i}")
              for i in range(1, 4)]
    items.append(OutboxItem(processed_event(pid, amount="2.00"), headers_for("many-2", pid), "many-2"))  # repeat
    with outbox_engine.begin() as conn:
        results = append_many(conn, items, env="dev")
    assert [r.created for r in results] == [False, True, True, True, False]
    assert results[0].event_id == stored.event_id and results[4].event_id == results[2].event_id
    assert [r.seq for r in results[1:4]] == [stored.seq + 1, stored.seq + 2, stored.seq + 3]
    assert [e.event_id for e in events_for_payment(outbox_engine, pid)] == [stored.event_id] + [
        r.event_id for r in results[1:4]]
    assert verify_engine(outbox_engine).ok

    clash = [OutboxItem(processed_event(pid, amount="5.00"), headers_for("many-5", pid), "many-5"),
             OutboxItem(processed_event(pid, amount="6.00"), headers_for("many-5", pid), "many-5")]
    with pytest.raises(IdempotencyConflict, match="many-5"), outbox_engine.begin() as conn:
        append_many(conn, clash, env="dev")
    assert pending_count(outbox_engine) == 4  # the conflicting batch wrote nothing
