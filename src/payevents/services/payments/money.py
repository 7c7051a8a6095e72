"""Money lives in :mod:`payevents.contracts.money` (one module). These names stay importable from here only
for code that still imports them from this path (``faces/web/data.py``); new code imports contracts.money."""

from __future__ import annotations

from payevents.contracts.money import MAX_MINOR, exponent, from_minor
from payevents.contracts.money import format_minor as fmt
from payevents.contracts.money import parse_minor as to_minor

__all__ = ["MAX_MINOR", "exponent", "fmt", "from_minor", "to_minor"]
