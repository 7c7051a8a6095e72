"""The seed pages' examples: the event page's payload validates; the channel page's sample normalizes."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from contracts_seed import FIXED_UTCNOW, SEED_EXAMPLE_TEXT, channel_sample_bytes, channel_sample_event, seed_example

from card_leak import shows_test_card
from payevents.contracts import (
    LEGACY_EVENT_NAMESPACE,
    UNSET,
    EventValidationError,
    PaymentProcessed,
    decode_event,
    encode_event,
    legacy_event_id,
    to_builtins,
    upcast_legacy,
    validate_document,
)


def test_event_page_example_validates_as_published() -> None:
    decoded = decode_event(SEED_EXAMPLE_TEXT.encode())
    ev = decoded.event
    assert isinstance(ev, PaymentProcessed)
    assert not decoded.legacy and decoded.extras == {}
    assert (decoded.event_type, decoded.version, decoded.event_id) == (
        "PaymentProcessed",
        "1.0.0",
        "e7f8a9b0-c1d2-3e4f-5a6b-7c8d9e0f1a2b",
    )
    assert decoded.payment_id == "pay_1234567890"
    assert ev.timestamp == datetime(2025, 12, 11, 10, 30, tzinfo=UTC)
    # lossless: the JSON number 99.99 is exactly Decimal("99.99"), never 99.98999...
    assert ev.data.amount.value == Decimal("99.99") and str(ev.data.amount.value) == "99.99"
    assert ev.data.amount.currency == "USD"
    assert (ev.data.paymentMethod.type, ev.data.paymentMethod.last4) == ("credit_card", "4242")
    assert ev.data.invoiceId == "INV-2025-000123"
    assert ev.data.metadata.orderId == "ORD-12345"  # type: ignore[union-attr]
    assert validate_document(seed_example()) == []
    assert validate_document(SEED_EXAMPLE_TEXT) == []


def test_seed_example_round_trips_through_encode() -> None:
    ev = decode_event(SEED_EXAMPLE_TEXT.encode()).event
    raw = encode_event(ev)
    assert b'"value":99.99' in raw  # a JSON number, not a string
    assert json.loads(raw) == json.loads(SEED_EXAMPLE_TEXT)
    assert decode_event(raw).event == ev
    built = to_builtins(ev)
    assert built["data"]["amount"] == {"value": Decimal("99.99"), "currency": "USD"}
    assert built["timestamp"] == "2025-12-11T10:30:00Z"


def test_seed_example_without_optional_fields_validates() -> None:
    doc = seed_example()
    del doc["data"]["invoiceId"]
    del doc["data"]["metadata"]["orderId"]
    decoded = decode_event(json.dumps(doc).encode())
    assert decoded.event.data.invoiceId is UNSET
    assert decoded.event.data.metadata.orderId is UNSET  # type: ignore[union-attr]
    assert b"invoiceId" not in encode_event(decoded.event)


def test_channel_page_sample_is_accepted_as_legacy_and_normalized() -> None:
    raw = channel_sample_bytes()  # json.dumps(payment_event).encode('utf-8') as the page's serializer does
    decoded = decode_event(raw)
    assert decoded.legacy is True
    ev = decoded.event
    assert isinstance(ev, PaymentProcessed)
    assert (ev.eventType, ev.version) == ("PaymentProcessed", "1.0.0")
    key = "PAY-123-456-2024-11-11-99.99"
    assert ev.eventId == str(uuid.uuid5(LEGACY_EVENT_NAMESPACE, key)) == legacy_event_id(key)
    assert LEGACY_EVENT_NAMESPACE == uuid.uuid5(uuid.NAMESPACE_URL, "urn:payevents:legacy:PAYMENT_PROCESSED:1.0")
    assert ev.timestamp == FIXED_UTCNOW.replace(tzinfo=UTC)  # naive read as UTC
    assert ev.data.processedAt == ev.timestamp
    assert ev.data.paymentId == "PAY-123-456"
    assert ev.data.amount.value == Decimal("99.99") and ev.data.amount.currency == "USD"
    assert (ev.data.paymentMethod.type, ev.data.paymentMethod.last4) == ("credit_card", "4242")
    assert ev.data.gatewayReference == "stripe_123xyz"
    assert ev.data.metadata.orderId == "ORD-789"  # type: ignore[union-attr]
    # what the legacy event does not have stays absent: no placeholders
    assert ev.data.customerId is UNSET
    assert ev.data.transactionId is UNSET
    assert ev.data.invoiceId is UNSET
    assert ev.data.metadata.description is UNSET  # type: ignore[union-attr]
    assert decoded.extras["merchantId"] == "MERCH-456"
    assert decoded.extras["correlationId"] == "corr-123-abc"
    assert decoded.extras["source"] == "payment_service"
    assert decoded.extras["environment"] == "prod"
    assert decoded.extras["idempotencyKey"] == key
    assert decoded.extras["status"] == "SUCCESS"
    assert "expiryMonth" not in decoded.extras and "expiryYear" not in decoded.extras
    assert upcast_legacy(raw) == decoded


def test_legacy_replay_derives_the_same_event_id_and_other_keys_differ() -> None:
    first = decode_event(channel_sample_bytes())
    again = decode_event(channel_sample_bytes(datetime(2024, 11, 12, 0, 0)))  # noqa: DTZ001 - naive like utcnow()
    assert first.event_id == again.event_id
    other = channel_sample_event()
    other["metadata"]["idempotencyKey"] = "PAY-123-456-2024-11-11-100.00"
    assert decode_event(json.dumps(other).encode()).event_id != first.event_id


def test_legacy_timestamp_without_microseconds_and_with_offset() -> None:
    plain = decode_event(channel_sample_bytes(datetime(2024, 11, 11, 9, 15, 30)))  # noqa: DTZ001
    assert plain.event.timestamp == datetime(2024, 11, 11, 9, 15, 30, tzinfo=UTC)
    doc = channel_sample_event()
    doc["timestamp"] = "2024-11-11T10:15:30+01:00"
    assert decode_event(json.dumps(doc).encode()).event.timestamp == datetime(2024, 11, 11, 9, 15, 30, tzinfo=UTC)


def test_normalized_legacy_event_is_never_emitted() -> None:
    decoded = decode_event(channel_sample_bytes())
    with pytest.raises(EventValidationError) as exc:
        encode_event(decoded.event)
    paths = {e.path for e in exc.value.errors}
    assert {"data.customerId", "data.transactionId", "data.metadata.description"} <= paths
    with pytest.raises(EventValidationError) as exc2:
        encode_event(channel_sample_event())
    assert [e.rule for e in exc2.value.errors] == ["legacy"]


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda d: d["payload"].update(status="FAILED"), "payload.status"),
        (lambda d: d["metadata"].pop("idempotencyKey"), "metadata.idempotencyKey"),
        (lambda d: d["payload"]["amount"].update(currency="usd"), "payload.amount.currency"),
        (lambda d: d["payload"]["amount"].update(value=99.999), "payload.amount.value"),
        (lambda d: d["payload"]["paymentMethod"].update(last4="42424"), "payload.paymentMethod.last4"),
        (lambda d: d.update(timestamp="yesterday"), "timestamp"),
        (lambda d: d["payload"].update(orderId="4111 1111 1111 1111"), "payload.orderId"),
    ],
)
def test_bad_legacy_events_are_rejected_with_the_path(mutate, path) -> None:  # type: ignore[no-untyped-def]
    doc = channel_sample_event()
    mutate(doc)
    with pytest.raises(EventValidationError) as exc:
        decode_event(json.dumps(doc).encode())
    assert path in [e.path for e in exc.value.errors]
    assert not shows_test_card(str(exc.value))


def test_decode_accepts_bytes_like_values() -> None:
    raw = SEED_EXAMPLE_TEXT.encode()
    expected = decode_event(raw)
    assert decode_event(bytearray(raw)) == expected
    assert decode_event(memoryview(raw)) == expected  # type: ignore[arg-type]
    with pytest.raises(EventValidationError, match="not valid JSON"):
        decode_event(b"")
