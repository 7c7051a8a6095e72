"""Issue #14: the keys the platform makes grow with time (``payevents.contracts.ids``). Payment ids are uuid7s, a
payment's eventIds and its journal entry carry the payment's time first, so the payments' outbox, every
consumer's seen marks and the journal take new rows at the right edge of their indexes. Ids derived from
anything else (an event from another producer, a payment id a client chose) are the uuid5s they always were."""

from __future__ import annotations

import itertools
import time
import uuid

import sqlalchemy as sa
from money_helpers import deliver, processed

from payevents.services import ledger
from payevents.services import payments as P
from payevents.services.ledger.journal import NAMESPACE as LEDGER_NAMESPACE
from payevents.services.payments import events as ev
from payevents.services.payments import store as payments_store
from payevents.settings import Settings


def _outbox(settings: Settings) -> list[tuple[str, str]]:
    with payments_store.engine(settings).connect() as conn:
        return [(str(r[0]), str(r[1])) for r in conn.execute(sa.text(
            "SELECT payment_id, event_id FROM outbox_events ORDER BY seq"))]


def test_payments_made_later_have_ids_and_event_ids_that_sort_later(settings: Settings) -> None:
    batches = []
    for b in range(3):
        seen = len(_outbox(settings))
        P.process_payments(settings, [P.PaymentSpec(customer_id=f"cus_{i}", amount="5.00", currency="USD",
                                                    description="d", idempotency_key=f"ordered-{b}-{i}")
                                      for i in range(20)])
        batches.append(_outbox(settings)[seen:])
        time.sleep(0.002)
    for rows in batches:
        assert len(rows) == 80  # 20 payments, 4 events each
        for pid, eid in rows:
            assert uuid.UUID(pid[4:]).version == 7 and uuid.UUID(eid).version == 8
            assert eid[:13] == pid[4:17]  # the event carries its payment's time
    for earlier, later in itertools.pairwise(batches):
        assert max(p for p, _ in earlier) < min(p for p, _ in later)
        assert max(e for _, e in earlier) < min(e for _, e in later)


def test_a_payment_id_a_client_chose_keeps_uuid5_event_ids(settings: Settings) -> None:
    p = P.create(settings, customer_id="cus_x", amount="5.00", currency="USD", description="d",
                 payment_id="PAY-123-456")
    p = P.complete(settings, P.capture(settings, P.authorize(settings, p.payment_id).payment_id).payment_id)
    assert p.payment_id == "PAY-123-456" and len(p.events) == 4
    assert [r.event_id for r in p.events] == [str(uuid.uuid5(ev.NAMESPACE, f"PAY-123-456/{r.event_type}"))
                                              for r in p.events]


def test_the_journal_entry_of_an_event_carries_the_event_time(store_settings: Settings) -> None:
    pid = P.machine.new_id("pay")
    ordered = processed(payment_id=pid, event_id=ev.event_id(pid, "PaymentProcessed"), amount="10.00")
    foreign = processed(amount="5.00")  # a version 4 eventId, as another producer may send
    deliver(store_settings, "ledger", [ordered, foreign])
    entries = {e.event_id: e for e in ledger.journal(store_settings)}
    entry = entries[ordered.event_id]
    assert entry.entry_id[:13] == ordered.event_id[:13] and uuid.UUID(entry.entry_id).version == 8
    assert entries[foreign.event_id].entry_id == str(uuid.uuid5(LEDGER_NAMESPACE, foreign.event_id))
    assert ledger.verify(store_settings).ok


def test_the_bench_events_carry_the_ids_our_producer_makes() -> None:
    """The benchmarks' channel is the platform's own traffic: payment ids as the writer makes them, eventIds as
    the producer derives them (the same for the same run and index)."""
    from payevents.bench.events import sample_event

    events = [sample_event(i, "a123456b") for i in range(300)]
    for e in events:
        assert uuid.UUID(e.data.paymentId[4:]).version == 7
        assert e.eventId == ev.event_id(e.data.paymentId, "PaymentProcessed")
    assert [e.eventId for e in events] == sorted(e.eventId for e in events)
    assert sample_event(7, "a123456b") == events[7]


def test_a_generated_idempotency_key_is_time_ordered(settings: Settings) -> None:
    """A command without a key gets one from the writer; it is the commands' key and (with the step) the outbox's."""
    [p] = P.process_payments(settings, [P.PaymentSpec(customer_id="cus_k", amount="5.00", currency="USD",
                                                      description="d")])
    with payments_store.engine(settings).connect() as conn:
        keys = [str(r[0]) for r in conn.execute(sa.text(
            "SELECT idempotency_key FROM outbox_events WHERE payment_id = :p ORDER BY seq"), {"p": p.payment_id})]
    command_key = keys[0].rsplit(":", 1)[0]
    assert uuid.UUID(command_key).version == 7 and all(k.startswith(f"{command_key}:") for k in keys)
