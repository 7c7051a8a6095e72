"""JSON in and out with exact decimals (amounts are JSON numbers that must not become floats)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec

_DECODER = msgspec.json.Decoder(float_hook=Decimal)
_ENCODER = msgspec.json.Encoder(decimal_format="number")


def loads(raw: bytes | str) -> Any:
    """Parse JSON; numbers with a fraction become Decimal (99.99 stays 99.99)."""
    return _DECODER.decode(raw.encode() if isinstance(raw, str) else raw)


def dumps(value: Any, indent: int = 2) -> str:
    """JSON text; Decimal values are written as the numbers they are, digit for digit."""
    raw = _ENCODER.encode(value)
    return (msgspec.json.format(raw, indent=indent) if indent else raw).decode()
