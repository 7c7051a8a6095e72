"""Review findings on the consumer runtime, each a scenario that used to fail."""

from __future__ import annotations

from typing import Any

import runtime_counter as rc

from payevents.errors import TransientError
from payevents.runtime.consumer import ConsumerRuntime
from payevents.runtime.deadletter import list_dead_letters
from payevents.runtime.service import ServiceDef
from payevents.settings import Settings
from payevents.store import db
from payevents.transport.base import Consumer, Message
from payevents.transport.murmur2 import partition_for


def _other_partition_key(settings: Settings, key: str) -> str:
    """A payment id on another partition than ``key``."""
    n = settings.partitions
    for i in range(1000):
        candidate = f"PAY-OTHER-{i}"
        if partition_for(candidate.encode(), n) != partition_for(key.encode(), n):
            return candidate
    raise AssertionError("no key on another partition")


def test_handler_error_attempts_are_not_reset_by_batches_of_other_partitions(
    settings: Settings, counter: ServiceDef
) -> None:
    """A record whose handler keeps failing is dead-lettered after max_handler_attempts, even while other
    partitions keep flowing between its attempts (they used to reset its failure count)."""
    pay = "PAY-BOOM"
    other = _other_partition_key(settings, pay)
    boom, ev_boom = rc.event_record(settings, pay, "2.00", description="boom")
    after, ev_after = rc.event_record(settings, pay, "3.00")
    goods = [rc.event_record(settings, other, f"{i + 1}.00") for i in range(40)]
    rc.send(settings, [boom, after, *[r for r, _ in goods]])
    with ConsumerRuntime(settings, counter, max_batch=1, poll_timeout=0.2) as rt:
        rt.backoff_initial = 0.001
        rt.backoff_max = 0.002
        steps = 0
        while rt.stats.dead_lettered == 0 and steps < 2000:
            rt.step()
            steps += 1
        assert rt.stats.dead_lettered == 1
        # the failing record was tried max_handler_attempts times, no more
        assert rt.stats.retries == ConsumerRuntime.max_handler_attempts - 1
        # and the other payment was not held up to get there
        for _ in range(500):
            if rt.stats.applied >= 41:
                break
            rt.step()
    (letter,) = list_dead_letters(settings, service=counter.name)
    assert letter.event_id == ev_boom["eventId"]
    ids = [r[1] for r in rc.counter_rows(db.engine_for(settings, counter.name))]
    assert ev_after["eventId"] in ids and len(ids) == 41


class _FlakyPolls:
    """The runtime's consumer whose next ``failures`` polls raise TransientError (a broker hiccup)."""

    def __init__(self, inner: Consumer, failures: int) -> None:
        self.inner = inner
        self.failures = failures

    def poll(self, max_records: int = 500, timeout: float = 0.5) -> list[Message]:
        if self.failures > 0:
            self.failures -= 1
            raise TransientError("kafka consumer: all brokers down (test)")
        return self.inner.poll(max_records, timeout)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_transient_poll_errors_during_a_backoff_are_retried_not_raised(settings: Settings, counter: ServiceDef) -> None:
    """A broker that stays unreachable also fails the polls made while backing off: the runtime keeps
    backing off (it used to let that error escape step(), which ends the worker)."""
    records, events = [], []
    for i in range(5):
        rec, ev = rc.event_record(settings, f"PAY-{i}", f"{i + 1}.00")
        records.append(rec)
        events.append(ev)
    rc.send(settings, records)
    with ConsumerRuntime(settings, counter, poll_timeout=0.2) as rt:
        rt.backoff_initial = 0.001
        rt.backoff_max = 0.002
        rt.consumer = _FlakyPolls(rt.consumer, failures=3)  # type: ignore[assignment]
        for _ in range(500):
            if rt.stats.applied >= 5:
                break
            rt.step()
        assert rt.stats.retries >= 1
    ids = [r[1] for r in rc.counter_rows(db.engine_for(settings, counter.name))]
    assert sorted(ids) == sorted(e["eventId"] for e in events)


class _FailingProducer:
    """A dead-letter producer whose next ``failures`` sends raise TransientError."""

    def __init__(self, inner: Any, failures: int) -> None:
        self.inner = inner
        self.failures = failures

    def send(self, records: Any) -> Any:
        if self.failures > 0:
            self.failures -= 1
            raise TransientError("dead-letter channel unreachable (test)")
        return self.inner.send(records)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_failed_dead_letter_produce_rolls_the_batch_back(settings: Settings, counter: ServiceDef) -> None:
    """The dead letter is written before the batch's effects commit: while it cannot be written, nothing of
    the batch is applied (so no later event of the payment overtakes the rejected one); then all goes
    through once, in order."""
    pay = "PAY-DLQ-FIRST"
    first, ev1 = rc.event_record(settings, pay, "1.00")
    rejected, ev_rej = rc.event_record(settings, pay, "2.00", description="reject")
    last, ev3 = rc.event_record(settings, pay, "3.00")
    rc.send(settings, [first, rejected, last])
    engine = db.engine_for(settings, counter.name)
    with ConsumerRuntime(settings, counter, max_batch=10, poll_timeout=0.2) as rt:
        rt.backoff_initial = 0.001
        rt.backoff_max = 0.002
        real = rt._dlq_producer()
        rt._dlq_producer = lambda: flaky  # type: ignore[method-assign]
        flaky = _FailingProducer(real, failures=2)
        r = rt.step()
        assert r.retried and "dead-letter channel unreachable" in (r.fault or "")
        assert rc.counter_rows(engine) == []  # rolled back with the failed produce
        for _ in range(200):
            if rt.stats.applied >= 2 and rt.stats.dead_lettered == 1:
                break
            rt.step()
    assert [r[1] for r in rc.counter_rows(engine)] == [ev1["eventId"], ev3["eventId"]]
    (letter,) = list_dead_letters(settings, service=counter.name)
    assert letter.event_id == ev_rej["eventId"] and letter.reason.startswith("rejected:")
