"""The consumer runtime in process: batches, exactly-once effects, duplicates, poison, handler errors."""

from __future__ import annotations

import collections
import uuid

import pytest
import runtime_counter as rc

from card_leak import shows_test_card
from payevents.contracts import channel
from payevents.runtime.consumer import ConsumerRuntime
from payevents.runtime.deadletter import list_dead_letters, replay
from payevents.runtime.service import ServiceDef
from payevents.settings import Settings
from payevents.store import db


def drain(rt: ConsumerRuntime, *, idle_polls: int = 3, max_steps: int = 2000) -> None:
    """Step until ``idle_polls`` polls in a row return nothing (and no backoff is pending)."""
    idle = 0
    for _ in range(max_steps):
        r = rt.step()
        if r.consumed == 0 and not r.waiting and not r.retried:
            idle += 1
            if idle >= idle_polls:
                return
        else:
            idle = 0
    raise AssertionError(f"the consumer did not become idle: {rt.stats.as_dict()}")


def mine(rows: list[tuple[int, str, str, int, int, int]], ids: set[str]) -> list[tuple[int, str, str, int, int, int]]:
    return [r for r in rows if r[1] in ids]


def assert_order_per_payment(rows: list[tuple[int, str, str, int, int, int]]) -> None:
    """Within each payment, events were applied (seq) in channel order (offset)."""
    by_payment: dict[str, list[tuple[int, int]]] = collections.defaultdict(list)
    for seq, _eid, pid, _part, off, _amt in rows:
        by_payment[pid].append((seq, off))
    for pid, pairs in by_payment.items():
        offsets = [o for _, o in sorted(pairs)]
        assert offsets == sorted(offsets), f"payment {pid} applied out of order"


def test_batch_is_applied_once_and_offsets_are_committed(transport_settings: Settings, counter: ServiceDef) -> None:
    records, events = [], []
    for i in range(60):
        rec, ev = rc.event_record(transport_settings, f"PAY-{i % 7}", f"{i + 1}.25")
        records.append(rec)
        events.append(ev)
    rc.send(transport_settings, records)
    ids = {e["eventId"] for e in events}

    with ConsumerRuntime(transport_settings, counter, max_batch=25, poll_timeout=0.5) as rt:
        drain(rt)
        assert rt.stats.applied >= 60
        assert rt.stats.batches >= 3  # 60 records in batches of at most 25
        tps = sorted(rt.consumer.assignment())
        committed = rt.consumer.committed(tps)
    engine = db.engine_for(transport_settings, counter.name)
    rows = mine(rc.counter_rows(engine), ids)
    assert sorted(r[1] for r in rows) == sorted(ids)
    assert sum(r[5] for r in rows) == sum(int(float(e["data"]["amount"]["value"]) * 100) for e in events)
    assert_order_per_payment(rows)
    for _seq, _eid, _pid, part, off, _amt in rows:
        assert (committed[(channel.topic_for(transport_settings.env), part)] or 0) > off

    # a new member of the group starts after the committed offsets: nothing to apply
    with ConsumerRuntime(transport_settings, counter, max_batch=25, poll_timeout=0.3) as rt2:
        drain(rt2, idle_polls=2)
        assert rt2.stats.applied == 0
    assert len(mine(rc.counter_rows(engine), ids)) == 60


def test_same_event_delivered_100_times_is_applied_once(transport_settings: Settings, counter: ServiceDef) -> None:
    rec, ev = rc.event_record(transport_settings, "PAY-DUP", "7.00")
    other, ev2 = rc.event_record(transport_settings, "PAY-DUP", "1.00")
    rc.send(transport_settings, [rec] * 60 + [other] + [rec] * 40)
    # batches of 30: repeats inside one batch and across batches
    with ConsumerRuntime(transport_settings, counter, max_batch=30, poll_timeout=0.5) as rt:
        drain(rt)
        assert rt.stats.duplicates >= 99
    engine = db.engine_for(transport_settings, counter.name)
    rows = mine(rc.counter_rows(engine), {ev["eventId"], ev2["eventId"]})
    assert [r[1] for r in rows] == [ev["eventId"], ev2["eventId"]]
    assert [r[5] for r in rows] == [700, 100]


def test_poison_between_valid_events_is_dead_lettered_and_the_payment_flows_on(
    transport_settings: Settings, counter: ServiceDef
) -> None:
    s = transport_settings
    pay = f"PAY-{uuid.uuid4().hex[:6]}"
    first, ev1 = rc.event_record(s, pay, "10.00")
    last, ev2 = rc.event_record(s, pay, "20.00")
    card = rc.event_dict(pay, "5.00")
    card["data"]["customerId"] = "4111 1111 1111 1111"
    bad_currency = rc.event_dict(pay, "5.00")
    bad_currency["data"]["amount"]["currency"] = "usd"
    major2 = rc.event_dict(pay, "5.00")
    major2["version"] = "2.0.0"
    rejected, ev_rej = rc.event_record(s, pay, "3.00", description="reject")
    poison = [
        (rc.record(s, b'{"eventId": "not json', pay), "malformed"),
        (rc.record(s, b'{"eventType": "PaymentProcessed", "x": "\xff\xfe"}', pay), "not-utf8"),
        (rc.record(s, rc.encode(card), pay), "card-number"),
        (rc.record(s, rc.encode(bad_currency), pay), "currency"),
        (rc.record(s, rc.encode(major2), pay), "version"),
        (rejected, "rejected"),
    ]
    rc.send(s, [first] + [p for p, _ in poison] + [last])

    with ConsumerRuntime(s, counter, max_batch=100, poll_timeout=0.5) as rt:
        drain(rt)
        assert rt.stats.dead_lettered >= 6
    engine = db.engine_for(s, counter.name)
    rows = mine(rc.counter_rows(engine), {ev1["eventId"], ev2["eventId"], ev_rej["eventId"]})
    assert [r[1] for r in rows] == [ev1["eventId"], ev2["eventId"]]  # both valid ones, in order
    assert rows[0][4] < rows[1][4]

    letters = [d for d in list_dead_letters(s, limit=1000, service=counter.name) if d.key == pay.encode()]
    # original bytes, in order — except the card number, masked but its last four digits
    assert [d.value for d in letters] == [
        p.value.replace(b"4111 1111 1111 1111", b"**** **** **** 1111") for p, _ in poison]
    assert all(b"4111 1111 1111 1111" not in d.value for d in letters)
    assert [d.value for d in letters][2] != poison[2][0].value
    assert [dict(d.headers).get("dlq.redacted") for d in letters] == [None, None, b"card-number", None, None, None]
    reasons = [d.reason for d in letters]
    assert reasons[0].startswith("invalid:") or reasons[0].startswith("undecodable:")
    assert reasons[1].startswith("not-utf8:")
    assert reasons[2].startswith("card-number:") or "card" in reasons[2]
    assert not shows_test_card(reasons[2])  # never the card number itself
    assert "currency" in reasons[3]
    assert "version" in reasons[4] and "2.0.0" in reasons[4]  # unknown major version
    assert reasons[5] == "rejected: counter: this payment cannot be counted"
    for d in letters:
        assert d.service == counter.name
        assert d.original_topic == channel.topic_for(s.env)
        assert d.original_partition == rows[0][3]
        assert rows[0][4] < (d.original_offset or -1) < rows[1][4]
        assert d.failed_at
        assert d.headers[0] == (channel.H_EVENT_TYPE, b"PaymentProcessed")  # original headers kept


@pytest.mark.postgres
@pytest.mark.parametrize("batch", [False, True])
def test_values_the_store_refuses_are_dead_lettered_at_once_not_retried(pg_settings: Settings, batch: bool,
                                                                       unique: str) -> None:
    """The counter keeps payment ids in VARCHAR(64): PostgreSQL refuses a longer one (DataError, SQLSTATE 22001),
    and would refuse it again on every retry. That record goes to the dead-letter channel with the store's reason
    at the first failure; the records around it are applied."""
    svc = rc.service(f"_counter_{unique}", batch=batch)
    long_id = "pay_" + "x" * 96  # valid on the channel (ids up to 255 characters), too long for this store
    a, ev_a = rc.event_record(pg_settings, "PAY-DATA-A", "1.00")
    bad, ev_bad = rc.event_record(pg_settings, long_id, "2.00")
    b, ev_b = rc.event_record(pg_settings, "PAY-DATA-B", "3.00")
    rc.send(pg_settings, [a, bad, b])
    with ConsumerRuntime(pg_settings, svc, poll_timeout=0.2) as rt:
        rt.backoff_initial = 0.01
        rt.backoff_max = 0.05
        drain(rt)
        assert rt.stats.retries == 0
        assert rt.stats.dead_lettered == 1
    engine = db.engine_for(pg_settings, svc.name)
    assert sorted(r[1] for r in rc.counter_rows(engine)) == sorted([ev_a["eventId"], ev_b["eventId"]])
    (letter,) = list_dead_letters(pg_settings, service=svc.name)
    assert letter.event_id == ev_bad["eventId"]
    assert letter.reason.startswith("rejected: the store refuses its data: DataError:"), letter.reason
    assert "too long" in letter.reason


def test_handler_error_is_retried_then_dead_lettered_and_replay_republishes(
    settings: Settings, counter: ServiceDef
) -> None:
    pay = "PAY-BOOM"
    a, ev_a = rc.event_record(settings, pay, "1.00")
    boom, ev_boom = rc.event_record(settings, pay, "2.00", description="boom")
    b, ev_b = rc.event_record(settings, pay, "3.00")
    rc.send(settings, [a, boom, b])
    with ConsumerRuntime(settings, counter, poll_timeout=0.2) as rt:
        rt.backoff_initial = 0.01
        rt.backoff_max = 0.05
        drain(rt)
        assert rt.stats.retries == ConsumerRuntime.max_handler_attempts - 1
        assert rt.stats.dead_lettered == 1
    engine = db.engine_for(settings, counter.name)
    assert [r[1] for r in rc.counter_rows(engine)] == [ev_a["eventId"], ev_b["eventId"]]
    (letter,) = list_dead_letters(settings, service=counter.name)
    assert letter.reason == "handler-error: failed 5 times: RuntimeError: counter exploded"
    assert letter.event_id == ev_boom["eventId"]

    # replay: the original bytes go back to the channel, same key and partition; the bug is still there
    ((_, delivery),) = replay(settings, partition=letter.partition, offset=letter.offset).sent
    assert delivery.partition == letter.original_partition
    with ConsumerRuntime(settings, counter, poll_timeout=0.2) as rt:
        rt.backoff_initial = 0.01
        rt.backoff_max = 0.05
        drain(rt)
        assert rt.stats.dead_lettered == 1
    letters = list_dead_letters(settings, service=counter.name)
    assert len(letters) == 2 and letters[1].value == letter.value and letters[1].key == pay.encode()


