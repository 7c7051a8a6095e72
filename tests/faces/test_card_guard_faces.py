"""Card data never enters a store, a response, an error or the access log — on the API and the CLI (issue #11).

Every free-text field of payments, invoices and customers goes through the card guard in the service
commands (so the API and the CLI share it); errors name the field, never the value; 404s do not echo a path
that holds a card number; the access log masks it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from card_leak import shows_test_card
from payevents.faces.cli import app as cli_app
from payevents.faces.web import create_app
from payevents.settings import Settings

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}", "Idempotency-Key": "card-guard"}  # a refused create frees the key
#: card numbers as people type them (each Luhn-valid)
WRITTEN = ["4111 1111 1111 1111", "4111.1111.1111.1111", "4111_1111_1111_1111", "4111/1111/1111/1111",
           "4111-1111\n1111-1111", "４１１１１１１１１１１１１１１１", "card 5555555555554444 thanks"]



def keyed() -> dict[str, str]:
    """Writes that create need an Idempotency-Key (a fresh one: each request is a new create)."""
    import uuid

    return {**AUTH, "Idempotency-Key": f"k-{uuid.uuid4()}"}

def _no_card(text: str) -> None:
    assert not shows_test_card(text), text
    assert "１１１１" not in text, text  # masked to ASCII, not a full-width tail


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings.replace(api_token=TOKEN))) as c:
        yield c


PAYMENT: dict[str, Any] = {"customer_id": "cus_1", "amount": "9.99", "currency": "USD", "description": "Order 7"}
INVOICE: dict[str, Any] = {"customer_id": "cus_1", "amount_due": "9.99", "currency": "USD", "due_date": "2030-01-31"}
CUSTOMER: dict[str, Any] = {"customer_id": "cus_9", "name": "Ada"}

CASES = [("/api/payments", PAYMENT, f) for f in
         ("customer_id", "description", "invoice_id", "order_id", "merchant_id", "payment_id", "method_type")]
CASES += [("/api/invoices", INVOICE, f) for f in ("customer_id", "invoice_id", "description")]
CASES += [("/api/customers", CUSTOMER, f) for f in ("customer_id", "name")]


@pytest.mark.parametrize(("path", "body", "field"), CASES, ids=[f"{p}:{f}" for p, _, f in CASES])
def test_every_free_text_field_refuses_card_numbers_on_the_api(
    client: TestClient, path: str, body: dict[str, Any], field: str
) -> None:
    for written in WRITTEN:
        r = client.post(path, json={**body, field: written}, headers=keyed())
        assert r.status_code == 422, (field, written, r.text)
        camel = field.split("_")[0] + "".join(w.title() for w in field.split("_")[1:])
        assert (field in r.text or camel in r.text) and "card" in r.text
        _no_card(r.text)
    # nothing of it was stored
    for listing in ("/api/payments", "/api/invoices", "/api/customers"):
        _no_card(client.get(listing).text)


def test_a_failure_reason_and_an_email_refuse_card_numbers(client: TestClient) -> None:
    pid = client.post("/api/payments", json=PAYMENT, headers=keyed()).json()["payment_id"]
    r = client.post(f"/api/payments/{pid}/fail", json={"code": "cancelled", "reason": "4111.1111.1111.1111"},
                    headers=AUTH)
    assert r.status_code == 422 and "reason" in r.text
    _no_card(r.text)
    r = client.post("/api/customers", json={**CUSTOMER, "email": "4111111111111111@x"}, headers=keyed())
    assert r.status_code == 422
    _no_card(r.text)


@pytest.mark.parametrize("path", [
    "/api/payments/{}", "/api/payments/{}/timeline", "/api/invoices/{}", "/api/customers/{}", "/payments/{}",
    "/api/notifications/{}",
])
def test_404s_do_not_echo_a_card_number_in_the_path(client: TestClient, path: str) -> None:
    for written in ("4111111111111111", "4111 1111 1111 1111", "4111.1111.1111.1111"):
        r = client.get(path.format(written))
        assert r.status_code == 404, (path, r.status_code, r.text)
        _no_card(r.text)


def test_the_access_log_masks_card_numbers(settings: Settings) -> None:
    create_app(settings)
    logger = logging.getLogger("uvicorn.access")
    record = logger.makeRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5000", "GET", "/api/payments/4111.1111.1111.1111?q=5555555555554444",
                                "1.1", 404), None)
    assert all(f.filter(record) if isinstance(f, logging.Filter) else f(record) for f in logger.filters)
    message = record.getMessage()
    assert "/api/payments/" in message and "1111" in message  # the last four stay
    _no_card(message)


def _cli(settings: Settings, *args: str) -> tuple[int, str, BaseException | None]:
    result = CliRunner().invoke(cli_app, [*args, "--env", "dev", "--data-dir", str(settings.data_dir)])
    return result.exit_code, result.output, result.exception


@pytest.mark.parametrize("args", [
    ["payments", "create", "--customer", "cus_1", "--amount", "1.00", "--currency", "USD", "--description", "{}"],
    ["payments", "create", "--customer", "{}", "--amount", "1.00", "--currency", "USD", "--description", "x"],
    ["payments", "create", "--customer", "c", "--amount", "1.00", "--currency", "USD", "--description", "x",
     "--order", "{}"],
    ["invoices", "create", "--customer", "cus_1", "--amount", "1.00", "--currency", "USD", "--due", "2030-01-01",
     "--description", "{}"],
    ["invoices", "create", "--customer", "cus_1", "--amount", "1.00", "--currency", "USD", "--due", "2030-01-01",
     "--id", "{}"],
    ["customers", "add", "cus_5", "--name", "{}"],
    ["payments", "show", "{}"],
    ["invoices", "show", "{}"],
])
def test_the_cli_refuses_and_never_echoes_card_numbers(settings: Settings, args: list[str]) -> None:
    for written in WRITTEN[:4]:
        code, out, exc = _cli(settings, *[a.format(written) if a == "{}" else a for a in args])
        assert code != 0
        _no_card(out)
        _no_card(str(exc))


def test_an_idempotency_key_holding_a_card_number_is_refused(client: TestClient) -> None:
    """The key is stored with the outbox row and travels as the idempotencyKey header of the event."""
    r = client.post("/api/payments", json=PAYMENT, headers={**AUTH, "Idempotency-Key": "4111.1111.1111.1111"})
    assert r.status_code == 422 and "idempotency" in r.text
    _no_card(r.text)


def test_error_messages_that_name_a_bad_value_mask_card_numbers(settings: Settings) -> None:
    """Currency, failure code, state and status are not free text: a bad one is named, masked."""
    from payevents.errors import PayeventsError
    from payevents.services import invoices, payments

    card = "4111.1111.1111.1111"
    calls = [
        lambda: payments.create(settings, customer_id="c", amount="1.00", currency=card, description="x"),
        lambda: payments.fail(settings, "pay_x", code=card, reason="r"),
        lambda: payments.list_payments(settings, state=card),
        lambda: invoices.list_invoices(settings, status=card),
        lambda: invoices.create(settings, customer_id="c", amount_due="1.00", currency=card, due_date="2030-01-01"),
        lambda: invoices.create(settings, customer_id="c", amount_due="1.00", currency="USD", due_date=card),
    ]
    for call in calls:
        with pytest.raises(PayeventsError) as info:
            call()
        _no_card(str(info.value))
        assert "1111" in str(info.value)  # the value is still named: its last four
