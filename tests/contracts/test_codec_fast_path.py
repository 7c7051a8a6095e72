"""The codec's fast path only accepts quickly: whatever it accepts, the precise path (the authority) accepts
as the same event, and whatever the precise path rejects, decode_event rejects with the precise path's errors.

Differential tests: hostile variants of valid events (values replaced, fields added or removed, whitespace
anywhere, keys and strings written with JSON escapes, card numbers, string amounts) go through
``decode_event`` and through ``codec._precise`` alone; the card guard's cheap prefilter is held equal to its
reference (one regex over the whole document)."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from typing import Any

import pytest
from contracts_seed import SEED_EXAMPLE_TEXT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from payevents.bench.contracts import make_legacy, make_processed
from payevents.contracts import cardguard, codec, encode_event
from payevents.contracts.codec import EventValidationError, decode_event

_CARD = "4111 1111 1111 1111"


def _outcome(fn: Any, raw: bytes) -> tuple[str, Any]:
    try:
        d = fn(raw)
    except EventValidationError as exc:
        return "rejected", [(e.path, e.rule, e.message) for e in exc.errors]
    return "accepted", (d.event, d.legacy, d.extras)


def _same_as_precise(raw: bytes) -> None:
    fast = _outcome(decode_event, raw)
    precise = _outcome(lambda r: codec._precise(r, False), raw)
    assert fast == precise, raw
    if fast[0] == "rejected":
        assert not any(cardguard.contains_card_number(m) for _p, _r, m in fast[1])


# -- holes the fast path had: each was accepted, the precise path rejects it ----------------------------


def _canonical() -> bytes:
    return encode_event(make_processed(1)[0])


def test_an_amount_string_under_an_escaped_value_key_is_rejected() -> None:
    raw = _canonical().replace(b'"value":10.00', b'"val\\u0075e":"10.00"')
    with pytest.raises(EventValidationError) as info:
        decode_event(raw)
    assert [(e.path, e.rule) for e in info.value.errors] == [("data.amount.value", "type")]


def test_an_amount_string_after_a_long_gap_is_rejected() -> None:
    raw = _canonical().replace(b'"value":10.00', b'"value"' + b" " * 40 + b':\n\t"10.00"')
    with pytest.raises(EventValidationError) as info:
        decode_event(raw)
    assert [(e.path, e.rule) for e in info.value.errors] == [("data.amount.value", "type")]


# -- the card guard's prefilter = its reference -----------------------------------------------------------

_PIECES = st.sampled_from(["0", "1", "4", "9", "a", "F", "-", " ", ".", "/", "_", "x", '"', ":", "\n", "\\", "é", "٣"])


@st.composite
def _raw_texts(draw: st.DrawFn) -> bytes:
    parts = draw(st.lists(st.one_of(
        _PIECES,
        st.text(alphabet="0123456789", min_size=1, max_size=20),
        st.uuids().map(str),
        st.uuids().map(lambda u: "".join(c if c == "-" else str(int(c, 16) % 10) for c in str(u))),  # all-digit
        st.just(_CARD), st.just("4111-1111-1111-1111"), st.just("2025-12-11T10:30:00Z"),
    ), max_size=30))
    return "".join(parts).encode("utf-8")


@settings(max_examples=1000, deadline=None)
@given(_raw_texts())
def test_the_card_prefilter_answers_like_its_reference(raw: bytes) -> None:
    assert cardguard.raw_may_contain_card(raw) == cardguard.reference_raw_may_contain_card(raw)


def test_the_card_prefilter_answers_like_its_reference_on_bench_events() -> None:
    raws = [encode_event(e) for e in make_processed(3000)] + make_legacy(200)
    answers = [cardguard.raw_may_contain_card(r) for r in raws]
    assert answers == [cardguard.reference_raw_may_contain_card(r) for r in raws]
    assert any(answers)  # some uuids are digits in their first groups: the UUID rule, not the first scan, clears them


def test_a_card_number_next_to_an_all_digit_uuid_is_still_found() -> None:
    u = "12345678-1234-5123-8123-123456789012"
    for text in (f"{u} {_CARD}", f"{_CARD}-{u}", f"{u}{_CARD}", f"x{_CARD}x{u}"):
        raw = json.dumps({"d": text}).encode()
        assert cardguard.raw_may_contain_card(raw) == cardguard.reference_raw_may_contain_card(raw) is True


# -- decode_event = the precise path on hostile variants of valid events ---------------------------------

_SEED: dict[str, Any] = json.loads(SEED_EXAMPLE_TEXT)
_LEGACY: dict[str, Any] = json.loads(make_legacy(1)[0])


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    return out


_JSON_LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(-10**20, 10**20),
    st.decimals(min_value=-10**15, max_value=10**15, allow_nan=False, allow_infinity=False),
    st.sampled_from([Decimal("10.00"), Decimal("10.001"), Decimal("0"), Decimal("1E+3"),
                     Decimal("100000000000000.01")]),
    st.text(max_size=12), st.sampled_from(["", "10.00", "USD", "usd", _CARD, "4111111111111111", "1.0.0", "2.0.0",
                                           "PaymentProcessed", "PaymentFailed", "PAYMENT_PROCESSED", "4242",
                                           str(uuid.uuid4()), "2025-12-11T10:30:00", "2025-12-11T10:30:00+01:00",
                                           "\\", "é", "[{"]),
)
_VALUES = st.recursive(_JSON_LEAVES, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["value", "currency", "a", "x"]), inner, max_size=3)
), max_leaves=6)


class _Writer:
    """JSON text with random whitespace and random \\u escapes in keys and strings (numbers as written)."""

    def __init__(self, draw: st.DrawFn) -> None:
        self.draw = draw

    def ws(self) -> str:
        return self.draw(st.sampled_from(["", "", "", " ", "\n  ", " " * 40]))

    def string(self, text: str) -> str:
        out = []
        for ch in text:
            if self.draw(st.integers(0, 9)) == 0:
                out.append(f"\\u{ord(ch):04x}" if ord(ch) < 0x10000 else json.dumps(ch)[1:-1])
            else:
                out.append(json.dumps(ch, ensure_ascii=False)[1:-1])
        return '"' + "".join(out) + '"'

    def write(self, obj: Any) -> str:
        w = self.ws
        if isinstance(obj, dict):
            items = [f"{w()}{self.string(str(k))}{w()}:{w()}{self.write(v)}{w()}" for k, v in obj.items()]
            return "{" + ",".join(items) + "}"
        if isinstance(obj, list):
            return "[" + ",".join(w() + self.write(v) + w() for v in obj) + "]"
        if isinstance(obj, str):
            return self.string(obj)
        if isinstance(obj, Decimal):
            return str(obj) if obj.is_finite() else "0"
        return json.dumps(obj)


@st.composite
def _variants(draw: st.DrawFn) -> bytes:
    doc = json.loads(json.dumps(draw(st.sampled_from([_SEED, _LEGACY]))))
    if draw(st.integers(0, 3)) == 0:  # the amount written as a string: msgspec would read it as a Decimal
        body = doc["data" if "data" in doc else "payload"]
        body["amount"]["value"] = str(body["amount"]["value"])
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.sampled_from(_paths(doc)[1:]))
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(_VALUES)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent[path[-1]], dict):
            parent[path[-1]][draw(st.sampled_from(["value", "extra", "note", "currency"]))] = draw(_VALUES)
        if not isinstance(doc, dict) or not doc:
            break
    if draw(st.booleans()):
        return json.dumps(doc, default=str, separators=(",", ":"), ensure_ascii=False).encode()
    return _Writer(draw).write(doc).encode()


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_variants())
def test_decode_event_answers_like_the_precise_path(raw: bytes) -> None:
    _same_as_precise(raw)


_GLUED_TO_A_UUID = "abcdef12-1234-1234-1234-4111111111111111"
_UUID_AFTER_A_DATE = "01.02.2026abcd-1234-1234-1234-123456789011"  # 1234123456789011 is Luhn-valid


def test_the_card_prefilter_and_the_precise_search_agree_on_uuid_shaped_tokens() -> None:
    # The prefilter blanked a UUID-shaped run even when a digit followed it (the card search does not: it is no
    # UUID then), and the card search left a UUID alone when another never-a-card token (a date) was found first
    # and overlapped it (the prefilter blanks it): either way the prefilter said "no card" over a card number the
    # search finds, and the event took the fast path with a card number in it, into every store
    assert cardguard.contains_card_number(_GLUED_TO_A_UUID)
    assert cardguard.raw_may_contain_card(json.dumps({"d": _GLUED_TO_A_UUID}).encode())
    assert not cardguard.contains_card_number(_UUID_AFTER_A_DATE)  # a UUID-shaped token is never a card number
    raw = json.dumps({"note": f"paid {_GLUED_TO_A_UUID}"}).encode()
    assert cardguard.holds_card_number(raw)  # a dead letter's body is masked before it is stored
    assert not cardguard.holds_card_number(cardguard.mask_card_numbers(raw))


@pytest.mark.parametrize("text", [
    _CARD, "card 4111-1111-1111-1111 on file", "4111\\n1111\\n1111\\n1111", "\\u0034111111111111111",
    "ref 12345678-1234-5123-8123-123456789012 paid", "call +4930123456789",
    # a card number glued to the end of a UUID-shaped prefix: no UUID (a UUID ends at a non-alphanumeric), a card
    _GLUED_TO_A_UUID,
    # a UUID-shaped token that starts inside a date: a UUID, so no card, whatever token is found first
    _UUID_AFTER_A_DATE,
])
@pytest.mark.parametrize("field", ["description", "orderId"])
def test_card_data_in_free_text_is_judged_like_the_precise_path(text: str, field: str) -> None:
    doc = json.loads(SEED_EXAMPLE_TEXT)
    doc["data"]["metadata"][field] = "@@"
    raw = json.dumps(doc).replace('"@@"', '"' + text + '"').encode()
    _same_as_precise(raw)


def test_every_bench_event_is_accepted_as_the_precise_path_reads_it() -> None:
    for raw in [encode_event(e) for e in make_processed(300)] + make_legacy(50):
        assert codec._fast(raw, False) is not None
        _same_as_precise(raw)


_CARD_TEXTS = st.one_of(st.text(max_size=20), st.sampled_from([
    _CARD, "4111111111111111", "x4111111111111111", "411111111111", "4111 1111 1111 1112", "٤١١١١١١١١١١١١١١١",
    "PAY-5-2024-11-11-99.99", "12345678-1234-5123-8123-123456789012",
]))
_DOCS = st.recursive(st.one_of(st.none(), st.integers(), _CARD_TEXTS), lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(_CARD_TEXTS, inner, max_size=4)), max_leaves=12)


@settings(max_examples=1000, deadline=None)
@given(_DOCS)
def test_has_card_path_answers_like_card_paths(doc: Any) -> None:
    assert cardguard.has_card_path(doc) == (next(cardguard.card_paths(doc), None) is not None)


@pytest.mark.parametrize("raw", [b'"4111\\n1111\\n1111\\n1111"', b'"\\u0034111111111111111"'])
def test_a_document_that_is_one_escaped_string_is_masked(raw: bytes) -> None:
    assert cardguard.holds_card_number(raw)
    masked = cardguard.mask_card_numbers(raw)
    assert not cardguard.holds_card_number(masked) and masked.endswith(b'1111"')
