"""A service does not decode the event types it has no handler for (issue #14): the body's top-level
``eventType`` (read cheaply, never the header alone) says what a record is; a known type the service does not
act on is counted ignored and passed over. The channel's rules still hold for every record in every service
that acts on it: an invalid PaymentInitiated is dead-lettered by a service that handles PaymentInitiated
(analytics), not by one that never looks at it; a record whose header lies about its type is judged by its body.
"""

from __future__ import annotations

import dataclasses
import json
import uuid

import runtime_counter as rc

from payevents.contracts import channel, examples
from payevents.runtime.consumer import ConsumerRuntime
from payevents.runtime.deadletter import list_dead_letters
from payevents.runtime.service import ServiceDef
from payevents.services import load_service
from payevents.settings import Settings
from payevents.transport.base import Record


def _initiated(pay: str, *, currency: str = "USD") -> bytes:
    doc = json.loads(examples.example_json("PaymentInitiated", "1.0.0"))
    doc["eventId"] = str(uuid.uuid4())
    doc["data"]["paymentId"] = pay
    doc["data"]["amount"]["currency"] = currency
    return json.dumps(doc, separators=(",", ":")).encode()


def _record(s: Settings, value: bytes, key: str, header_type: str) -> Record:
    return Record(topic=channel.topic_for(s.env), value=value, key=key.encode(),
                  headers=((channel.H_EVENT_TYPE, header_type.encode()),))


def _drain(rt: ConsumerRuntime, total: int) -> None:
    for _ in range(200):
        rt.step()
        st = rt.stats
        if st.applied + st.ignored + st.dead_lettered + st.duplicates >= total:
            return
    raise AssertionError(rt.stats.as_dict())


def test_unhandled_types_are_passed_over_and_judged_where_they_are_handled(
    transport_settings: Settings, counter: ServiceDef, unique: str
) -> None:
    s = transport_settings
    pay = f"PAY-SKIP-{unique}"
    processed, _ = rc.event_record(s, pay, "3.00")
    lying = _record(s, rc.encode(rc.event_dict(f"{pay}-2", "4.00")), f"{pay}-2", "PaymentInitiated")
    records = [
        _record(s, _initiated(pay), pay, "PaymentInitiated"),  # valid, not the counter's
        _record(s, _initiated(f"{pay}-bad", currency="usd"), f"{pay}-bad", "PaymentInitiated"),  # invalid
        processed,
        lying,  # a PaymentProcessed whose header says PaymentInitiated
    ]
    rc.send(s, records)

    with ConsumerRuntime(s, counter, max_batch=50, poll_timeout=0.3) as rt:
        _drain(rt, len(records))
        assert (rt.stats.applied, rt.stats.ignored, rt.stats.dead_lettered) == (2, 2, 0), rt.stats.as_dict()
    assert list_dead_letters(s, service=counter.name) == []

    analytics = dataclasses.replace(load_service("analytics"), name=f"_analytics_{unique}")
    with ConsumerRuntime(s, analytics, max_batch=50, poll_timeout=0.3) as rt:
        _drain(rt, len(records))
        assert rt.stats.dead_lettered == 1, rt.stats.as_dict()
    (letter,) = list_dead_letters(s, service=analytics.name)
    assert letter.value == records[1].value and "data.amount.currency" in letter.reason
