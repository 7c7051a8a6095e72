"""Integer minor units for analytics (exact Decimal arithmetic, never float)."""

from __future__ import annotations

from decimal import Decimal

from payevents.errors import PoisonEvent


def minor_exponent(currency: str) -> int:
    """Decimal places of ``currency``'s minor unit (JPY 0, USD 2, KWD 3, CLF 4).

    Uses the contracts' ISO 4217 table when it is available, else CLDR's data via babel.
    """
    try:
        from payevents.contracts import money  # type: ignore[attr-defined]

        return int(money.minor_exponent(currency))
    except (ImportError, AttributeError):
        from babel.numbers import get_currency_precision

        return int(get_currency_precision(currency))


def to_minor(value: Decimal, currency: str) -> int:
    """``value`` in integer minor units; an amount with more decimals than the currency has is poison."""
    scaled = value.scaleb(minor_exponent(currency))
    if scaled != scaled.to_integral_value():
        raise PoisonEvent(f"data.amount.value: {value} has more decimals than {currency} allows")
    return int(scaled)


def from_minor(minor: int, currency: str) -> Decimal:
    """Integer minor units back to a Decimal with the currency's exponent (exact)."""
    exp = minor_exponent(currency)
    return Decimal(minor).scaleb(-exp).quantize(Decimal(1).scaleb(-exp))
