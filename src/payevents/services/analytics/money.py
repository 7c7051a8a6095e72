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
    """``value`` in integer minor units (the contracts' one rule, :func:`contracts.money.parse_minor`); an
    amount the currency cannot hold exactly, or above the bound, is poison naming ``data.amount``."""
    if type(value) is Decimal and money.amount_ok(value, currency):  # the codec's check: exact, > 0, bounded
        return int(value.scaleb(money.MINOR_UNITS[currency]))
    try:
        return money.parse_minor(value, currency, field="data.amount")
    except ContractError as exc:
        raise PoisonEvent(str(exc)) from None


def from_minor(minor: int, currency: str) -> Decimal:
    """Integer minor units back to a Decimal with the currency's exponent (exact)."""
    return money.from_minor(minor, currency)
