"""An event a handler rejected stays rejected: a redelivery never applies it later, out of order."""

from __future__ import annotations

import dataclasses
import uuid

import runtime_counter as rc
import sqlalchemy as sa
from sqlalchemy.engine import Connection
from test_consumer_runtime import drain

from payevents.contracts.codec import DecodedEvent
from payevents.errors import PoisonEvent
from payevents.runtime.consumer import ConsumerRuntime
from payevents.runtime.deadletter import list_dead_letters, replay
from payevents.runtime.service import ServiceDef
from payevents.settings import Settings
from payevents.store import db
from payevents.store.db import Migration
from payevents.transport.base import Message


def _gated(conn: Connection, decoded: DecodedEvent, message: Message) -> None:
    """The counter, except that a payment described ``gated`` is refused while the gate is closed: a
    verdict that depends on state, which a later evaluation would give differently."""
    description = getattr(getattr(decoded.event.data, "metadata", None), "description", None)
    if description == "gated" and not conn.execute(sa.text("SELECT is_open FROM gate")).scalar_one():
        raise PoisonEvent("gate: closed")
    rc.on_processed(conn, decoded, message)


def _gate_service(name: str) -> ServiceDef:
    base = rc.service(name)
    migrations = (*base.migrations, Migration(3, "gate", both=["CREATE TABLE gate (is_open INTEGER NOT NULL)",
                                                               "INSERT INTO gate (is_open) VALUES (0)"]))
    return dataclasses.replace(base, migrations=migrations, handlers={"PaymentProcessed": _gated})


def _crash_before_offset_commit(rt: ConsumerRuntime) -> None:
    """The store commits, the offsets never do (as if the process died in between)."""
    rt._commit_offsets = lambda offsets: {}  # type: ignore[method-assign]


def test_rejected_event_is_not_applied_by_the_redelivery_after_a_crash(settings: Settings, unique: str) -> None:
    s = settings
    svc = _gate_service(f"_gate_{unique}")
    pay = f"PAY-{uuid.uuid4().hex[:6]}"
    first, ev1 = rc.event_record(s, pay, "1.00")
    gated, ev_gated = rc.event_record(s, pay, "2.00", description="gated")
    last, ev3 = rc.event_record(s, pay, "3.00")
    rc.send(s, [first, gated, last])

    rt = ConsumerRuntime(s, svc, poll_timeout=0.2)
    _crash_before_offset_commit(rt)
    drain(rt)
    assert rt.stats.dead_lettered == 1
    rt.close()
    engine = db.engine_for(s, svc.name)
    with engine.begin() as conn:  # the state changes: a re-evaluation would now accept the event
        conn.execute(sa.text("UPDATE gate SET is_open = 1"))

    # the batch is delivered again: the rejected event is skipped, not applied after its successor
    with ConsumerRuntime(s, svc, poll_timeout=0.2) as rt2:
        drain(rt2)
        assert rt2.stats.applied == 0 and rt2.stats.dead_lettered == 0
        assert rt2.stats.duplicates == 3
    assert [r[1] for r in rc.counter_rows(engine)] == [ev1["eventId"], ev3["eventId"]]
    letters = list_dead_letters(s, service=svc.name)
    assert [d.event_id for d in letters] == [ev_gated["eventId"]]  # its dead letter, once
    with engine.connect() as conn:
        outcome, reason = conn.execute(sa.text("SELECT outcome, reason FROM processed_events WHERE event_id = :e"),
                                       {"e": ev_gated["eventId"]}).one()
    assert (outcome, reason) == ("rejected", "rejected: gate: closed")

    # a replay from the dead-letter channel is the operator's decision: evaluated again, and applied now
    replay(s, partition=letters[0].partition, offset=letters[0].offset)
    with ConsumerRuntime(s, svc, poll_timeout=0.2) as rt3:
        drain(rt3)
        assert rt3.stats.applied == 1
    assert [r[1] for r in rc.counter_rows(engine)] == [ev1["eventId"], ev3["eventId"], ev_gated["eventId"]]
    with engine.connect() as conn:
        outcome = conn.execute(sa.text("SELECT outcome FROM processed_events WHERE event_id = :e"),
                               {"e": ev_gated["eventId"]}).scalar_one()
    assert outcome == "applied"


def test_a_rejected_event_repeated_in_one_batch_is_rejected_once(settings: Settings, unique: str) -> None:
    """The same eventId twice in one batch, the first rejected: the second copy is not evaluated again."""
    s = settings
    svc = _gate_service(f"_gate_{unique}")
    pay = f"PAY-{uuid.uuid4().hex[:6]}"
    gated, ev_gated = rc.event_record(s, pay, "2.00", description="gated")
    rc.send(s, [gated, gated])
    with ConsumerRuntime(s, svc, poll_timeout=0.2) as rt:
        drain(rt)
        assert (rt.stats.dead_lettered, rt.stats.duplicates, rt.stats.applied) == (1, 1, 0)
    assert rc.counter_rows(db.engine_for(s, svc.name)) == []
    assert [d.event_id for d in list_dead_letters(s, service=svc.name)] == [ev_gated["eventId"]]
