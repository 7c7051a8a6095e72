"""Issue #12: the payment state machine lives once (``services.payments.machine``). The single-step commands
and the bulk ``process_payments`` path both run its transitions, so they end in the same states with the
same failure stage and code, and the transitions refuse illegal steps without any store."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from payevents.contracts import ids as contract_ids
from payevents.errors import IllegalTransition
from payevents.services import payments as P
from payevents.services.payments import machine
from payevents.services.payments.gateway import CAPTURE_FAILING_LAST4, SimulatedGateway
from payevents.services.payments.models import Payment
from payevents.settings import Settings

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _initiated(last4: str = "4242") -> Payment:
    return Payment(payment_id="pay_m", state="initiated", customer_id="cus_m", amount=Decimal("5.00"),
                   amount_minor=500, currency="USD", method_type="credit_card", last4=last4, description="d",
                   correlation_id="c", created_at=NOW)


def test_transitions_are_pure_and_check_the_state() -> None:
    gw = SimulatedGateway()
    p = _initiated()
    for illegal in (lambda q: machine.capture(q, gw, NOW), lambda q: machine.complete(q, NOW)):
        with pytest.raises(IllegalTransition, match="cannot"):
            illegal(p)
    p, e1 = machine.authorize(p, gw, NOW)
    p, e2 = machine.capture(p, gw, NOW)
    p, e3 = machine.complete(p, NOW)
    assert p.state == "processed" and [e.eventType for e in (e1, e2, e3)] == [
        "PaymentAuthorized", "PaymentCaptured", "PaymentProcessed"]
    with pytest.raises(IllegalTransition):
        machine.fail(p, "cancelled", "too late", NOW)


@pytest.mark.parametrize("last4", ["4242", "0002", sorted(CAPTURE_FAILING_LAST4)[0]])
def test_commands_and_bulk_path_end_alike(settings: Settings, last4: str) -> None:
    one = P.create(settings, customer_id="cus_a", amount="5.00", currency="USD", description="d", last4=last4)
    one = P.authorize(settings, one.payment_id)
    if one.state == "authorized":
        one = P.capture(settings, one.payment_id)
    if one.state == "captured":
        one = P.complete(settings, one.payment_id)
    [bulk] = P.process_payments(settings, [P.PaymentSpec(customer_id="cus_b", amount="5.00", currency="USD",
                                                         description="d", last4=last4)])
    fields = ("state", "failed_stage", "failure_code")
    assert [getattr(one, f) for f in fields] == [getattr(bulk, f) for f in fields]
    assert [r.event_type for r in one.events] == [r.event_type for r in bulk.events]


def test_ids_are_version_4_uuids_in_canonical_form() -> None:
    import uuid

    ids = [contract_ids.uuid4() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for s in ids:
        u = uuid.UUID(s)
        assert str(u) == s and u.version == 4 and u.variant == uuid.RFC_4122
    # every variant digit and every hex digit of the random part turns up: the bits are random, not fixed
    assert {s[19] for s in ids} == set("89ab")
    assert set("".join(s[:8] for s in ids)) == set("0123456789abcdef")
    pid = machine.new_id("pay")
    assert pid.startswith("pay_") and uuid.UUID(pid[4:]).version == 7  # time-ordered: tests/contracts/test_ids.py
