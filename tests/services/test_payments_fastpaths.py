"""The payments hot path's cheaper derivations give exactly what the plain definitions give."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from payevents.services.payments import events as ev
from payevents.services.payments import store
from payevents.services.payments.gateway import GatewayRequest, SimulatedGateway
from payevents.services.payments.models import Payment


def test_event_id_is_uuid5_over_payment_and_type() -> None:
    for i in range(2000):
        pid = f"pay_{uuid.uuid4()}" if i % 3 else f"pay-ü-{i}"
        for event_type in ("PaymentInitiated", "PaymentProcessed", "PaymentFailed"):
            assert ev.event_id(pid, event_type) == str(uuid.uuid5(ev.NAMESPACE, f"{pid}/{event_type}"))


def test_payment_tuple_matches_row_mapping() -> None:
    now = datetime.now(UTC)
    full = Payment(payment_id="pay_1", state="processed", customer_id="cus_1", amount=1, amount_minor=100,  # type: ignore[arg-type]
                   currency="USD", method_type="credit_card", last4="4242", description="d", correlation_id="c",
                   invoice_id="INV-1", order_id="ORD-1", merchant_id="m", authorization_code="A", capture_id="cap",
                   gateway_reference="ch", transaction_id="txn", created_at=now, authorized_at=now, captured_at=now,
                   processed_at=now)  # fmt: skip
    bare = Payment(payment_id="pay_2", state="initiated", customer_id="cus_2", amount=1, amount_minor=100,  # type: ignore[arg-type]
                   currency="USD", method_type="credit_card", last4="4242", description="d", correlation_id="c",
                   created_at=now)  # fmt: skip
    for p in (full, bare):
        row = store.to_row(p, now)
        assert store.to_tuple(p, now) == tuple(row[c] for c in store.COLUMNS)


def test_simulated_references_keep_their_shape() -> None:
    gw = SimulatedGateway()
    req = GatewayRequest(payment_id="pay_1", customer_id="cus_1", amount_minor=100, currency="USD",
                         method_type="credit_card", last4="4242", force_decline=None)  # fmt: skip
    refs = set()
    for _ in range(200):
        auth = gw.authorize(req)
        assert auth.approved and auth.gateway_reference.startswith("ch_") and len(auth.gateway_reference) == 27
        assert auth.gateway_reference[3:].isalnum() and auth.gateway_reference.isascii()
        code = auth.authorization_code
        assert code is not None and len(code) == 6 and code.isalnum() and code == code.upper()
        cap = gw.capture(req, auth)
        assert cap.captured and cap.capture_id is not None and cap.capture_id.startswith("cap_")
        refs.add(auth.gateway_reference)
    assert len(refs) == 200
