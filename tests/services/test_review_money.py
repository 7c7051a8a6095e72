"""Review findings in the money services: amounts whose minor units do not fit the stores' 64-bit integers."""

from __future__ import annotations

import pytest
from money_helpers import deliver, processed

from payevents.errors import ContractError, PoisonEvent
from payevents.services import invoices, payments
from payevents.settings import Settings

HUGE = "12345678901234567890123"  # 1.2e24 cents: more than a signed 64-bit integer of minor units


def test_payment_too_large_for_the_store_is_a_clear_error(store_settings: Settings) -> None:
    with pytest.raises(ContractError, match=r"^amount: .*too large"):
        payments.create(store_settings, customer_id="cus_1", amount=HUGE, currency="USD", description="d")
    assert payments.list_payments(store_settings) == []


def test_invoice_too_large_for_the_store_is_a_clear_error(store_settings: Settings) -> None:
    with pytest.raises(ContractError, match=r"^amount_due: .*too large"):
        invoices.create(store_settings, customer_id="cus_1", amount_due=HUGE, currency="USD", due_date="2030-01-01")
    with pytest.raises(ContractError, match=r"^amount_due: "):  # the field is named, not a bare "amount:"
        invoices.create(store_settings, customer_id="cus_1", amount_due="1e400000000", currency="USD",
                        due_date="2030-01-01")
    assert invoices.list_invoices(store_settings) == []


@pytest.mark.parametrize("service", ["ledger", "invoices"])
def test_event_too_large_for_the_store_is_poison_with_the_reason(store_settings: Settings, service: str) -> None:
    with pytest.raises(PoisonEvent, match="too large"):
        deliver(store_settings, service, [processed(amount=HUGE, invoice_id="INV-HUGE")])


def test_analytics_event_too_large_for_the_store_is_poison_with_the_reason(store_settings: Settings) -> None:
    from conftest_an import feed
    from conftest_an import processed as an_processed

    from payevents.services.analytics.service import SERVICE

    with pytest.raises(PoisonEvent, match="too large"):
        feed(store_settings, SERVICE, [an_processed("pay_huge", HUGE)])


def test_invoice_created_again_with_another_description_is_a_conflict(store_settings: Settings) -> None:
    from payevents.errors import IdempotencyConflict

    args = dict(invoice_id="INV-DESC", customer_id="cus_1", amount_due="10.00", currency="USD",
                due_date="2030-01-01")
    invoices.create(store_settings, **args, description="Consulting, January")  # type: ignore[arg-type]
    again = invoices.create(store_settings, **args, description="Consulting, January")  # type: ignore[arg-type]
    assert again.invoice.description == "Consulting, January"
    with pytest.raises(IdempotencyConflict, match="INV-DESC"):
        invoices.create(store_settings, **args, description="Something else")  # type: ignore[arg-type]
