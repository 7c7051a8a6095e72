"""The fact content the consume path computes (a generated function per event type, runtime.facts) is the
plain definition's (one dotted-path walk per defining field), for every event type, the legacy envelope, an
event type without a rule, absent and null fields, and amounts written with trailing zeros."""

from __future__ import annotations

import dataclasses
import json
from decimal import Decimal
from typing import Any

import msgspec
import pytest

from payevents.contracts.codec import DecodedEvent, decode_event
from payevents.contracts.events import EVENT_MODELS
from payevents.contracts.examples import example_event
from payevents.runtime import facts

LEGACY = json.dumps({
    "eventType": "PAYMENT_PROCESSED", "timestamp": "2025-12-11T10:30:00", "version": "1.0",
    "payload": {"paymentId": "pay_legacy_1", "orderId": "ORD-1", "amount": {"value": 10.50, "currency": "USD"},
                "status": "SUCCESS", "paymentMethod": {"type": "CREDIT_CARD", "last4": "4242"}},
    "metadata": {"correlationId": "corr-1", "merchantId": "MERCH-456", "source": "payment_service",
                 "environment": "dev", "idempotencyKey": "pay_legacy_1-2025-12-11"},
}).encode()

TYPES = sorted({t for t, _v in EVENT_MODELS})


def _decoded(event: Any) -> DecodedEvent:
    return DecodedEvent(event)


@pytest.mark.parametrize("event_type", TYPES)
@pytest.mark.parametrize("amount", [Decimal("10"), Decimal("10.00"), Decimal("0.10"), Decimal("1234567.5")])
def test_generated_content_is_the_definition(event_type: str, amount: Decimal) -> None:
    d = _decoded(example_event(event_type, amount=amount))
    assert facts.content_of(d) == facts.reference_content_of(d)
    assert facts.content_of(d)["amount.value"] == format(amount.normalize(), "f")


@pytest.mark.parametrize("event_type", TYPES)
def test_absent_fields_are_left_out_or_none_as_the_rule_says(event_type: str) -> None:
    event = example_event(event_type)
    data = event.data
    for name in ("customerId", "invoiceId", "metadata", "transactionId", "failureCode", "authorizationCode",
                 "captureId"):
        if name in data.__struct_fields__:
            data = msgspec.structs.replace(data, **{name: msgspec.UNSET})
    d = _decoded(msgspec.structs.replace(event, data=data))
    content = facts.content_of(d)
    assert content == facts.reference_content_of(d)
    rule = facts.FACT_FIELDS[event_type]
    for path in rule.always:
        assert path in content  # compared always: absent counts as a value
    assert not any(path in content for path in ("customerId", "invoiceId", "metadata.orderId", "transactionId"))


def test_legacy_envelope_and_an_unknown_event_type() -> None:
    legacy = decode_event(LEGACY)
    assert legacy.legacy
    assert facts.content_of(legacy) == facts.reference_content_of(legacy)

    @dataclasses.dataclass
    class Future:
        eventType: str
        data: Any

    event = example_event("PaymentProcessed")
    future: Any = Future("PaymentRefunded", event.data)
    d = DecodedEvent(future)
    assert facts.content_of(d) == facts.reference_content_of(d) == {"amount.value": "99.99",
                                                                      "amount.currency": "USD"}
