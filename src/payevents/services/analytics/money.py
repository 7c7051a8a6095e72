"""Integer minor units for analytics, from the contracts' ISO 4217 table (exact Decimal, never float)."""

from __future__ import annotations

from decimal import Decimal

from payevents.contracts import money
from payevents.errors import ContractError, PoisonEvent

#: the largest amount of one event in minor units (contracts.money.MAX_AMOUNT with 4 decimals)
MAX_MINOR = money.MAX_MINOR


def minor_exponent(currency: str) -> int:
    """Decimal places of ``currency``'s minor unit (JPY 0, USD 2, KWD 3, CLF 4)."""
    return money.currency(currency).minor_units


def to_minor(value: Decimal, currency: str) -> int:
    """``value`` in integer minor units; an amount the currency cannot hold exactly is poison."""
    problem = money.amount_problem(value, currency)
    if problem is not None:
        raise PoisonEvent(f"data.amount: {problem[1]}")
    try:
        minor = money.to_minor(value, currency)
    except ContractError as exc:
        raise PoisonEvent(f"data.amount: {exc}") from None
    if minor > MAX_MINOR:
        raise PoisonEvent(f"data.amount: {value} {currency} is too large (at most {MAX_MINOR} minor units)")
    return minor


def from_minor(minor: int, currency: str) -> Decimal:
    """Integer minor units back to a Decimal with the currency's exponent (exact)."""
    return money.from_minor(minor, currency)
