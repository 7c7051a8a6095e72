"""Exact sums of integer minor units on SQLite and PostgreSQL, beyond 64 bits.

One amount fits a signed 64-bit column (at most :data:`payevents.contracts.money.MAX_MINOR`, 10**18), but
a sum of a few of them does not: SQLite's ``SUM`` raises "integer overflow" past 2**63 - 1 (``TOTAL``
would silently round to a float), and 64-bit arithmetic on PostgreSQL raises "bigint out of range". So a
sum is computed as two sums whose parts stay small — ``x = (x / 10**9) * 10**9 + (x - (x / 10**9) * 10**9)``
with integer division truncating toward zero, on both databases — and recombined in Python's unbounded
integers. Each part is at most 10**9 per row: the parts overflow only past nine billion rows of maximum
amounts.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Final

#: the split point of a sum
SPLIT: Final = 10**9


def exact_sum(expr: str, alias: str) -> str:
    """Two select-list items, ``{alias}_hi`` and ``{alias}_lo``, whose :func:`combine` is ``SUM(expr)``."""
    # the remainder written without '%', which drivers with a pyformat paramstyle (psycopg) read as a placeholder
    return (f"SUM(({expr}) / {SPLIT}) AS {alias}_hi,"
            f" SUM(({expr}) - (({expr}) / {SPLIT}) * {SPLIT}) AS {alias}_lo")


def combine(hi: int | Decimal | float | None, lo: int | Decimal | float | None) -> int:
    """The exact sum from its two parts (None, the SQL sum of no rows, is 0)."""
    return int(hi or 0) * SPLIT + int(lo or 0)
