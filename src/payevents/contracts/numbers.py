"""JSON numbers read as Decimal — and the ones no Decimal can hold.

A JSON number may carry any exponent (``1e999999999999999999999``); Python's Decimal refuses exponents
beyond ±999,999,999,999,999,999 with ``InvalidOperation``, and ``int`` an integer of more than 4,300 digits with
``ValueError``. Every reader of a JSON document in payevents (the codec's precise path, the card guard) parses
numbers with :func:`json_number` and :func:`json_integer`, so such a number is
not an exception escaping the reader but a value of its own, :class:`OutOfRange`: the schema finds it is
not a number where a number is required (an error naming the field), it is ignored like any unknown
field elsewhere, and it is written back exactly as it came (``msgspec.Raw``) when a document is
re-encoded.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Final

import msgspec

SHOWN: Final = 24  # characters of an out-of-range number named in a message


class OutOfRange:
    """A JSON number no Decimal can hold, kept as the text it was written as."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        shown = self.text if len(self.text) <= SHOWN else self.text[:SHOWN] + "..."
        return f"{shown} (a number out of range)"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OutOfRange) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def raw(self) -> msgspec.Raw:
        """The number as written, for an encoder that re-writes the document."""
        return msgspec.Raw(self.text.encode("ascii"))


def json_number(text: str) -> Decimal | OutOfRange:
    """The parse hook for JSON numbers with a fraction or an exponent: a Decimal when one can hold it."""
    try:
        return Decimal(text)
    except InvalidOperation:
        return OutOfRange(text)


def json_integer(text: str) -> int | OutOfRange:
    """The parse hook for JSON numbers without a fraction or an exponent: an int, unless it has more digits than
    Python converts (``sys.get_int_max_str_digits()``, 4,300 by default) — a ValueError that would otherwise escape
    the reader as if the document were not JSON at all."""
    try:
        return int(text)
    except ValueError:
        return OutOfRange(text)


__all__ = ["OutOfRange", "json_integer", "json_number"]
