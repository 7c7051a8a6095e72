"""Issue #12: money lives once, in ``contracts.money``: the edge rule (Decimal, decimal string or int; floats
refused; > 0; the currency's decimals; at most MAX_AMOUNT; errors naming the field) is ``parse_minor``, and the
codec's fast path asks the same module (``amount_ok``)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from payevents.contracts import money
from payevents.errors import ContractError


def test_parse_minor_names_the_field_and_holds_every_rule() -> None:
    assert money.parse_minor("99.99", "USD") == 9999
    assert money.parse_minor(Decimal("1.500"), "KWD", field="amount_due") == 1500
    assert money.parse_minor(5, "JPY") == 5
    for value, code, rule in [(99.99, "USD", "floats are refused"), ("abc", "USD", "not a decimal number"),
                              ("0", "USD", "greater than 0"), ("1.001", "USD", "more decimals"),
                              (money.MAX_AMOUNT + 1, "USD", "too large")]:
        with pytest.raises(ContractError, match=rf"^data\.amount\.value: .*{rule}"):
            money.parse_minor(value, code, field="data.amount.value")
    with pytest.raises(ContractError, match=r"^currency: 'XXX' is not an ISO 4217 code"):
        money.parse_minor("1", "XXX", field="data.amount.value")
    assert money.format_minor(1234, "USD") == "12.34 USD" and money.exponent("CLF") == 4


def test_the_fast_check_agrees_with_the_rules() -> None:
    for value, code in [(Decimal("99.99"), "USD"), (Decimal("1.001"), "USD"), (Decimal("0"), "JPY"),
                        (money.MAX_AMOUNT, "CLF"), (money.MAX_AMOUNT + 1, "CLF"), (Decimal("1"), "XXX"),
                        (Decimal("1E+40"), "USD"), (Decimal("NaN"), "USD")]:
        assert money.amount_ok(value, code) == (money.amount_problem(value, code) is None), (value, code)
