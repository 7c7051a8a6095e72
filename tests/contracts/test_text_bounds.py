"""Text every store can hold: ids and references at most 255 characters, codes at most 64 (the stores' column
widths), and no NUL (U+0000) in any string or key. PostgreSQL refuses both (``value too long``, ``cannot contain
NUL``) where SQLite keeps them, so an event carrying one used to pass the contract and then fail in the store of
every service on PostgreSQL, batch after batch, holding its partition up. The contract now refuses it, naming the
field and the rule, and every service dead-letters it at once on either database."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from payevents.bench.events import BenchEvent, make_events
from payevents.contracts.codec import EventValidationError, decode_event, validate_document
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


@pytest.mark.parametrize("service", ["ledger", "invoices", "analytics", "notifications"])
def test_every_service_dead_letters_such_an_event_at_once_on_either_database(store_settings: Settings,
                                                                            service: str) -> None:
    from payevents.bench.suites import fill_channel, seed_customers
    from payevents.runtime.consumer import ConsumerRuntime
    from payevents.runtime.deadletter import list_dead_letters
    from payevents.services import load_service

    events = make_events(3)
    too_long, with_nul, fine = (json.loads(e.value) for e in events)
    too_long["data"]["customerId"] = "c" * 300
    with_nul["data"]["metadata"]["description"] = "Order \x00 7"
    records = [BenchEvent(key=e.key, value=json.dumps(doc).encode(), headers=e.headers)
               for e, doc in zip(events, (too_long, with_nul, fine), strict=True)]
    fill_channel(store_settings, records)
    seed_customers(store_settings)
    with ConsumerRuntime(store_settings, load_service(service), poll_timeout=0.2) as rt:
        rt.backoff_initial = rt.backoff_max = 0.01
        for _ in range(50):
            rt.step()
            if rt.stats.consumed == 3:
                break
        assert (rt.stats.consumed, rt.stats.applied, rt.stats.dead_lettered, rt.stats.retries) == (3, 1, 2, 0)
    reasons = sorted(letter.reason for letter in list_dead_letters(store_settings, service=service))
    assert reasons == ["invalid: data.customerId: 300 characters; at most 255",
                       "invalid: data.metadata.description: holds the NUL character (U+0000), which no text may hold"]
