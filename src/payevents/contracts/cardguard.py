"""The card-data guard: a string that carries a Luhn-valid 13–19 digit number is card data.

Candidates are digit runs of 13–19 digits, either contiguous or grouped the way card numbers are
written (4-4-4-4[-3] or Amex/Diners 4-6-4/5, the same space or dash between groups). A grouped match
must stand alone (no letter, digit or further group next to it), so UUIDs and dates never qualify. The
digits are never returned, logged or put in an error message: only the fact and the place.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, Final

_CANDIDATE: Final = re.compile(
    r"(?<!\d)\d{13,19}(?!\d)"
    r"|(?<![0-9A-Za-z])(?<!\d[ -])(?<![0-9A-Za-z]-)"
    r"(?:\d{4}([ -])\d{4}\1\d{4}\1\d{4}(?:\1\d{3})?|\d{4}([ -])\d{6}\2\d{4,5})"
    r"(?![0-9A-Za-z])(?![ -]\d)(?!-[A-Za-z])",
    re.ASCII,
)
#: raw bytes -> a skeleton: digits, spaces and dashes become "0", a backslash stays, everything else "x".
#: Every candidate (13+ digits, or grouped 4-4-4-4 / 4-6-5) is then a run of at least 13 "0"s.
_SKELETON: Final = bytes(
    ord("0") if (48 <= b <= 57 or b in b" -") else b if b == 92 else ord("x") for b in range(256)
)
_RUN: Final = b"0" * 13
#: second, still cheap, stage over the raw bytes: a superset of the candidates of _CANDIDATE (13 digits in a
#: row, or 4-4-4-4 / 4-6-4 groups), so that UUIDs with long digit-and-dash stretches do not take the slow path
_RAW_CANDIDATE: Final = re.compile(rb"\d{13}|\d{4}([ -])\d{4}\1\d{4}\1\d{4}|\d{4}([ -])\d{6}\2\d{4}|\\")

CARD_MESSAGE: Final = "looks like a card number (Luhn-valid 13–19 digits); card data is not allowed, value not shown"


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum of a string of ASCII digits."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i & 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def contains_card_number(text: str) -> bool:
    """True when ``text`` contains a standalone Luhn-valid 13–19 digit number (spaces/dashes allowed)."""
    for m in _CANDIDATE.finditer(text):
        digits = m.group(0).replace(" ", "").replace("-", "")
        if 13 <= len(digits) <= 19 and digits.isascii() and luhn_ok(digits):
            return True
    return False


def raw_may_contain_card(raw: bytes) -> bool:
    """Cheap prefilter over raw JSON bytes: False means no string in it can hold a card number.

    JSON escapes could spell digits or separators, so any backslash also answers True.
    """
    skeleton = raw.translate(_SKELETON)
    if _RUN not in skeleton and b"\\" not in skeleton:
        return False
    return _RAW_CANDIDATE.search(raw) is not None


_RAW_DIGIT_RUN: Final = re.compile(rb"(?<![0-9])(?:[0-9][ -]?){12,18}[0-9](?![0-9])")


def mask_card_numbers(raw: bytes) -> bytes:
    """``raw`` with every Luhn-valid 13–19 digit run (spaces/dashes allowed) masked but its last four digits,
    keeping length and separators: what may be stored of a record rejected for card data."""

    def _mask(m: re.Match[bytes]) -> bytes:
        run = m.group(0)
        digits = bytes(c for c in run if 48 <= c <= 57).decode()
        if not (13 <= len(digits) <= 19 and luhn_ok(digits)):
            return run
        keep, out = 4, bytearray()
        for c in reversed(run):
            if 48 <= c <= 57:
                out.append(c if keep > 0 else 42)  # "*"
                keep -= 1
            else:
                out.append(c)
        return bytes(reversed(out))

    return _RAW_DIGIT_RUN.sub(_mask, raw)


def card_paths(obj: Any, path: str = "") -> Iterator[str]:
    """JSON paths (``data.metadata.description``) of every string (value or key) in ``obj`` holding card data."""
    if isinstance(obj, str):
        if contains_card_number(obj):
            yield path
    elif isinstance(obj, dict):
        for key, value in obj.items():
            sub = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and contains_card_number(key):
                yield sub
            yield from card_paths(value, sub)
    elif isinstance(obj, list | tuple):
        for i, value in enumerate(obj):
            yield from card_paths(value, f"{path}[{i}]")


__all__ = ["CARD_MESSAGE", "card_paths", "contains_card_number", "luhn_ok", "mask_card_numbers", "raw_may_contain_card"]
