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

