"""The tests' own check that a text shows none of the test card numbers (independent of ``payevents.cardguard``).

A leak is eight consecutive digits of a test card, whatever separators people type between them (spaces, dots,
dashes, underscores, slashes, a line break) and in any width (full-width digits are NFKC-folded). Eight digits and
not a bare ``4111``: texts under test carry timestamps (``…19.904111+00:00``) and UUIDs (``…-4111-…``) that hold
``4111`` by chance, and a masked number keeps its last four digits (``**** **** **** 1111``)."""

from __future__ import annotations

import re
import unicodedata

#: the card numbers the tests type (each Luhn-valid)
TEST_CARDS = ("4111111111111111", "5555555555554444")
WINDOW = 8
_SEPARATORS = re.compile(r"(?<=\d)[\s.\-_/]{1,3}(?=\d)")
_WINDOWS = frozenset(card[i: i + WINDOW] for card in TEST_CARDS for i in range(len(card) - WINDOW + 1))


def shows_test_card(text: str | bytes) -> bool:
    """Whether ``text`` shows eight or more consecutive digits of a test card number."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    digits = _SEPARATORS.sub("", unicodedata.normalize("NFKC", text))
    return any(w in digits for w in _WINDOWS)
