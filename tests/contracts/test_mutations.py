"""The mutation table: each change to the event page's example is rejected, naming the right path."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from contracts_seed import seed_example

from payevents.contracts import EventValidationError, decode_event, encode_event, validate_document

Doc = dict[str, Any]

REQUIRED_PATHS = [
    "eventId",
    "eventType",
    "timestamp",
    "version",
    "data",
    "data.paymentId",
    "data.transactionId",
    "data.customerId",
    "data.amount",
    "data.amount.value",
    "data.amount.currency",
    "data.paymentMethod",
    "data.paymentMethod.type",
    "data.paymentMethod.last4",
    "data.gatewayReference",
    "data.processedAt",
    "data.metadata",
    "data.metadata.description",
]

CARD = "4242424242424242"


def _errors(doc: Doc) -> list[Any]:
    with pytest.raises(EventValidationError) as exc:
        decode_event(json.dumps(doc).encode())
    return exc.value.errors


def _drop(doc: Doc, path: str) -> None:
    *parents, last = path.split(".")
    for p in parents:
        doc = doc[p]
    del doc[last]


@pytest.mark.parametrize("path", REQUIRED_PATHS)
def test_missing_required_field_is_named(path: str) -> None:
    doc = seed_example()
    _drop(doc, path)
    errors = _errors(doc)
    assert (path, "required") in [(e.path, e.rule) for e in errors]
    assert f"{path}: required property is missing" in [e.message for e in errors]


def _set(path: str, value: Any) -> Callable[[Doc], None]:
    def mutate(doc: Doc) -> None:
        *parents, last = path.split(".")
        for p in parents:
            doc = doc[p]
        doc[last] = value

    return mutate


MUTATIONS: list[tuple[str, Callable[[Doc], None], str, str, str | None]] = [
    # id, mutation, path, rule, text the message must contain (None: don't care)
    ("wrong eventType", _set("eventType", "PaymentCompleted"), "eventType", "known-type", "'PaymentCompleted'"),
    ("version 1.0", _set("version", "1.0"), "version", "pattern", "'1.0'"),
    ("version 2.0.0", _set("version", "2.0.0"), "version", "supported", "'2.0.0'"),
    ("bad uuid", _set("eventId", "e7f8a9b0-c1d2-3e4f-5a6b"), "eventId", "format", "is not a UUID"),
    ("timestamp without offset", _set("timestamp", "2025-12-11T10:30:00"), "timestamp", "format", "offset"),
    ("processedAt without offset", _set("data.processedAt", "2025-12-11T10:30:00"), "data.processedAt", "format", None),
    ("invoiceId null", _set("data.invoiceId", None), "data.invoiceId", "type", "null is not allowed"),
    ("float noise 99.999 USD", _set("data.amount.value", 99.999), "data.amount.value", "minor-units", "99.999"),
    (
        "100.5 JPY",
        lambda d: d["data"].update(amount={"value": 100.5, "currency": "JPY"}),
        "data.amount.value",
        "minor-units",
        "JPY allows (0)",
    ),
    ("lowercase currency", _set("data.amount.currency", "usd"), "data.amount.currency", "iso4217", None),
    ("unknown currency", _set("data.amount.currency", "XYZ"), "data.amount.currency", "iso4217", "'XYZ'"),
    ("negative amount", _set("data.amount.value", -99.99), "data.amount.value", "positive", "-99.99"),
    ("zero amount", _set("data.amount.value", 0), "data.amount.value", "positive", None),
    ("amount as string", _set("data.amount.value", "99.99"), "data.amount.value", "type", "not a number"),
    (
        "card number in description",
        _set("data.metadata.description", f"Payment with card {CARD}"),
        "data.metadata.description",
        "card-number",
        "looks like a card number",
    ),
    (
        "grouped card number in orderId",
        _set("data.metadata.orderId", "4242 4242 4242 4242"),
        "data.metadata.orderId",
        "card-number",
        None,
    ),
    ("card number in an extra field", _set("data.note", CARD), "data.note", "card-number", None),
    ("last4 with five digits", _set("data.paymentMethod.last4", "42424"), "data.paymentMethod.last4", "pattern", None),
    ("empty customerId", _set("data.customerId", ""), "data.customerId", "minLength", "must not be empty"),
    ("data not an object", _set("data", []), "data", "type", "is not an object"),
]


@pytest.mark.parametrize(("mutate", "path", "rule", "text"), [m[1:] for m in MUTATIONS], ids=[m[0] for m in MUTATIONS])
def test_mutation_is_rejected_with_path_and_rule(
    mutate: Callable[[Doc], None], path: str, rule: str, text: str | None
) -> None:
    doc = seed_example()
    mutate(doc)
    errors = _errors(doc)
    hits = [e for e in errors if e.path == path]
    assert hits, f"no error at {path}: {errors}"
    assert rule in [e.rule for e in hits]
    for e in hits:
        assert e.message.startswith(f"{path}: ")
        if text is not None and e.rule == rule:
            assert text in e.message
    # the same document is refused on emit too
    with pytest.raises(EventValidationError):
        encode_event(doc)


def test_lowercase_currency_message_is_exact() -> None:
    doc = seed_example()
    doc["data"]["amount"]["currency"] = "usd"
    assert [str(e) for e in validate_document(doc)] == ["data.amount.currency: 'usd' is not an ISO 4217 code"]


def test_card_digits_are_never_echoed() -> None:
    doc = seed_example()
    doc["data"]["metadata"]["description"] = f"card {CARD}"
    doc["data"]["metadata"]["orderId"] = f"{CARD[:4]}-{CARD[4:8]}-{CARD[8:12]}-{CARD[12:]}"
    doc["data"]["amount"]["currency"] = "usd"
    errors = _errors(doc)
    text = " ".join(e.message for e in errors)
    assert CARD not in text and CARD[:8] not in text and CARD[4:8] + "-" not in text
    assert {e.path for e in errors if e.rule == "card-number"} == {"data.metadata.description", "data.metadata.orderId"}


def test_non_card_numbers_are_fine() -> None:
    doc = seed_example()
    doc["data"]["metadata"]["description"] = "Order 1234567890 on 2025-12-11, ref 4242424242424241 (not Luhn)"
    doc["data"]["paymentId"] = "pay_12345678-1234-4234-8234-123456789012"
    assert validate_document(doc) == []


def test_every_problem_is_reported_at_once() -> None:
    doc = seed_example()
    doc["version"] = "1.0"
    doc["data"]["invoiceId"] = None
    doc["data"]["amount"]["value"] = 100.5
    doc["data"]["amount"]["currency"] = "JPY"
    del doc["data"]["customerId"]
    paths = [e.path for e in _errors(doc)]
    assert set(paths) == {"version", "data.invoiceId", "data.amount.value", "data.customerId"}


def test_not_json_and_not_an_object() -> None:
    with pytest.raises(EventValidationError) as exc:
        decode_event(b'{"eventId": ')
    assert exc.value.errors[0].rule == "json" and exc.value.errors[0].message.startswith("$: not valid JSON")
    with pytest.raises(EventValidationError) as exc:
        decode_event(b"[1, 2]")
    assert exc.value.errors[0].message.startswith("$: an array is not an object")


def test_unknown_fields_tolerated_on_read_rejected_on_emit() -> None:
    doc = seed_example()
    doc["data"]["riskScore"] = 12
    doc["data"]["amount"]["fx"] = {"rate": 1.1}
    doc["traceparent"] = "00-abc-01"
    decoded = decode_event(json.dumps(doc).encode())
    assert decoded.event.data.amount.currency == "USD"
    with pytest.raises(EventValidationError) as exc:
        encode_event(doc)
    assert {(e.path, e.rule) for e in exc.value.errors} == {
        ("data.riskScore", "unknown-field"),
        ("data.amount.fx", "unknown-field"),
        ("traceparent", "unknown-field"),
    }
    # the model drops them: what we re-emit is the published shape
    assert b"riskScore" not in encode_event(decoded.event)


def test_newer_minor_version_is_read_but_only_published_versions_are_emitted() -> None:
    doc = seed_example()
    doc["version"] = "1.1.0"
    decoded = decode_event(json.dumps(doc).encode())
    assert decoded.version == "1.1.0"
    with pytest.raises(EventValidationError) as exc:
        encode_event(decoded.event)
    assert [(e.path, e.rule) for e in exc.value.errors] == [("version", "published")]


def test_offsets_other_than_utc_are_valid() -> None:
    doc = seed_example()
    doc["timestamp"] = "2025-12-11T11:30:00+01:00"
    assert validate_document(doc) == []


def test_encode_event_checks_models_built_in_code() -> None:
    import msgspec

    from payevents.contracts import example_event

    ev = example_event("PaymentProcessed")
    bad = msgspec.structs.replace(ev, data=msgspec.structs.replace(ev.data, customerId=msgspec.UNSET))
    with pytest.raises(EventValidationError) as exc:
        encode_event(bad)
    assert [e.path for e in exc.value.errors] == ["data.customerId"]
    with pytest.raises(EventValidationError):
        encode_event(msgspec.structs.replace(ev, eventId="not-a-uuid"))
