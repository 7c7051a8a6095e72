"""Money for the money services: Decimal at the edges, integer minor units in the stores.

A thin layer over :mod:`payevents.contracts.money` (the ISO 4217 table) that accepts command-line
strings, names the field in errors and refuses floats.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Final

from payevents.contracts import money as _money
from payevents.contracts.cardguard import safe_repr
from payevents.errors import ContractError

#: the largest amount of one event in minor units (contracts.money.MAX_AMOUNT with 4 decimals); the stores'
#: signed 64-bit columns hold it with room to spare, and sums are exact beyond 64 bits (store.sums)
MAX_MINOR: Final = _money.MAX_MINOR


def exponent(currency: str) -> int:
    """Minor-unit exponent of an ISO 4217 code; an unknown code is a ContractError."""
    exp = _money.MINOR_UNITS.get(currency) if isinstance(currency, str) else None
    if exp is None:
        raise ContractError(f"currency: {safe_repr(currency)} is not an ISO 4217 code")
    return exp


def to_minor(value: Decimal | str | int, currency: str, *, field: str = "amount") -> int:
    """Exact integer minor units; the amount must be > 0 and fit the currency's minor unit."""
    if isinstance(value, float) or isinstance(value, bool):
        raise ContractError(f"{field}: {safe_repr(value)} is not a Decimal or a decimal string (floats are refused)")
    try:
        d = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except InvalidOperation:
        raise ContractError(f"{field}: {safe_repr(value)} is not a decimal number") from None
    exponent(currency)
    problem = _money.amount_problem(d, currency)
    if problem is not None:
        raise ContractError(f"{field}: {problem[1]}")
    try:
        minor = _money.to_minor(d, currency)
    except ContractError as exc:
        raise ContractError(f"{field}: {str(exc).removeprefix('amount: ')}") from None
    if minor > MAX_MINOR:
        raise ContractError(f"{field}: {d} {currency} is too large (at most {MAX_MINOR} minor units)")
    return minor


def from_minor(minor: int, currency: str) -> Decimal:
    """The Decimal of ``minor`` units with the currency's exponent (9999 USD -> Decimal('99.99'))."""
    return _money.from_minor(int(minor), currency)


def fmt(minor: int, currency: str) -> str:
    """``'12.34 USD'`` for 1234 USD minor units (tables and messages)."""
    return f"{from_minor(minor, currency)} {currency}"
