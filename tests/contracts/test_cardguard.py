"""The card-data guard: Luhn-valid 13–19 digit numbers are found (and UUIDs, dates and ids are not)."""

from __future__ import annotations

import uuid

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from payevents.contracts.cardguard import (
    card_paths,
    contains_card_number,
    holds_card_number,
    luhn_ok,
    mask_card_text,
    raw_may_contain_card,
)

VALID = ["4242424242424242", "4111111111111111", "5555555555554444", "378282246310005", "6011111111111117"]


def _luhn_complete(body: str) -> str:
    for d in "0123456789":
        if luhn_ok(body + d):
            return body + d
    raise AssertionError


def test_luhn() -> None:
    assert all(luhn_ok(n) for n in VALID)
    assert not luhn_ok("4242424242424241")


def test_card_numbers_are_found_in_text_and_groupings() -> None:
    for n in VALID:
        assert contains_card_number(n)
        assert contains_card_number(f"paid with {n}.")
    assert contains_card_number("4242 4242 4242 4242")
    assert contains_card_number("card: 4242-4242-4242-4242 exp 12/25")
    assert contains_card_number("amex 3782 822463 10005")
    assert contains_card_number(_luhn_complete("424242424242424242"))  # 19 digits


def test_non_cards_are_not_found() -> None:
    for text in [
        "4242424242424241",  # Luhn fails
        "42424242424",  # too short
        "2025-12-11T10:30:00Z",
        "pay_1234567890",
        "ORD-12345",
        "4242",
        "+1 415 555 0100",
        "12345678-1234-4234-8234-123456789012",
    ]:
        assert not contains_card_number(text), text


def test_uuids_never_look_like_cards() -> None:
    for _ in range(20_000):
        u = str(uuid.uuid4())
        assert not contains_card_number(u) and not contains_card_number(f"pay-{u}")


@settings(max_examples=300, deadline=None)
@given(
    prefix=st.text(max_size=20),
    body=st.text(alphabet="0123456789", min_size=12, max_size=18),
    sep=st.sampled_from(["", " ", "-"]),
    suffix=st.text(max_size=20),
)
def test_prefilter_never_misses_a_card(prefix: str, body: str, sep: str, suffix: str) -> None:
    number = _luhn_complete(body)
    if sep and len(number) == 16:
        number = sep.join(number[i : i + 4] for i in range(0, 16, 4))
    text = f"{prefix} {number} {suffix}"
    if contains_card_number(text):
        raw = msgspec.json.encode({"data": {"note": text}})
        assert raw_may_contain_card(raw)
        assert list(card_paths(msgspec.json.decode(raw))) == ["data.note"]


_NUMBERS = st.text(alphabet="0123456789", min_size=12, max_size=18).map(lambda body: _luhn_complete(body))
#: UUIDs, and UUIDs cut short in their last group (what follows them completes their shape)
_UUIDS = st.builds(lambda u, k: str(u)[:k], st.uuids(), st.sampled_from([36, 24, 26, 30]))
#: card numbers in groups of four, and groups of other lengths
_GROUPED = st.builds(lambda n, k: " ".join(n[i : i + k] for i in range(0, len(n), k)), _NUMBERS,
                     st.sampled_from([4, 6]))
_DATES = st.sampled_from(["2026-11-30", "30.11.2026", "11/30/2026", "01.02.2026"])
_BITS = st.text(alphabet="0123456789abcdefABCDEF-./ _x:+g", max_size=12)


@settings(max_examples=400, deadline=None)
@given(st.lists(_UUIDS | _DATES | _BITS, max_size=2).map("".join), _NUMBERS,
       st.lists(_NUMBERS | _UUIDS | _DATES | _BITS, max_size=2).map("".join))
def test_prefilter_never_misses_a_card_glued_to_ids_and_dates(before: str, number: str, after: str) -> None:
    # a card number, UUIDs, dates and bits of ids run into each other with no space between them
    text = before + number + after
    if contains_card_number(text):
        assert raw_may_contain_card(msgspec.json.encode({"data": {"note": text}})), text


_SPLIT_GROUP = "7684 6186 4990 0414 131455 5489 3531 725"  # 6186…131455 is a card; 1455 5489 3531 725 becomes one


def test_masking_leaves_no_card_number_behind() -> None:
    # Masking kept the last four digits of 6186 4990 0414 131455 and masked the two before them: 1455 then stood apart
    # and made a Luhn-valid run with the groups after it, so the masked text still looked like a card number — the
    # reason or log line it went into kept one, and a dead letter's body was withheld whole instead of masked
    from payevents.runtime.deadletter import _scrub

    masked = mask_card_text(_SPLIT_GROUP)
    assert not contains_card_number(masked) and masked.startswith("7684 **** **** **** ******")
    body, changed = _scrub(msgspec.json.encode({"note": _SPLIT_GROUP}))
    assert changed and body is not None and not holds_card_number(body)


@settings(max_examples=300, deadline=None)
@given(st.lists(_NUMBERS | _GROUPED | _UUIDS | _DATES | _BITS, min_size=1, max_size=5).map("".join))
def test_masked_text_holds_no_card_number(text: str) -> None:
    assert not contains_card_number(mask_card_text(text)), text


#: every ASCII separator of the card rules, digits, letters, and a few non-ASCII digits and separators
_TEXT_CHARS = "0123456789" + " \t\n\r\v\f-./\\_" + "abcxyzAF:+#" + "\u0663\uff11\u00a0\u2013\u3000"


@settings(max_examples=500, deadline=None)
@given(st.lists(st.text(alphabet=_TEXT_CHARS, max_size=30) | _NUMBERS | _GROUPED | _UUIDS | _DATES,
                max_size=4).map("".join))
def test_the_text_skeleton_answers_as_the_precise_search_begins(text: str) -> None:
    # the skeleton (a translate and a find) stands in front of the regex for ASCII text: it may only say "no" where
    # the regex finds no 13 digits joined by at most three separators
    from payevents.contracts.cardguard import _MAYBE, _may_hold_card

    assert _may_hold_card(text) == (_MAYBE.search(text) is not None), text
    if not _may_hold_card(text):
        assert not contains_card_number(text)


@pytest.mark.parametrize("text", [
    "1234 5678\\9012 3", "4111\\1111\\1111\\1111", "4111_1111_1111_1111", "4111\v1111\f1111\r1111",
])
def test_the_text_skeleton_keeps_every_ascii_separator(text: str) -> None:
    from payevents.contracts.cardguard import _may_hold_card

    assert _may_hold_card(text)


def test_card_paths_walk_keys_lists_and_values() -> None:
    doc = {"a": ["x", {"b": "4242424242424242"}], "4111111111111111": 1, "c": 4242424242424242}
    assert list(card_paths(doc)) == ["a[1].b", "4111111111111111"]


@pytest.mark.parametrize("text", [
    "ab123456-7890-4123-a456-78901234abcd",  # a 16-character digit-and-dash stretch: no card candidate in it
    "pay_18384ed4-bdaf-4fee-be85-dd68579d6304",
    "2026-11-21T16:42:29.707616+00:00",
])
def test_the_raw_prefilter_lets_ids_and_dates_take_the_fast_path(text: str) -> None:
    """Digit-and-dash stretches that cannot hold a card candidate must not cost the slow path."""
    assert not raw_may_contain_card(msgspec.json.encode({"v": text}))


def test_mask_card_numbers_keeps_the_last_four_and_the_layout() -> None:
    from payevents.contracts.cardguard import mask_card_numbers

    raw = b'{"a":"card 4111 1111 1111 1111 ok","b":"4242424242424242","c":"4111111111111112","d":"2026-11-21"}'
    masked = mask_card_numbers(raw)
    assert masked == (b'{"a":"card **** **** **** 1111 ok","b":"************4242","c":"4111111111111112",'
                      b'"d":"2026-11-21"}')  # a Luhn-invalid run and a date stay as they were
    assert len(masked) == len(raw) and not contains_card_number(masked.decode())
