"""audit verify: tampering with stored events (triggers dropped by an attacker) is detected."""

from __future__ import annotations

import uuid

import orjson
import pytest
import sqlalchemy as sa
from outbox_helpers import append_one
from sqlalchemy.engine import Engine

from payevents.runtime.audit import verify, verify_engine
from payevents.runtime.outbox import chain_hash
from payevents.settings import Settings
from payevents.store.db import engine_for


def _fill(engine: Engine, n: int = 6) -> list[str]:
    return [append_one(engine, f"pay-{i % 3}", f"audit-{uuid.uuid4()}", amount=f"{10 + i}.00").event_id
            for i in range(n)]


def _drop_triggers(conn: sa.Connection) -> None:
    for name in ("outbox_events_no_update", "outbox_events_no_delete"):
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"DROP TRIGGER {name} ON outbox_events")
        else:
            conn.exec_driver_sql(f"DROP TRIGGER {name}")


def test_intact_chain_verifies(outbox_engine: Engine, store_settings: Settings) -> None:
    empty = verify_engine(outbox_engine)
    assert empty.ok and empty.checked == 0
    _fill(outbox_engine)
    report = verify(store_settings)
    assert engine_for(store_settings, "payments") is outbox_engine
    assert report.ok, report.reason
    assert (report.checked, report.first_broken_seq) == (6, None)


def test_edited_body_is_detected(outbox_engine: Engine) -> None:
    _fill(outbox_engine)
    with outbox_engine.begin() as conn:
        _drop_triggers(conn)
        body = orjson.loads(conn.exec_driver_sql("SELECT body FROM outbox_events WHERE seq = 4").scalar_one())
        body["data"]["amount"]["value"] = 1_000_000
        conn.execute(sa.text("UPDATE outbox_events SET body = :b WHERE seq = 4"), {"b": orjson.dumps(body)})
    report = verify_engine(outbox_engine)
    assert not report.ok
    assert (report.first_broken_seq, report.checked) == (4, 3)
    assert "edited" in report.reason


def test_edit_with_recomputed_hash_breaks_the_next_link(outbox_engine: Engine) -> None:
    _fill(outbox_engine)
    with outbox_engine.begin() as conn:
        _drop_triggers(conn)
        row = conn.exec_driver_sql("SELECT * FROM outbox_events WHERE seq = 2").one()._asdict()
        row["payment_id"] = "pay-attacker"
        new_hash = chain_hash(row["prev_hash"], row)
        conn.execute(sa.text("UPDATE outbox_events SET payment_id = 'pay-attacker', hash = :h WHERE seq = 2"),
                     {"h": new_hash})
    report = verify_engine(outbox_engine)
    assert not report.ok and report.first_broken_seq == 3
    assert "prev_hash" in report.reason


@pytest.mark.parametrize(("seq", "expected"), [(3, 3), (6, 6)])
def test_deleted_row_is_detected(outbox_engine: Engine, seq: int, expected: int) -> None:
    _fill(outbox_engine)
    with outbox_engine.begin() as conn:
        _drop_triggers(conn)
        assert conn.execute(sa.text("DELETE FROM outbox_events WHERE seq = :s"), {"s": seq}).rowcount == 1
    report = verify_engine(outbox_engine)
    assert not report.ok and report.first_broken_seq == expected
    assert "deleted" in report.reason


def test_inserted_rows_are_detected(outbox_engine: Engine) -> None:
    _fill(outbox_engine)
    with outbox_engine.begin() as conn:
        last = conn.exec_driver_sql("SELECT * FROM outbox_events WHERE seq = 6").one()._asdict()
    forged = {**last, "seq": 7, "event_id": str(uuid.uuid4()), "idempotency_key": "forged", "prev_hash": last["hash"]}
    forged["hash"] = chain_hash(last["hash"], forged)  # a well-formed link, but the chain head never saw it
    insert = sa.text(
        "INSERT INTO outbox_events (seq, event_id, idempotency_key, event_type, version, payment_id, partition_key,"
        " topic, headers, body, content_hash, created_at, prev_hash, hash) VALUES (:seq, :event_id,"
        " :idempotency_key, :event_type, :version, :payment_id, :partition_key, :topic, :headers, :body,"
        " :content_hash, :created_at, :prev_hash, :hash)"
    )
    with outbox_engine.begin() as conn:
        conn.execute(insert, forged)
    report = verify_engine(outbox_engine)
    assert not report.ok and report.first_broken_seq == 7
    assert "inserted" in report.reason

    # A row slipped in before the first one is caught at its own position.
    early = {**forged, "seq": 0, "event_id": str(uuid.uuid4()), "idempotency_key": "forged-0"}
    with outbox_engine.begin() as conn:
        conn.execute(insert, early)
    report = verify_engine(outbox_engine)
    assert not report.ok and report.first_broken_seq == 0
