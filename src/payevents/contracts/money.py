"""Money: ISO 4217 currencies with their minor-unit exponent, Decimal amounts, exact minor units.

The table ships with the package (``contracts/data/iso4217.json``, read with importlib.resources).
Amounts are ``Decimal``; stored as integer minor units with the currency. Never float.
"""

from __future__ import annotations

import dataclasses
import json
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation
from importlib import resources
from types import MappingProxyType
from typing import Final

from payevents.contracts.cardguard import safe_repr
from payevents.errors import ContractError


@dataclasses.dataclass(frozen=True, slots=True)
class Currency:
    """One ISO 4217 currency: alphabetic code, numeric code, minor-unit exponent, name."""

    code: str
    numeric: str
    minor_units: int
    name: str

    @property
    def quantum(self) -> Decimal:
        """The smallest amount: ``Decimal('0.01')`` for USD, ``Decimal('1')`` for JPY."""
        return _QUANTA[self.minor_units]


_QUANTA: Final = {n: Decimal(1).scaleb(-n) for n in range(0, 9)}

#: The largest amount of one event, in major units of any currency: 100 trillion. No real payment reaches
#: it (100 trillion of the currency with the smallest unit, the Iranian rial, is still billions of US
#: dollars). With at most 4 decimals (CLF) it is at most 10**18 minor units, so one amount fits a signed
#: 64-bit column with room to spare, and sums are computed exactly beyond 64 bits (:mod:`payevents.store.sums`).
#: Every event schema states it as ``maximum``.
MAX_AMOUNT: Final = Decimal(10**14)
#: the largest amount in minor units any currency reaches (MAX_AMOUNT with 4 decimals)
MAX_MINOR: Final = 10**18
#: exact arithmetic for amounts up to 60 digits (the default context rounds at 28)
_CTX: Final = Context(prec=60, traps=[InvalidOperation])


def _load() -> dict[str, Currency]:
    raw = resources.files("payevents.contracts").joinpath("data/iso4217.json").read_text("utf-8")
    rows = json.loads(raw)["currencies"]
    return {r["code"]: Currency(r["code"], r["numeric"], int(r["minorUnits"]), r["name"]) for r in rows}


#: code -> Currency, every active ISO 4217 code with a decimal minor unit
CURRENCIES: Final = MappingProxyType(_load())
#: code -> minor-unit exponent (the hot path's lookup)
MINOR_UNITS: Final[dict[str, int]] = {c.code: c.minor_units for c in CURRENCIES.values()}
_QUANTA_BY_CODE: Final[dict[str, Decimal]] = {code: _QUANTA[minor] for code, minor in MINOR_UNITS.items()}


def is_currency(code: object) -> bool:
    """True when ``code`` is an active ISO 4217 code of the table (exact, upper case)."""
    return isinstance(code, str) and code in MINOR_UNITS


def currency(code: str) -> Currency:
    """The Currency for ``code``; ContractError naming the rule for anything else."""
    try:
        return CURRENCIES[code]
    except (KeyError, TypeError):
        raise ContractError(f"currency: {safe_repr(code)} is not an ISO 4217 code") from None


def exponent(code: str) -> int:
    """Minor-unit exponent of an ISO 4217 code (JPY 0, USD 2, KWD 3, CLF 4); an unknown code is a ContractError."""
    return currency(code).minor_units


def amount_ok(value: Decimal, code: str) -> bool:
    """The hot path's yes/no form of :func:`amount_problem` for a Decimal (False: ask amount_problem why)."""
    quantum = _QUANTA_BY_CODE.get(code) if isinstance(code, str) else None
    if quantum is None or not isinstance(value, Decimal):
        return False
    try:
        return 0 < value <= MAX_AMOUNT and value.quantize(quantum) == value
    except InvalidOperation:  # more digits than the context: let the precise rules decide
        return False


def amount_problem(value: object, code: str) -> tuple[str, str] | None:
    """``(rule, message tail)`` when ``value`` is not a valid amount of ``code``; None when it is.

    Rules: the currency is an ISO 4217 code; the value is a finite Decimal > 0 and at most :data:`MAX_AMOUNT`,
    with no more decimals than the currency's minor unit allows (trailing zeros are fine: 100.50 USD, 100.0 JPY).
    """
    minor = MINOR_UNITS.get(code) if isinstance(code, str) else None
    if minor is None:
        return "iso4217", f"{code!r} is not an ISO 4217 code"
    if not isinstance(value, Decimal) or not value.is_finite():
        return "type", f"{value!r} is not a finite decimal number"
    if value <= 0:
        return "positive", f"{value} must be greater than 0"
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -minor:
        try:
            exact = value == value.quantize(_QUANTA[minor], context=_CTX)
        except InvalidOperation:
            exact = False
        if not exact:
            return "minor-units", f"{value} has more decimals than {code} allows ({minor})"
    if value > MAX_AMOUNT:
        return "maximum", f"{value} is too large: above the maximum amount of one event ({MAX_AMOUNT:,})"
    return None


def check_amount(value: Decimal, code: str) -> None:
    """Raise ContractError unless ``value`` is a valid amount in ``code`` (see :func:`amount_problem`)."""
    problem = amount_problem(value, code)
    if problem is not None:
        raise ContractError(f"amount: {problem[1]}")


def quantize(value: Decimal, code: str, *, rounding: str | None = None) -> Decimal:
    """``value`` with exactly the currency's minor-unit exponent (100.5 USD -> 100.50).

    With ``rounding=None`` (default) an inexact result is a ContractError; pass e.g. ``decimal.ROUND_HALF_EVEN``
    to round on purpose (for computed amounts like a split).
    """
    cur = currency(code)
    if not isinstance(value, Decimal) or not value.is_finite():
        raise ContractError(f"amount: {safe_repr(value)} is not a finite Decimal")
    try:
        q = value.quantize(cur.quantum, rounding=rounding or ROUND_HALF_EVEN, context=_CTX)
    except InvalidOperation:
        raise ContractError(f"amount: {value} cannot be expressed in {code}") from None
    if rounding is None and q != value:
        raise ContractError(f"amount: {value} has more decimals than {code} allows ({cur.minor_units})")
    return q


def to_minor(value: Decimal, code: str) -> int:
    """Exact integer minor units: ``to_minor(Decimal('99.99'), 'USD') == 9999``; inexact is a ContractError."""
    cur = currency(code)
    q = quantize(value, code)
    return int(q.scaleb(cur.minor_units, context=_CTX))


def from_minor(units: int, code: str) -> Decimal:
    """Decimal amount from integer minor units: ``from_minor(9999, 'USD') == Decimal('99.99')`` (exponent -2)."""
    cur = currency(code)
    if isinstance(units, bool) or not isinstance(units, int):
        raise ContractError(f"amount: minor units must be an int, got {units!r}")
    return Decimal(units).scaleb(-cur.minor_units, context=_CTX)


def parse_minor(value: Decimal | str | int, code: str, *, field: str = "amount") -> int:
    """An amount at the edge (a Decimal, a decimal string from a command line, an int) in exact integer minor
    units, checked by every rule of :func:`amount_problem` (> 0, the currency's decimals, at most
    :data:`MAX_AMOUNT`); floats are refused. Errors are ContractErrors naming ``field``."""
    if isinstance(value, float) or isinstance(value, bool):
        raise ContractError(f"{field}: {safe_repr(value)} is not a Decimal or a decimal string (floats are refused)")
    try:
        d = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except InvalidOperation:
        raise ContractError(f"{field}: {safe_repr(value)} is not a decimal number") from None
    exponent(code)
    problem = amount_problem(d, code)
    if problem is not None:
        raise ContractError(f"{field}: {problem[1]}")
    try:
        minor = to_minor(d, code)
    except ContractError as exc:
        raise ContractError(f"{field}: {str(exc).removeprefix('amount: ')}") from None
    if minor > MAX_MINOR:
        raise ContractError(f"{field}: {d} {code} is too large (at most {MAX_MINOR} minor units)")
    return minor


def format_minor(minor: int, code: str) -> str:
    """``'12.34 USD'`` for 1234 USD minor units (tables and messages)."""
    return f"{from_minor(int(minor), code)} {code}"


def format_amount(value: Decimal, code: str) -> str:
    """``'99.99 USD'``: the amount with its currency's exponent, for messages and logs."""
    return f"{quantize(value, code, rounding=ROUND_HALF_EVEN)} {code}"


__all__ = [
    "CURRENCIES",
    "MAX_AMOUNT",
    "MAX_MINOR",
    "MINOR_UNITS",
    "Currency",
    "amount_ok",
    "amount_problem",
    "check_amount",
    "currency",
    "exponent",
    "format_amount",
    "format_minor",
    "from_minor",
    "is_currency",
    "parse_minor",
    "quantize",
    "to_minor",
]
