"""Values every store and every service can hold: ids and references at most 255 characters, codes at most 64
(the stores' column widths), no NUL (U+0000) in any string or key, and times in the years 1970–9998.

PostgreSQL refuses an over-long or NUL-bearing text (``value too long``, ``cannot contain NUL``) where SQLite keeps
it, and a time like ``0001-01-01T00:00:00+01:00`` has no UTC instant (every service reads times in UTC: Python
raises OverflowError). Such an event used to pass the contract and then fail in a service, batch after batch, its
partition held up while the failure was retried. The contract now refuses it, naming the field and the rule, and
every service dead-letters it at once on either database."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from payevents.bench.events import BenchEvent, make_events
from payevents.contracts.codec import MAX_YEAR, MIN_YEAR, EventValidationError, decode_event, validate_document
from payevents.contracts.events import MAX_CODE_LENGTH, MAX_ID_LENGTH
from payevents.settings import Settings

BASE: dict[str, Any] = json.loads(make_events(1)[0].value)


def _with(path: str, value: Any) -> bytes:
    doc = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    node = doc
    for key in parents:
        node = node[key]
    node[last] = value
    return json.dumps(doc).encode()


def _errors(raw: bytes) -> list[tuple[str, str, str]]:
    with pytest.raises(EventValidationError) as info:
        decode_event(raw)
    assert [(e.path, e.rule, e.message) for e in info.value.errors] == [
        (e.path, e.rule, e.message) for e in validate_document(raw)]
    return [(e.path, e.rule, e.message) for e in info.value.errors]


@pytest.mark.parametrize("field", ["data.paymentId", "data.customerId", "data.transactionId", "data.invoiceId",
                                   "data.gatewayReference", "data.metadata.orderId"])
def test_an_id_is_at_most_255_characters(field: str) -> None:
    assert decode_event(_with(field, "i" * MAX_ID_LENGTH))
    assert _errors(_with(field, "i" * (MAX_ID_LENGTH + 45))) == [
        (field, "maxLength", f"{field}: 300 characters; at most 255")]


def test_a_payment_method_type_is_at_most_64_characters() -> None:
    assert decode_event(_with("data.paymentMethod.type", "t" * MAX_CODE_LENGTH)).event.data.paymentMethod.type
    assert _errors(_with("data.paymentMethod.type", "t" * 65)) == [
        ("data.paymentMethod.type", "maxLength", "data.paymentMethod.type: 65 characters; at most 64")]


@pytest.mark.parametrize(("field", "value"), [("data.metadata.description", "a\x00b"), ("data.customerId", "\x00"),
                                              ("data.metadata.orderId", "ORD-\x00")])
def test_no_string_holds_a_nul(field: str, value: str) -> None:
    assert _errors(_with(field, value)) == [
        (field, "nul", f"{field}: holds the NUL character (U+0000), which no text may hold")]


def test_no_key_holds_a_nul_and_the_path_names_it_without_one() -> None:
    [(path, rule, message)] = _errors(_with("data.metadata.x\x00y", 1))
    assert (path, rule) == ("data.metadata.x\\u0000y", "nul") and "\x00" not in message


def test_the_six_characters_of_a_written_escape_are_text_like_any_other() -> None:
    raw = _with("data.metadata.description", "see \\u0000 in the manual")
    assert b"\\\\u0000" in raw
    assert decode_event(raw).event.data.metadata.description == "see \\u0000 in the manual"


@pytest.mark.parametrize(("field", "value", "ok"), [
    ("data.processedAt", "0001-01-01T00:00:00+01:00", False),  # no UTC instant
    ("timestamp", "9999-12-31T23:59:59-01:00", False),  # none either
    ("data.processedAt", "1969-12-31T23:59:59Z", False),  # before the epoch
    ("data.processedAt", f"{MIN_YEAR}-01-01T00:00:00Z", True),
    ("timestamp", f"{MAX_YEAR}-12-31T23:59:59-01:00", True),
])
def test_times_lie_in_the_years_1970_to_9998(field: str, value: str, ok: bool) -> None:
    raw = _with(field, value)
    if ok:
        assert decode_event(raw) and validate_document(raw) == []
    else:
        assert _errors(raw) == [(field, "time-range", f"{field}: {value!r} lies outside the years 1970–9998")]


def test_the_legacy_envelope_s_time_too() -> None:
    from contracts_seed import channel_sample_event

    doc = channel_sample_event()
    doc["timestamp"] = "0001-01-01T00:00:00+01:00"
    assert _errors(json.dumps(doc).encode()) == [
        ("timestamp", "time-range", "timestamp: '0001-01-01T00:00:00+01:00' lies outside the years 1970–9998")]


@pytest.mark.parametrize("service", ["ledger", "invoices", "analytics", "notifications"])
def test_every_service_dead_letters_such_events_at_once_on_either_database(store_settings: Settings,
                                                                            service: str) -> None:
    from payevents.bench.suites import fill_channel, seed_customers
    from payevents.runtime.consumer import ConsumerRuntime
    from payevents.runtime.deadletter import list_dead_letters
    from payevents.services import load_service

    events = make_events(4)
    too_long, with_nul, timeless, fine = (json.loads(e.value) for e in events)
    too_long["data"]["customerId"] = "c" * 300
    with_nul["data"]["metadata"]["description"] = "Order \x00 7"
    timeless["data"]["processedAt"] = "0001-01-01T00:00:00+01:00"
    records = [BenchEvent(key=e.key, value=json.dumps(doc).encode(), headers=e.headers)
               for e, doc in zip(events, (too_long, with_nul, timeless, fine), strict=True)]
    fill_channel(store_settings, records)
    seed_customers(store_settings)
    with ConsumerRuntime(store_settings, load_service(service), poll_timeout=0.2) as rt:
        rt.backoff_initial = rt.backoff_max = 0.01
        for _ in range(50):
            rt.step()
            if rt.stats.consumed == 4:
                break
        assert (rt.stats.consumed, rt.stats.applied, rt.stats.dead_lettered, rt.stats.retries) == (4, 1, 3, 0)
    reasons = sorted(letter.reason for letter in list_dead_letters(store_settings, service=service))
    assert reasons == ["invalid: data.customerId: 300 characters; at most 255",
                       "invalid: data.metadata.description: holds the NUL character (U+0000), which no text may hold",
                       "invalid: data.processedAt: '0001-01-01T00:00:00+01:00' lies outside the years 1970–9998"]
