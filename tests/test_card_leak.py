"""The tests' card-leak check: it finds the test cards as typed and ignores what holds ``4111`` by chance."""

from __future__ import annotations

import pytest

from card_leak import shows_test_card


@pytest.mark.parametrize("text", [
    "4111 1111 1111 1111", "4111.1111.1111.1111", "4111_1111_1111_1111", "4111/1111/1111/1111",
    "4111-1111\n1111-1111", "４１１１１１１１１１１１１１１１", "card 5555555555554444 thanks", "x 4111 1111 y",
    "**** 1111 1111 1111", b"card 4111 1111 1111 1111",
])
def test_a_test_card_is_found_as_people_type_it(text: str | bytes) -> None:
    assert shows_test_card(text)


@pytest.mark.parametrize("text", [
    "2026-12-03T02:37:19.904111+00:00",  # the dead letter's failed_at of the CI run of 2026-12-03
    "937745ce-d225-4111-9576-cc97997528c8", "**** **** **** 1111", "**** **** **** 4444", "amount 4111.11",
    b"payments.dev.events40_notifications_d4cfc04c",
])
def test_what_holds_4111_by_chance_is_not_a_card(text: str | bytes) -> None:
    assert not shows_test_card(text)
