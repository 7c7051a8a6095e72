"""Review findings in the web face."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from payevents.faces.web import create_app
from payevents.services import payments
from payevents.settings import Settings

TOKEN = "s3cret-token"


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings.replace(api_token=TOKEN))) as c:
        yield c


def test_dashboard_escapes_user_supplied_text(client: TestClient, settings: Settings) -> None:
    evil = "<script>alert(1)</script>"
    p = payments.create(settings, customer_id=f"cus{evil}", amount="5.00", currency="USD", description="x",
                        invoice_id=f"INV{evil}")
    for url in (f"/payments/{p.payment_id}", "/payments"):
        page = client.get(url)
        assert page.status_code == 200
        assert evil not in page.text, url
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text, url



CARD = "4111111111111111"


def test_card_number_sent_as_last4_is_not_echoed(client: TestClient) -> None:
    body = {"customer_id": "cus_1", "amount": "9.99", "currency": "USD", "description": "x"}
    auth = {"Authorization": f"Bearer {TOKEN}", "Idempotency-Key": "card-test"}
    as_string = client.post("/api/payments", json={**body, "last4": CARD}, headers=auth)
    assert as_string.status_code == 422 and "last4" in as_string.text
    assert CARD not in as_string.text
    as_number = client.post("/api/payments", json={**body, "last4": int(CARD)}, headers=auth)
    assert as_number.status_code == 400 and as_number.json()["error"]["param"] == "last4"  # a JSON number: shape
    assert CARD not in as_number.text
