"""The eventType header rule (contracts.channel): what a record says its body is, and when that is a lie."""

from __future__ import annotations

import pytest

from payevents.contracts.channel import H_EVENT_TYPE, event_type_header, event_type_header_problem

T = H_EVENT_TYPE


@pytest.mark.parametrize(("headers", "expected"), [
    ((), None),
    (((T, b"PaymentFailed"),), "PaymentFailed"),
    ((("content-type", b"application/json"), (T, b"PaymentCaptured")), "PaymentCaptured"),
    (((T, b"PaymentFailed"), (T, b"PaymentFailed")), None),  # two: says nothing
    (((T, b"\xffPaymentFailed"),), None),  # not UTF-8: says nothing
    ((("EventType", b"PaymentFailed"),), None),  # header names are exact
])
def test_the_type_a_record_says_it_is(headers: tuple[tuple[str, bytes], ...], expected: str | None) -> None:
    assert event_type_header(headers) == expected


def test_the_header_names_the_body_type_or_is_absent() -> None:
    assert event_type_header_problem((), "PaymentProcessed") is None
    assert event_type_header_problem(((T, b"PaymentProcessed"),), "PaymentProcessed") is None
    assert event_type_header_problem(((T, b"PaymentFailed"),), "PaymentProcessed") == (
        "headers.eventType: 'PaymentFailed' is not the body's eventType 'PaymentProcessed'")
    assert event_type_header_problem(((T, b"PaymentProcessed"), (T, b"PaymentProcessed")), "PaymentProcessed") == (
        "headers.eventType: given 2 times; a record carries at most one")
    assert "(not UTF-8)" in (event_type_header_problem(((T, b"\xff"),), "PaymentProcessed") or "")
    long = event_type_header_problem(((T, b"x" * 500),), "PaymentProcessed") or ""
    assert len(long) < 200 and "…" in long


def test_the_older_envelope_may_carry_its_own_type_name() -> None:
    legacy = ((T, b"PAYMENT_PROCESSED"),)
    assert event_type_header_problem(legacy, "PaymentProcessed", legacy=True) is None
    assert event_type_header_problem(((T, b"PaymentProcessed"),), "PaymentProcessed", legacy=True) is None
    assert event_type_header_problem(legacy, "PaymentProcessed") is not None  # a current body may not
