"""Money: the ISO 4217 table and exact minor units (Hypothesis round trips for every currency)."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from payevents.contracts import CURRENCIES, check_amount, currency, from_minor, is_currency, quantize, to_minor
from payevents.contracts.money import amount_problem, format_amount
from payevents.errors import ContractError

ALL_CODES = sorted(CURRENCIES)


def test_table_has_the_known_exponents() -> None:
    expected = {"JPY": 0, "KRW": 0, "USD": 2, "EUR": 2, "GBP": 2, "KWD": 3, "BHD": 3, "TND": 3, "CLF": 4, "UYW": 4}
    assert {code: currency(code).minor_units for code in expected} == expected
    assert currency("USD").numeric == "840" and currency("USD").name == "US Dollar"
    assert currency("JPY").quantum == Decimal("1") and currency("KWD").quantum == Decimal("0.001")


def test_table_is_active_iso_4217() -> None:
    assert len(CURRENCIES) >= 150
    numerics = [c.numeric for c in CURRENCIES.values()]
    assert len(set(numerics)) == len(numerics)
    for code, cur in CURRENCIES.items():
        assert code == cur.code and len(code) == 3 and code.isalpha() and code.isupper()
        assert len(cur.numeric) == 3 and cur.numeric.isdigit()
        assert 0 <= cur.minor_units <= 4
    for withdrawn in ("HRK", "ZWL", "XAU", "XXX", "usd", "", "US"):
        assert not is_currency(withdrawn)
        with pytest.raises(ContractError, match="is not an ISO 4217 code"):
            currency(withdrawn)


@pytest.mark.parametrize("code", ALL_CODES)
@settings(max_examples=15, deadline=None)
@given(units=st.integers(min_value=-(10**30), max_value=10**30))
def test_minor_unit_round_trip(code: str, units: int) -> None:
    minor = CURRENCIES[code].minor_units
    value = from_minor(units, code)
    assert value.as_tuple().exponent == -minor
    sign, digits, _ = value.as_tuple()
    assert (-1 if sign else 1) * int("".join(map(str, digits))) == units  # exact, whatever the context precision
    assert to_minor(value, code) == units
    assert quantize(value, code) == value


@pytest.mark.parametrize("code", ALL_CODES)
@settings(max_examples=10, deadline=None)
@given(units=st.integers(min_value=1, max_value=10**14),  # amounts up to MAX_AMOUNT
       extra=st.integers(min_value=1, max_value=9))
def test_more_decimals_than_the_currency_allows_is_refused(code: str, units: int, extra: int) -> None:
    minor = CURRENCIES[code].minor_units
    value = Decimal(units).scaleb(-minor) + Decimal(extra).scaleb(-minor - 1)
    with pytest.raises(ContractError, match="more decimals"):
        to_minor(value, code)
    assert amount_problem(value, code) == ("minor-units", f"{value} has more decimals than {code} allows ({minor})")
    rounded = quantize(value, code, rounding=ROUND_HALF_EVEN)
    assert abs(rounded - value) <= currency(code).quantum / 2
    # trailing zeros are not extra decimals
    padded = Decimal(units).scaleb(-minor).quantize(Decimal(1).scaleb(-minor - 2))
    assert amount_problem(padded, code) is None
    assert to_minor(padded, code) == units


def test_amount_rules() -> None:
    assert amount_problem(Decimal("99.99"), "USD") is None
    assert amount_problem(Decimal("100"), "JPY") is None
    assert amount_problem(Decimal("0"), "USD") == ("positive", "0 must be greater than 0")
    assert amount_problem(Decimal("-1.00"), "USD") is not None
    assert amount_problem(Decimal("NaN"), "USD") is not None
    assert amount_problem(99.99, "USD") is not None  # float is never money
    with pytest.raises(ContractError, match="greater than 0"):
        check_amount(Decimal("-5"), "EUR")
    check_amount(Decimal("1.234"), "KWD")


def test_conversions_are_exact_and_typed() -> None:
    assert to_minor(Decimal("99.99"), "USD") == 9999
    assert to_minor(Decimal("100.5"), "USD") == 10050
    assert to_minor(Decimal("1234"), "JPY") == 1234
    assert to_minor(Decimal("1.2345"), "CLF") == 12345
    assert from_minor(9999, "USD") == Decimal("99.99") and str(from_minor(9999, "USD")) == "99.99"
    assert str(from_minor(5, "KWD")) == "0.005"
    with pytest.raises(ContractError):
        from_minor(True, "USD")
    with pytest.raises(ContractError):
        from_minor(12.5, "USD")  # type: ignore[arg-type]
    with pytest.raises(ContractError, match="more decimals"):
        quantize(Decimal("100.5"), "JPY")
    assert format_amount(Decimal("100.5"), "USD") == "100.50 USD"
