"""The consumer runtime with a service's batch handler: used, falls back per event on poison, retries."""

from __future__ import annotations

import uuid

import runtime_counter as rc
from test_consumer_runtime import assert_order_per_payment, drain, mine

from payevents.runtime.consumer import ConsumerRuntime
from payevents.runtime.deadletter import list_dead_letters
from payevents.runtime.service import ServiceDef
from payevents.settings import Settings
from payevents.store import db


def test_batch_handler_applies_each_event_once_with_duplicates(
    transport_settings: Settings, batch_counter: ServiceDef
) -> None:
    s = transport_settings
    records, events = [], []
    for i in range(80):
        rec, ev = rc.event_record(s, f"PAY-B{i % 9}", f"{i + 1}.10")
        records.append(rec)
        events.append(ev)
    # every event twice (in the same batch and in later batches), plus a replay of the first ten
    rc.send(s, records + records[:40] + records[:10])
    ids = {e["eventId"] for e in events}
    with ConsumerRuntime(s, batch_counter, max_batch=30, poll_timeout=0.5) as rt:
        drain(rt)
        assert rt.stats.applied >= 80  # on Kafka the shared topic also holds earlier tests' events
        assert rt.stats.duplicates >= 50
    engine = db.engine_for(s, batch_counter.name)
    rows = mine(rc.counter_rows(engine), ids)
    assert sorted(r[1] for r in rows) == sorted(ids)  # each once
    assert_order_per_payment(rows)
    assert sorted(r[5] for r in rows) == sorted((i + 1) * 100 + 10 for i in range(80))
    total, n = rc.counter_total(engine)
    assert (total, n) == (sum(r[5] for r in rc.counter_rows(engine)), len(rc.counter_rows(engine)))
    sizes = rc.batch_sizes(engine)
    assert sizes  # the batch path was used
    if not s.is_kafka:  # on Kafka, earlier tests' rejected/failing events make some batches fall back
        assert sum(sizes) == n and len(sizes) >= 3  # the batch path did all of it, in several batches
        assert n == 80 and total == sum((i + 1) * 100 + 10 for i in range(80))


def test_poison_from_the_batch_handler_falls_back_and_dead_letters_only_the_culprit(
    transport_settings: Settings, batch_counter: ServiceDef
) -> None:
    s = transport_settings
    pay = f"PAY-{uuid.uuid4().hex[:6]}"
    before = [rc.event_record(s, pay, f"{i + 1}.00") for i in range(5)]
    rejected, ev_rej = rc.event_record(s, pay, "3.00", description="reject")
    after = [rc.event_record(s, pay, f"{i + 10}.00") for i in range(5)]
    rc.send(s, [r for r, _ in before] + [rejected] + [r for r, _ in after])
    good = [ev for _, ev in before + after]

    with ConsumerRuntime(s, batch_counter, max_batch=100, poll_timeout=0.5) as rt:
        drain(rt)
        assert rt.stats.dead_lettered >= 1
        assert rt.stats.applied >= 10
        assert rt.stats.retries == 0  # poison is not a transient fault
    engine = db.engine_for(s, batch_counter.name)
    rows = mine(rc.counter_rows(engine), {e["eventId"] for e in good} | {ev_rej["eventId"]})
    assert [r[1] for r in rows] == [e["eventId"] for e in good]  # all valid ones, in channel order, once
    if not s.is_kafka:  # one batch: the failed batch call was rolled back; the per-event path applied it
        assert rc.counter_total(engine) == (sum(r[5] for r in rows), 10)
        assert rc.batch_sizes(engine) == []
    letters = [d for d in list_dead_letters(s, limit=1000, service=batch_counter.name) if d.key == pay.encode()]
    assert [d.event_id for d in letters] == [ev_rej["eventId"]]
    assert letters[0].reason == "rejected: counter: this payment cannot be counted"


def test_transient_error_in_the_batch_handler_is_retried_with_backoff(
    settings: Settings, batch_counter: ServiceDef
) -> None:
    pay = "PAY-FLAKY"
    a, ev_a = rc.event_record(settings, pay, "1.00")
    flaky, ev_f = rc.event_record(settings, pay, "2.00", description="flaky")
    b, ev_b = rc.event_record(settings, pay, "3.00")
    rc.send(settings, [a, flaky, b])
    with ConsumerRuntime(settings, batch_counter, poll_timeout=0.2) as rt:
        rt.backoff_initial = 0.01
        rt.backoff_max = 0.05
        drain(rt)
        assert rt.stats.retries == 1
        assert rt.stats.dead_lettered == 0
    engine = db.engine_for(settings, batch_counter.name)
    assert [r[1] for r in rc.counter_rows(engine)] == [ev_a["eventId"], ev_f["eventId"], ev_b["eventId"]]
    assert rc.batch_sizes(engine) == [3]  # retried through the batch path, not split per event


def test_unexpected_error_in_the_batch_handler_ends_in_the_per_event_retries_and_dead_letter(
    settings: Settings, batch_counter: ServiceDef
) -> None:
    a, ev_a = rc.event_record(settings, "PAY-BB", "1.00")
    boom, ev_boom = rc.event_record(settings, "PAY-BB", "2.00", description="boom")
    b, ev_b = rc.event_record(settings, "PAY-BB", "3.00")
    rc.send(settings, [a, boom, b])
    with ConsumerRuntime(settings, batch_counter, poll_timeout=0.2) as rt:
        rt.backoff_initial = 0.01
        rt.backoff_max = 0.05
        drain(rt)
        assert rt.stats.retries == ConsumerRuntime.max_handler_attempts - 1
        assert rt.stats.dead_lettered == 1
    engine = db.engine_for(settings, batch_counter.name)
    assert [r[1] for r in rc.counter_rows(engine)] == [ev_a["eventId"], ev_b["eventId"]]
    (letter,) = list_dead_letters(settings, service=batch_counter.name)
    assert letter.event_id == ev_boom["eventId"]
    assert letter.reason == "handler-error: failed 5 times: RuntimeError: counter exploded"
