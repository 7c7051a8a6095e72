"""The card-data guard: a string that carries a Luhn-valid 13–19 digit number is card data.

How a number is found (:func:`card_spans`): a *chain* is digit groups joined by short separators — one to
three of spaces (any Unicode space, tabs, line breaks), dashes (ASCII and Unicode), dots, slashes,
backslashes or underscores, mixed freely — and digits may be any Unicode decimal digits (fullwidth,
Arabic-Indic, ...). Any run of whole consecutive groups of a chain holding 13–19 digits in all, with a valid
Luhn checksum, is a card number, whatever the grouping (4-4-4-4, 4-6-5, 2-2-2-..., one digit per group).
A run of several groups must not be glued to a letter at either end; a single group of 13–19 digits may be
(``card4111111111111111``). Never a card number: a group of more than 19 digits; a chain right after ``+``
(an E.164 phone number); a UUID-shaped token (8-4-4-4-12 hex) or a hex id or hash of 20+ characters with a
letter in it (a UUID without dashes, SHA-1, SHA-256); a calendar date with a 19xx/20xx year
(YYYY-MM-DD, DD.MM.YYYY, MM/DD/YYYY with one separator); digits starting with 0 or with a compact date
(YYYYMMDD...) — no card brand's numbers start like those; an IBAN whose mod-97 check holds; 13 digits whose
EAN-13 (GTIN) check digit holds (a product code; 13-digit card numbers are no longer issued); a 13-digit
number that does not start with 4 (only Visa issued 13 digits): an epoch time in milliseconds.
The false-positive rate on realistic ids is measured by ``tests/contracts/test_cardguard_free_text.py``.

The digits are never returned, logged or put in an error message: only the fact and the place.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any, Final

import msgspec

from payevents.contracts.numbers import OutOfRange, json_integer, json_number
from payevents.errors import ContractError

#: separator characters between digit groups; up to _MAX_GAP of them (mixed) between two groups
_SEPARATORS: Final = (
    " \t\n\r\v\f\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u200b"
    "\u2028\u2029\u202f\u205f\u3000"  # spaces and line breaks
    "-\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\uff0d"  # dashes
    ".\u00b7\u2024\u2027\u30fb\uff0e\u3002"  # dots
    "/\\\u2044\u2215\uff0f\uff3c"  # slashes
    "_\uff3f"  # underscores
)
_MAX_GAP: Final = 3
_SEP: Final = "[" + re.escape(_SEPARATORS) + "]"
#: digit groups (any Unicode decimal digit) joined by 1–3 separators
_CHAIN: Final = re.compile(rf"\d+(?:{_SEP}{{1,{_MAX_GAP}}}\d+)*")
_GROUP: Final = re.compile(r"\d+")
#: a UUID-shaped token (never a card number); the same rule as :data:`_RAW_UUID`, the prefilter's, so that the
#: prefilter blanks exactly the UUIDs the search blanks
_UUID_SHAPED: Final = (
    r"(?<![0-9A-Za-z])[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}(?![0-9A-Za-z])"
)
_UUID: Final = re.compile(_UUID_SHAPED, re.ASCII)
#: the other tokens that are never card numbers; these and the UUIDs are blanked before the search (same length,
#: so positions stay), the UUIDs first and on their own: a token of these found first must not hide a UUID that
#: overlaps it from the UUID rule (the prefilter, which blanks UUIDs only, would then miss the card the search finds)
_NOT_CARDS: Final = re.compile(
    r"(?<![0-9A-Za-z])(?=[0-9]*[A-Fa-f])[0-9A-Fa-f]{20,}(?![0-9A-Za-z])"  # hex ids and hashes
    r"|(?<!\d)(?:19|20)\d\d([-/.])(?:0[1-9]|1[0-2])\1(?:0[1-9]|[12]\d|3[01])(?!\d)"
    r"|(?<!\d)(?:0[1-9]|[12]\d|3[01])([-/.])(?:0[1-9]|1[0-2])\2(?:19|20)\d\d(?!\d)"
    r"|(?<!\d)(?:0[1-9]|1[0-2])([-/.])(?:0[1-9]|[12]\d|3[01])\3(?:19|20)\d\d(?!\d)",
    re.ASCII,
)
#: digit strings that are no card number: a leading 0 (MII 0 is not issued to card issuers) or a compact
#: date(-time) with a 19xx/20xx year (20261130224500; no card brand's numbers start with 19 or 20)
_NOT_A_PAN: Final = re.compile(r"0|(?:19|20)\d\d(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])")
#: an IBAN as printed (groups of four) or written solid; blanked when its mod-97 check holds
_IBAN: Final = re.compile(r"(?<![0-9A-Za-z])[A-Z]{2}[0-9]{2}(?: ?[0-9A-Z]{4}){2,7}(?: ?[0-9A-Z]{1,3})?(?![0-9a-z])")
#: a quick "may hold a chain of 13+ digits" test before the precise search
_MAYBE: Final = re.compile(rf"\d(?:{_SEP}{{0,{_MAX_GAP}}}\d){{12}}")

#: ASCII text -> a skeleton: its digits and separators become "0", every other character "x". In ASCII text a
#: match of :data:`_MAYBE` lies in a run of 13 or more "0"s, so text whose skeleton has none holds no card number
#: (a UUID, an id, a name: most free text) — a translate and a find instead of the regex's backtracking
_TEXT_SKELETON: Final = bytes(
    ord("0") if (48 <= b <= 57 or chr(b) in _SEPARATORS) else ord("x") for b in range(128)
) + b"x" * 128

#: raw bytes -> a skeleton: ASCII digits and separators and every non-ASCII byte (a UTF-8 digit or separator
#: may be one) become "0", a backslash (a JSON escape could spell anything) stays, everything else "x".
#: Every card candidate is then a run of at least 13 "0"s.
_SKELETON: Final = bytes(
    ord("0") if (48 <= b <= 57 or b in b" \t\n\r\v\f-./_" or b >= 0x80) else b if b == 92 else ord("x")
    for b in range(256)
)
_RUN: Final = b"0" * 13
#: second, still cheap, stage over the raw bytes: 13 ASCII digits joined by at most three ASCII separators,
#: or anything non-ASCII or a backslash (then the precise search decides)
_RAW_CANDIDATE: Final = re.compile(rb"[0-9](?:[ \t\n\r\v\f\-./_]{0,3}[0-9]){12}|[\x80-\xff\\]")
#: its first branch alone: a stretch of 13 ASCII digits in a run of ASCII digits and separators
_RAW_DIGITS: Final = re.compile(rb"[0-9](?:[ \t\n\r\v\f\-./_]{0,3}[0-9]){12}")

_RAW_UUID: Final = re.compile(_UUID_SHAPED.encode("ascii"))

CARD_MESSAGE: Final = "looks like a card number (Luhn-valid 13–19 digits); card data is not allowed, value not shown"
#: a string holding U+0000: no PostgreSQL text can keep it, and no payment's text has a use for it
NUL_MESSAGE: Final = "holds the NUL character (U+0000), which no text may hold"


def shown_nul(text: str) -> str:
    """``text`` as a message, a log line or a path may show it: each NUL written as ``\\u0000``."""
    return text.replace("\x00", "\\u0000")


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


def iban_ok(text: str) -> bool:
    """The ISO 13616 mod-97 check of an IBAN (spaces ignored)."""
    compact = text.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    moved = compact[4:] + compact[:4]
    try:
        return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1
    except ValueError:
        return False


def ean13_ok(digits: str) -> bool:
    """The GS1 check digit of a 13-digit EAN/GTIN-13 (a product code, not a card)."""
    total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(digits[:12]))
    return (10 - total % 10) % 10 == int(digits[12])


def _blank_ibans(text: str) -> str:
    """``text`` with every valid IBAN replaced by "x"s (same length); a printed IBAN followed by more groups of
    digits is tried shorter, group by group."""
    out = text
    for m in _IBAN.finditer(text):
        candidate = m.group(0)
        while len(candidate.replace(" ", "")) >= 15:
            if iban_ok(candidate):
                out = out[: m.start()] + "x" * len(candidate) + out[m.start() + len(candidate) :]
                break
            candidate = candidate[: candidate.rfind(" ")] if " " in candidate else candidate[:-1]
    return out


def _ascii_digits(group: str) -> str:
    return group if group.isascii() else "".join(str(int(c)) for c in group)


def _blank(m: re.Match[str]) -> str:
    return "x" * len(m.group(0))


def _may_hold_card(text: str) -> bool:
    """False when ``text`` cannot hold a card number: no 13 digits joined by at most three separators (the ASCII
    skeleton first, then :data:`_MAYBE`)."""
    if text.isascii() and text.encode("ascii").translate(_TEXT_SKELETON).find(_RUN) < 0:
        return False
    return _MAYBE.search(text) is not None


def card_spans(text: str) -> Iterator[tuple[int, int]]:
    """(start, end) of every card number in ``text`` (see the module's rules); overlapping spans may repeat."""
    return _spans(text) if _may_hold_card(text) else iter(())


def _spans(text: str) -> Iterator[tuple[int, int]]:
    """:func:`card_spans` of a text :func:`_may_hold_card` let through."""
    scan = _UUID.sub(_blank, text)
    if scan != text and _MAYBE.search(scan) is None:
        return  # the digits were the UUIDs' (blanking more tokens could only take more digits away)
    scan = _NOT_CARDS.sub(_blank, scan)
    if _IBAN.search(scan) is not None:
        scan = _blank_ibans(scan)
    for chain in _CHAIN.finditer(scan):
        start = chain.start()
        if start > 0 and scan[start - 1] == "+":
            continue  # +4930123456789: a phone number
        groups = [(m.start() + start, m.end() + start, _ascii_digits(m.group(0)))
                  for m in _GROUP.finditer(chain.group(0))]
        if sum(len(g[2]) for g in groups) < 13:
            continue
        for i, (g_start, _e, _d) in enumerate(groups):
            digits = ""
            for j in range(i, len(groups)):
                digits += groups[j][2]
                if len(digits) > 19:
                    break
                if len(digits) < 13 or _NOT_A_PAN.match(digits) or not luhn_ok(digits):
                    continue
                if len(digits) == 13 and (digits[0] != "4" or ean13_ok(digits)):
                    # only Visa issued 13-digit numbers (they start with 4): another 13-digit run is an epoch
                    # time in milliseconds (1-3 until 2095) or a product code, not a card
                    continue
                g_end = groups[j][1]
                if j > i and ((g_start > 0 and scan[g_start - 1].isalpha())
                              or (g_end < len(scan) and scan[g_end].isalpha())):
                    continue  # a grouped number glued to a word: part of an id
                yield g_start, g_end


#: the fewest characters that can hold a card number (13 digits, each one character of any script)
_SHORTEST: Final = 13


def contains_card_number(text: str) -> bool:
    """True when ``text`` contains a card number (see the module's rules)."""
    return len(text) >= _SHORTEST and _may_hold_card(text) and next(_spans(text), None) is not None


def mask_card_text(text: str) -> str:
    """``text`` with the digits of every card number masked (``*``) but the last four; separators kept.

    The four digits kept can end a group whose other digits are masked: standing apart, they may make a new
    Luhn-valid run with the groups after them (``…0414 131455 5489 3531 725`` -> ``…**** **1455 5489 3531 725``).
    Such a run is masked in turn, until none is left (each pass masks 9 digits or more, so this ends)."""
    while spans := sorted(card_spans(text)):
        chars = list(text)
        for start, end in spans:
            keep = 4
            for k in range(end - 1, start - 1, -1):
                if chars[k].isdecimal() or chars[k] == "*":
                    if keep > 0:
                        keep -= 1
                    else:
                        chars[k] = "*"
        text = "".join(chars)
    return text


def raw_may_contain_card(raw: bytes) -> bool:
    """Cheap prefilter over raw JSON bytes: False means no string in it can hold a card number.

    JSON escapes could spell digits or separators, so any backslash also answers True; so does any
    non-ASCII byte in a document with a long enough digit-and-separator stretch (it may be a digit or a
    separator). Otherwise True when a stretch holds 13 ASCII digits joined by at most three separators that
    is not part of a UUID. :func:`reference_raw_may_contain_card` is the same answer written as one regex
    search over the whole document (several times slower: the tests hold the two equal)."""
    if b"\\" in raw:
        return True
    skeleton = raw.translate(_SKELETON)
    found = skeleton.find(_RUN)
    if found < 0:
        return False
    if not raw.isascii():
        return True
    # ASCII, no backslash: the skeleton is "0" (a digit or separator) and "x"; a candidate lies in one run of
    # "0"s, so only the runs of 13 or more are searched, each with the UUIDs that overlap it blanked
    while found >= 0:
        start = skeleton.rfind(b"x", 0, found) + 1
        end = skeleton.find(b"x", found)
        if end < 0:
            end = len(raw)
        if _run_holds_candidate(raw, start, end):
            return True
        found = skeleton.find(_RUN, end)
    return False


#: a UUID overlapping raw[start:end] begins at most this many bytes before it and ends at most this many after
_UUID_REACH: Final = 37


def _run_holds_candidate(raw: bytes, start: int, end: int) -> bool:
    """Whether raw[start:end] (ASCII digits and separators only) holds 13 digits joined by at most three
    separators outside every UUID of ``raw``: the UUIDs are found in a window around the run (a UUID
    cannot begin inside another, so the window finds exactly the ones of the whole document that overlap)."""
    base = max(0, start - _UUID_REACH)
    run = bytearray(raw[start:end])
    for m in _RAW_UUID.finditer(raw, base, end + _UUID_REACH):
        lo, hi = max(m.start(), start), min(m.end(), end)
        if lo < hi:
            run[lo - start : hi - start] = b"u" * (hi - lo)
    return _RAW_DIGITS.search(run) is not None


def reference_raw_may_contain_card(raw: bytes) -> bool:
    """:func:`raw_may_contain_card` as first written: a regex search of the document with its UUIDs blanked."""
    skeleton = raw.translate(_SKELETON)
    if _RUN not in skeleton and b"\\" not in skeleton:
        return False
    return _RAW_CANDIDATE.search(_RAW_UUID.sub(b"u", raw)) is not None


def mask_card_numbers(raw: bytes) -> bytes:
    """``raw`` with every card number masked but its last four digits, separators kept: what may be stored
    of a record that holds card data. Bytes that are not UTF-8 are kept as they are. Where JSON escapes
    (``\\n``, ``\\u0034``) spell a card number that the text does not show, the JSON document's strings are
    masked and the document re-encoded (compact). :func:`holds_card_number` tells whether any is left."""
    if not raw_may_contain_card(raw):
        return raw
    text = raw.decode("utf-8", "surrogateescape")
    masked = mask_card_text(text)
    out = raw if masked == text else masked.encode("utf-8", "surrogateescape")
    if b"\\" in out:
        obj = _json(out)
        if obj is not _NOT_JSON and has_card_path(obj):
            out = _ENCODER.encode(_mask_obj(obj))
    return out


def holds_card_number(raw: bytes) -> bool:
    """True when ``raw`` shows a card number as text, or in a string of the JSON document it is."""
    if not raw_may_contain_card(raw):
        return False
    text = raw.decode("utf-8", "surrogateescape")
    if contains_card_number(text) or ("\\" in text and contains_card_number(_unescape(text))):
        return True
    obj = _json(raw)
    return obj is not _NOT_JSON and has_card_path(obj)


_ESCAPE: Final = re.compile(r"\\(?:u([0-9A-Fa-f]{4})|(.))", re.DOTALL)
_ESCAPED: Final = {"n": "\n", "r": "\r", "t": "\t", "b": " ", "f": " "}


def _unescape(text: str) -> str:
    """``text`` with JSON escapes spelled out (``\\n`` -> a line break, ``\\u0034`` -> 4): how a broken
    document's strings would read."""
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)) if m.group(1) else _ESCAPED.get(m.group(2), m.group(2)),
                       text)


_NOT_JSON: Final = object()
_DECODER: Final = msgspec.json.Decoder(float_hook=json_number)
_ENCODER: Final = msgspec.json.Encoder(decimal_format="number")


def _json(raw: bytes) -> Any:
    """The JSON document ``raw`` is (numbers as Decimal), or _NOT_JSON (also when past the codec's limits)."""
    from payevents.contracts.codec import limit_problem  # the codec imports this module

    if limit_problem(raw) is not None:
        return _NOT_JSON
    try:
        return _DECODER.decode(raw)
    except msgspec.ValidationError:
        # an integer of more digits than a Python int is read from (msgspec: "out of range"): the standard reader
        # keeps it as written (numbers.OutOfRange), like a number no Decimal can hold
        try:
            return json.loads(raw, parse_float=json_number, parse_int=json_integer)
        except ValueError:
            return _NOT_JSON
    except msgspec.DecodeError:
        return _NOT_JSON


def _mask_obj(obj: Any) -> Any:
    if isinstance(obj, OutOfRange):
        return obj.raw()
    if isinstance(obj, str):
        return mask_card_text(obj)
    if isinstance(obj, dict):
        return {mask_card_text(k) if isinstance(k, str) else k: _mask_obj(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_mask_obj(v) for v in obj]
    return obj


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


def has_card_path(obj: Any) -> bool:
    """Whether some string (value or key) of ``obj`` holds card data: :func:`card_paths` yields a path, also
    the root's ``""`` (``any(card_paths(obj))`` misses a card in a document that is one string)."""
    if isinstance(obj, str):
        return len(obj) >= _SHORTEST and contains_card_number(obj)
    if isinstance(obj, dict):
        for key, value in obj.items():
            if isinstance(key, str) and len(key) >= _SHORTEST and contains_card_number(key):
                return True
            if isinstance(value, str | dict | list | tuple) and has_card_path(value):
                return True
        return False
    if isinstance(obj, list | tuple):
        for value in obj:
            if has_card_path(value):
                return True
    return False


def safe_repr(value: object) -> str:
    """``repr(value)`` with card numbers masked but the last four: for messages that name a value (404s)."""
    return mask_card_text(repr(value))


def check_free_text(field: str, value: str | None, max_len: int | None = None) -> None:
    """The rules for free text entering a store (API, CLI, Python API): a ContractError naming ``field`` (never the
    value) when ``value`` is longer than ``max_len`` (the store's column), holds a NUL character (the channel's
    contract refuses one too: ``codec.nul_paths``) or holds a card number."""
    if value is None:
        return
    if max_len is not None and len(value) > max_len:
        raise ContractError(f"{field}: {len(value)} characters; at most {max_len}")
    if "\x00" in value:
        raise ContractError(f"{field}: {NUL_MESSAGE}")
    if contains_card_number(value):
        raise ContractError(f"{field}: {CARD_MESSAGE}")


__all__ = [
    "CARD_MESSAGE",
    "NUL_MESSAGE",
    "card_paths",
    "card_spans",
    "check_free_text",
    "contains_card_number",
    "has_card_path",
    "holds_card_number",
    "luhn_ok",
    "mask_card_numbers",
    "mask_card_text",
    "raw_may_contain_card",
    "safe_repr",
    "shown_nul",
]
