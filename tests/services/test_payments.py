"""Payments: the lifecycle state machine, its events through the outbox, idempotency, declines.

Every test runs on SQLite and on the local PostgreSQL (``store_settings``).
"""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest
import sqlalchemy as sa

from payevents.contracts import channel, codec
from payevents.errors import ContractError, IdempotencyConflict, IllegalTransition, NotFound
from payevents.services import payments as P
from payevents.services.payments import store
from payevents.settings import Settings


def _events(settings: Settings) -> list[tuple[str, str, dict[str, str], bytes]]:
    """(eventType, paymentId, headers, body) of every outbox row, in seq order."""
    from payevents.runtime import outbox

    rows = outbox.list_events(store.engine(settings), limit=100_000)
    return [(r.event_type, r.payment_id, r.headers, r.body) for r in rows]


def _create(settings: Settings, **kw: object) -> P.Payment:
    args: dict[str, object] = dict(customer_id="cus_johndoe", amount="99.99", currency="USD",
                                   description="Payment for Order #12345", invoice_id="INV-2025-000123",
                                   order_id="ORD-12345")  # fmt: skip
    args.update(kw)
    return P.create(settings, **args)  # type: ignore[arg-type]


def test_full_lifecycle_emits_four_events_with_audit_trail(store_settings: Settings) -> None:
    p = _create(store_settings, idempotency_key="create-1")
    assert p.state == "initiated" and p.amount == Decimal("99.99") and p.amount_minor == 9999
    p = P.authorize(store_settings, p.payment_id, idempotency_key="auth-1")
    assert p.state == "authorized" and len(p.authorization_code or "") == 6
    assert (p.gateway_reference or "").startswith("ch_")
    p = P.capture(store_settings, p.payment_id, idempotency_key="cap-1")
    assert p.state == "captured" and (p.capture_id or "").startswith("cap_")
    p = P.complete(store_settings, p.payment_id, idempotency_key="done-1")
    assert p.state == "processed" and (p.transaction_id or "").startswith("txn_")

    events = _events(store_settings)
    assert [e[0] for e in events] == ["PaymentInitiated", "PaymentAuthorized", "PaymentCaptured", "PaymentProcessed"]
    assert {e[1] for e in events} == {p.payment_id}
    assert [e[2][channel.H_IDEMPOTENCY_KEY] for e in events] == ["create-1", "auth-1", "cap-1", "done-1"]
    assert {e[2][channel.H_CORRELATION_ID] for e in events} == {p.correlation_id}
    assert len({e[2][channel.H_CAUSATION_ID] for e in events}) == 4
    for _, _, headers, _ in events:
        assert headers[channel.H_SOURCE] == "payments"
        assert headers[channel.H_ENVIRONMENT] == "dev"
        assert headers[channel.H_PRODUCER].startswith("payevents/")

    processed = codec.decode_event(events[-1][3]).event
    assert processed.eventType == "PaymentProcessed"
    d = processed.data
    assert d.paymentId == p.payment_id and d.transactionId == p.transaction_id
    assert d.gatewayReference == p.gateway_reference and d.customerId == "cus_johndoe"
    assert d.amount.value == Decimal("99.99") and d.amount.currency == "USD"
    assert d.invoiceId == "INV-2025-000123" and d.metadata.orderId == "ORD-12345"
    assert d.metadata.description == "Payment for Order #12345"
    assert d.processedAt == p.processed_at
    shown = P.show(store_settings, p.payment_id)
    assert shown.state == "processed"
    assert [e.event_type for e in shown.events] == [e[0] for e in events]
    assert [t.event_id for t in P.timeline(store_settings, p.payment_id)] == [e.event_id for e in shown.events]


@pytest.mark.parametrize(
    ("steps", "illegal"),
    [
        ([], "capture"),  # capture before authorize
        ([], "complete"),
        (["authorize"], "authorize"),
        (["authorize"], "complete"),  # complete before capture
        (["fail"], "complete"),  # complete after fail
        (["fail"], "authorize"),
        (["fail"], "fail"),
        (["authorize", "capture", "complete"], "fail"),
        (["authorize", "capture", "complete"], "complete"),
    ],
)
def test_illegal_transitions_raise_and_emit_nothing(store_settings: Settings, steps: list[str], illegal: str) -> None:
    p = _create(store_settings)
    for step in steps:
        _step(store_settings, step, p.payment_id)
    before_events = _events(store_settings)
    before = P.show(store_settings, p.payment_id)
    with pytest.raises(IllegalTransition, match=illegal):
        _step(store_settings, illegal, p.payment_id)
    assert _events(store_settings) == before_events
    assert P.show(store_settings, p.payment_id) == before


def _step(settings: Settings, step: str, payment_id: str) -> P.Payment:
    if step == "fail":
        return P.fail(settings, payment_id, code="cancelled", reason="Customer cancelled the order")
    return getattr(P, step)(settings, payment_id)  # type: ignore[no-any-return]


def test_idempotent_command_retried_20_times_makes_one_payment_and_one_event(store_settings: Settings) -> None:
    results = [_create(store_settings, idempotency_key="retry-me") for _ in range(20)]
    assert len({r.payment_id for r in results}) == 1
    assert all(r == results[0] for r in results)
    with store.engine(store_settings).connect() as conn:
        assert conn.exec_driver_sql("SELECT COUNT(*) FROM payments").scalar_one() == 1
    assert [e[0] for e in _events(store_settings)] == ["PaymentInitiated"]

    pid = results[0].payment_id
    auths = [P.authorize(store_settings, pid, idempotency_key="auth-retry") for _ in range(20)]
    assert all(a == auths[0] for a in auths) and auths[0].state == "authorized"
    assert [e[0] for e in _events(store_settings)] == ["PaymentInitiated", "PaymentAuthorized"]


def test_same_key_other_arguments_is_a_conflict(store_settings: Settings) -> None:
    p = _create(store_settings, idempotency_key="k")
    with pytest.raises(IdempotencyConflict, match="'k'"):
        _create(store_settings, idempotency_key="k", amount="10.00")
    with pytest.raises(IdempotencyConflict):
        P.authorize(store_settings, p.payment_id, idempotency_key="k")
    assert len(_events(store_settings)) == 1


def test_concurrent_retries_of_one_key_make_one_payment(store_settings: Settings) -> None:
    results: list[P.Payment] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(_create(store_settings, idempotency_key="race"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    store.engine(store_settings)  # migrate once before the race
    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len({r.payment_id for r in results}) == 1
    assert len(_events(store_settings)) == 1


@pytest.mark.parametrize(
    ("kwargs", "decline", "code"),
    [
        ({"last4": "0002"}, None, "card_declined"),
        ({"last4": "9995"}, None, "insufficient_funds"),
        ({"customer_id": "cus_decline_me"}, None, "card_declined"),
        ({}, "expired_card", "expired_card"),
    ],
)
def test_gateway_decline_fails_the_payment(
    store_settings: Settings, kwargs: dict[str, str], decline: str | None, code: str
) -> None:
    p = _create(store_settings, **kwargs)
    p = P.authorize(store_settings, p.payment_id, decline=decline)
    assert p.state == "failed" and p.failure_code == code and p.failed_stage == "initiated"
    assert p.failure_reason and (p.gateway_reference or "").startswith("ch_")
    events = _events(store_settings)
    assert [e[0] for e in events] == ["PaymentInitiated", "PaymentFailed"]
    failed = codec.decode_event(events[-1][3]).event
    assert failed.data.failureCode == code and failed.data.failedStage == "initiated"
    with pytest.raises(IllegalTransition):
        P.capture(store_settings, p.payment_id)


def test_capture_failure_and_fail_from_each_open_state(store_settings: Settings) -> None:
    p = _create(store_settings, last4="0341")
    P.authorize(store_settings, p.payment_id)
    p = P.capture(store_settings, p.payment_id)
    assert (p.state, p.failure_code, p.failed_stage) == ("failed", "capture_failed", "authorized")
    for steps, stage in [([], "initiated"), (["authorize"], "authorized"), (["authorize", "capture"], "captured")]:
        q = _create(store_settings)
        for step in steps:
            _step(store_settings, step, q.payment_id)
        q = P.fail(store_settings, q.payment_id, code="cancelled", reason="Customer cancelled")
        assert (q.state, q.failure_code, q.failed_stage) == ("failed", "cancelled", stage)
        body = [e for e in _events(store_settings) if e[1] == q.payment_id][-1][3]
        assert codec.decode_event(body).event.data.failedStage == stage


def test_bad_input_names_the_field_and_writes_nothing(store_settings: Settings) -> None:
    with pytest.raises(ContractError, match=r"amount: 100.5 has more decimals than JPY"):
        _create(store_settings, amount="100.5", currency="JPY")
    with pytest.raises(ContractError, match="amount: 0 must be greater"):
        _create(store_settings, amount="0")
    with pytest.raises(ContractError, match="last4"):
        _create(store_settings, last4="42424")
    with pytest.raises(ContractError, match="currency"):
        _create(store_settings, currency="usd")
    with pytest.raises(ContractError, match="description"):
        _create(store_settings, description=" ")
    with pytest.raises(ContractError, match="code"):
        P.fail(store_settings, "pay_x", code="whatever", reason="x")
    with pytest.raises(NotFound):
        P.authorize(store_settings, "pay_missing")
    assert _events(store_settings) == []


def test_final_payment_is_immutable_in_the_database(store_settings: Settings) -> None:
    p = P.process_payment(store_settings, P.PaymentSpec(customer_id="cus_1", amount="5", currency="KWD",
                                                         description="Order 5"))
    assert p.state == "processed" and p.amount == Decimal("5.000")
    with pytest.raises(sa.exc.DBAPIError, match="final"), store.engine(store_settings).begin() as conn:
        conn.execute(sa.text("UPDATE payments SET amount_minor = 1 WHERE payment_id = :p"), {"p": p.payment_id})
    with pytest.raises(sa.exc.DBAPIError, match="DELETE"), store.engine(store_settings).begin() as conn:
        conn.execute(sa.text("DELETE FROM payments"))
    assert P.show(store_settings, p.payment_id).amount_minor == 5000


def test_batch_runs_whole_lifecycles_and_is_idempotent(store_settings: Settings) -> None:
    specs = []
    for i in range(23):
        last4 = {3: "0002", 7: "0341"}.get(i, "4242")
        specs.append(P.PaymentSpec(customer_id=f"cus_{i}", amount=f"{i + 1}.50", currency="USD",
                                   description=f"Order {i}", last4=last4, idempotency_key=f"batch-{i}",
                                   invoice_id=f"INV-{i}" if i % 2 else None))  # fmt: skip
    results = P.process_payments(store_settings, specs, chunk=5)
    assert [r.state for r in results].count("processed") == 21
    assert results[3].failure_code == "card_declined" and results[3].failed_stage == "initiated"
    assert results[7].failure_code == "capture_failed" and results[7].failed_stage == "authorized"
    assert results[5].amount == Decimal("6.50") and results[5].invoice_id == "INV-5"
    events = _events(store_settings)
    assert len(events) == 21 * 4 + 2 + 3
    for r in results:
        mine = [e[0] for e in events if e[1] == r.payment_id]
        assert mine == [e.event_type for e in r.events]
        assert P.show(store_settings, r.payment_id) == r
    # per payment: one correlation id, events keyed "{key}:{step}"
    keys = [e[2][channel.H_IDEMPOTENCY_KEY] for e in events if e[1] == results[0].payment_id]
    assert keys == ["batch-0:initiate", "batch-0:authorize", "batch-0:capture", "batch-0:complete"]

    again = P.process_payments(store_settings, specs, chunk=7)
    assert again == results
    assert len(_events(store_settings)) == len(events)
    with pytest.raises(IdempotencyConflict):
        P.process_payments(store_settings, [P.PaymentSpec(customer_id="cus_0", amount="9", currency="USD",
                                                          description="other", idempotency_key="batch-0")])


def test_batch_validates_every_spec_before_writing(store_settings: Settings) -> None:
    specs = [P.PaymentSpec(customer_id="c", amount="1", currency="USD", description="ok"),
             P.PaymentSpec(customer_id="c", amount="1.5", currency="JPY", description="bad")]
    with pytest.raises(ContractError, match=r"specs\[1\]\.amount"):
        P.process_payments(store_settings, specs)
    assert _events(store_settings) == []
