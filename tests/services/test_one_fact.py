"""One business fact, one effect — in every service.

The four consuming services read the same events of one payment: its lifecycle, the canonical
PaymentProcessed, the legacy envelope of the same completion, a retry with another eventId and the same
content, one with other content, a replay of everything. Each service takes the same decision for each
event: the first completion is applied, the legacy envelope and the retry are absorbed (counted, no
effect), the other content is dead-lettered naming the first event, the replay changes nothing.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable

import msgspec
import pytest
import sqlalchemy as sa
from conftest_an import legacy_envelope, lifecycle, processed, publish

from payevents.contracts.codec import DecodedEvent, encode_event
from payevents.contracts.legacy import legacy_event_id
from payevents.runtime import facts
from payevents.runtime.consumer import ConsumerRuntime
from payevents.runtime.deadletter import list_dead_letters
from payevents.runtime.service import ServiceDef
from payevents.services import analytics, invoices, ledger, notifications
from payevents.services.analytics.service import SERVICE as ANALYTICS
from payevents.services.invoices.service import SERVICE as INVOICES
from payevents.services.ledger.service import SERVICE as LEDGER
from payevents.services.notifications.service import SERVICE as NOTIFICATIONS
from payevents.settings import Settings
from payevents.store import db

SERVICES = (LEDGER, INVOICES, ANALYTICS, NOTIFICATIONS)


@dataclasses.dataclass(frozen=True)
class _FreshGroup(ServiceDef):
    """The same service under a consumer group of its own (the session's Kafka broker is shared)."""

    group_id: str = ""

    @property
    def group(self) -> str:
        return self.group_id


def _fresh(svc: ServiceDef, unique: str) -> ServiceDef:
    fields = {f.name: getattr(svc, f.name) for f in dataclasses.fields(ServiceDef)}
    return _FreshGroup(**{**fields, "background": None}, group_id=f"{svc.group}.{unique}")


def _until(condition: Callable[[], bool], runtimes: list[ConsumerRuntime], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for rt in runtimes:
            rt.step()
        if condition():
            return
    raise AssertionError(f"the services did not decide in time: {[rt.stats.as_dict() for rt in runtimes]}")


def _with_id(decoded: DecodedEvent, event_id: str, **data: object) -> DecodedEvent:
    event = decoded.event
    new_data = msgspec.structs.replace(event.data, **data) if data else event.data
    return DecodedEvent(event=msgspec.structs.replace(event, eventId=event_id, data=new_data))


def _one_payment(s: Settings, max_batch: int, unique: str) -> None:
    pid = f"pay_fact_{uuid.uuid4().hex[:8]}"
    inv = f"INV-FACT-{unique}"
    invoices.create(s, invoice_id=inv, customer_id="cus_fact", amount_due="10.00", currency="USD",
                    due_date="2026-01-31")
    notifications.add_customer(s, "cus_fact", "Fay", "fay@example.com", "en_GB")

    steps = lifecycle(pid, "10.00", customer_id="cus_fact")[:3]  # initiated, authorized, captured
    captured_retry = _with_id(steps[2], str(uuid.uuid4()))
    first = processed(pid, "10.00", customer_id="cus_fact", invoice_id=inv, order_id=f"ORD-{pid}")
    legacy = legacy_envelope(pid, "10.00")
    legacy_id = legacy_event_id(f"{pid}-2025-12-11-10.00")
    retry = _with_id(first, str(uuid.uuid4()))  # another producer, same content
    amount = first.event.data.amount
    other = _with_id(first, str(uuid.uuid4()), amount=msgspec.structs.replace(amount, value=amount.value * 2))
    events: list[DecodedEvent | bytes] = [*steps, captured_retry, first, legacy, retry, other]
    keys = [pid] * len(events)
    publish(s, events, keys=keys)
    publish(s, [encode_event(first.event)], keys=[pid])  # a replay of the first completion
    publish(s, events, keys=keys)  # everything re-sent

    ids = {"first": first.event_id, "legacy": legacy_id, "retry": retry.event_id, "other": other.event_id}
    runtimes = [ConsumerRuntime(s, _fresh(svc, unique), max_batch=max_batch, poll_timeout=0.1) for svc in SERVICES]
    try:
        n_records = 2 * len(events) + 1

        def done() -> bool:
            return all(rt.stats.consumed >= n_records for rt in runtimes)

        _until(done, runtimes)
        for _ in range(3):  # anything extra would arrive now
            for rt in runtimes:
                rt.step()
        expected = {"first": "applied", "legacy": "absorbed", "retry": "absorbed", "other": "rejected"}
        for svc, rt in zip(SERVICES, runtimes, strict=True):
            got = facts.decisions(db.engine_for(s, svc.name), svc.name, list(ids.values()))
            assert {k: got[v].outcome for k, v in ids.items()} == expected, svc.name
            assert first.event_id in (got[ids["other"]].reason or ""), svc.name
            assert f"duplicate: the same PaymentProcessed of payment {pid} as event {first.event_id}" == \
                got[ids["retry"]].reason
            [fact] = [f for f in facts.facts(db.engine_for(s, svc.name), svc.name, pid)
                      if f.event_type == "PaymentProcessed"]
            assert (fact.event_id, fact.absorbed) == (first.event_id, 2), svc.name
            stats = rt.stats
            # 2 absorbed (legacy, retry) + the captured retry in analytics; each once: the re-sent ones are
            # duplicates of their eventId
            assert stats.absorbed == (3 if svc.name == "analytics" else 2), (svc.name, stats.as_dict())
            assert stats.dead_lettered == 1, (svc.name, stats.as_dict())
            letters = [d for d in list_dead_letters(s, limit=10_000, service=svc.name) if d.key == pid.encode()]
            assert len(letters) == 1, svc.name
            assert letters[0].reason.startswith(f"conflict: PaymentProcessed of payment {pid} was already stated"
                                                f" by event {first.event_id} with other content"), letters[0].reason
            assert "amount.value: '10' then '20'" in letters[0].reason

        # one effect each
        [entry] = ledger.journal(s, payment_id=pid)
        assert entry.event_id == first.event_id and [ln.amount_minor for ln in entry.lines] == [1000, 1000]
        assert ledger.verify(s).ok
        detail = invoices.show(s, inv)
        assert (detail.invoice.status, detail.invoice.paid_minor) == ("Paid", 1000)
        assert [p.event_id for p in detail.payments] == [first.event_id]
        with db.engine_for(s, "analytics").connect() as conn:
            rows = conn.execute(sa.text("SELECT event_type, event_id FROM analytics_events WHERE payment_id = :p"),
                                {"p": pid}).all()
        assert sorted(r[0] for r in rows) == ["PaymentAuthorized", "PaymentCaptured", "PaymentInitiated",
                                              "PaymentProcessed"]
        assert (("PaymentProcessed", first.event_id) in {(r[0], r[1]) for r in rows})
        mails = [n for n in notifications.list_notifications(s) if n.payment_id == pid]
        assert [n.event_id for n in mails] == [first.event_id]
    finally:
        for rt in runtimes:
            rt.close()


@pytest.mark.timeout(240)
def test_four_services_take_the_same_decision_on_each_transport(transport_settings: Settings, unique: str) -> None:
    _one_payment(transport_settings, max_batch=4, unique=unique)


@pytest.mark.timeout(240)
def test_four_services_take_the_same_decision_on_postgresql(pg_settings: Settings, unique: str) -> None:
    _one_payment(pg_settings, max_batch=100, unique=unique)


def test_legacy_first_then_canonical_then_a_different_customer(settings: Settings) -> None:
    """The legacy envelope lacks customerId: the canonical event with it is the same fact and teaches the
    fact its customer; a third event naming another customer conflicts."""
    s = settings
    pid = f"pay_fact_{uuid.uuid4().hex[:8]}"
    legacy = legacy_envelope(pid, "5.00")
    canonical = processed(pid, "5.00", customer_id="cus_a", order_id=f"ORD-{pid}")
    stranger = processed(pid, "5.00", customer_id="cus_b", order_id=f"ORD-{pid}")
    publish(s, [legacy, canonical, stranger], keys=[pid] * 3)
    with ConsumerRuntime(s, LEDGER, max_batch=1, poll_timeout=0.1) as rt:
        _until(lambda: rt.stats.consumed >= 3, [rt], timeout=30)
        assert (rt.stats.applied, rt.stats.absorbed, rt.stats.dead_lettered) == (1, 1, 1)
    got = facts.decisions(db.engine_for(s, "ledger"), "ledger", [canonical.event_id, stranger.event_id])
    assert got[canonical.event_id].outcome == "absorbed"
    assert got[stranger.event_id].outcome == "rejected"
    assert "customerId: 'cus_a' then 'cus_b'" in (got[stranger.event_id].reason or "")


def test_a_database_from_before_the_rule_decides_repeats_like_a_new_one(store_settings: Settings,
                                                                         unique: str) -> None:
    """Each service applied a completion before the one-fact rule existed (its handlers, no facts); when
    the runtime starts on that database, the service's history becomes its facts: a retry is absorbed and
    other content is a conflict naming the first event, in all four services."""
    from conftest_an import feed

    s = store_settings
    pid = f"pay_hist_{uuid.uuid4().hex[:8]}"
    inv = f"INV-HIST-{unique}"
    invoices.create(s, invoice_id=inv, customer_id="cus_fact", amount_due="10.00", currency="USD",
                    due_date="2026-01-31")
    notifications.add_customer(s, "cus_fact", "Fay", "fay@example.com", "en_GB")
    first = processed(pid, "10.00", customer_id="cus_fact", invoice_id=inv)
    for svc in SERVICES:
        feed(s, svc, [first])  # applied by the handlers alone, as before the rule
    retry = _with_id(first, str(uuid.uuid4()))
    amount = first.event.data.amount
    other = _with_id(first, str(uuid.uuid4()), amount=msgspec.structs.replace(amount, value=amount.value * 2))
    publish(s, [retry, other])
    runtimes = [ConsumerRuntime(s, svc, max_batch=10, poll_timeout=0.1) for svc in SERVICES]
    try:
        _until(lambda: all(rt.stats.consumed >= 2 for rt in runtimes), runtimes, timeout=30)
        for svc in SERVICES:
            got = facts.decisions(db.engine_for(s, svc.name), svc.name, [retry.event_id, other.event_id])
            assert (got[retry.event_id].outcome, got[other.event_id].outcome) == ("absorbed", "rejected"), \
                (svc.name, got)
            assert first.event_id in (got[other.event_id].reason or ""), svc.name
    finally:
        for rt in runtimes:
            rt.close()
    assert len(ledger.journal(s, payment_id=pid)) == 1
    assert [n.event_id for n in notifications.list_notifications(s) if n.payment_id == pid] == [first.event_id]


def test_every_lifecycle_step_is_one_fact(settings: Settings) -> None:
    """Analytics counts every step: a repeated authorization (same content, another eventId) is absorbed, a
    second failure with another failure code is dead-lettered naming the first."""
    s = settings
    pid = f"pay_steps_{uuid.uuid4().hex[:8]}"
    initiated, authorized, failed = lifecycle(pid, "7.00", fail=("card_declined", "gateway: declined"))
    again = _with_id(authorized, str(uuid.uuid4()))
    other_failure = _with_id(failed, str(uuid.uuid4()), failureCode="expired_card")
    publish(s, [initiated, authorized, again, failed, other_failure])
    with ConsumerRuntime(s, ANALYTICS, max_batch=2, poll_timeout=0.1) as rt:
        _until(lambda: rt.stats.consumed >= 5, [rt], timeout=30)
        assert (rt.stats.applied, rt.stats.absorbed, rt.stats.dead_lettered) == (3, 1, 1)
    got = facts.decisions(db.engine_for(s, "analytics"), "analytics", [again.event_id, other_failure.event_id])
    assert got[again.event_id].outcome == "absorbed"
    assert got[other_failure.event_id].outcome == "rejected"
    assert f"by event {failed.event_id}" in (got[other_failure.event_id].reason or "")
    assert "failureCode: 'card_declined' then 'expired_card'" in (got[other_failure.event_id].reason or "")
    assert analytics.metrics(s)["failures"]["total"] == 1
