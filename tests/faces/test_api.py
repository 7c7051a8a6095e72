"""The JSON API: bearer token on writes, idempotent payment commands, reads over the services."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from payevents.faces.web import create_app
from payevents.settings import Settings

TOKEN = "s3cret-token"


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings.replace(api_token=TOKEN))) as c:
        yield c


def auth(key: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    if key:
        headers["Idempotency-Key"] = key
    return headers


PAYMENT: dict[str, Any] = {"customer_id": "cus_1", "amount": "99.99", "currency": "USD",
                           "description": "Order 7", "invoice_id": "INV-7"}


def test_writes_need_the_bearer_token(client: TestClient) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        r = client.post("/api/payments", json=PAYMENT, headers=headers)
        assert r.status_code == 401, r.text
        assert r.headers["www-authenticate"].startswith("Bearer")
    assert client.post("/api/customers", json={"customer_id": "c", "name": "C"}).status_code == 401
    assert client.post("/api/invoices", json={"customer_id": "c", "amount_due": "1.00", "currency": "USD",
                                              "due_date": "2030-01-01"}).status_code == 401
    assert client.get("/api/payments").json()["data"] == []  # nothing was written
    assert client.post("/api/payments", json=PAYMENT, headers=auth("k0")).status_code == 201


def test_idempotent_create_retried_makes_one_payment(client: TestClient) -> None:
    first = client.post("/api/payments", json=PAYMENT, headers=auth("checkout-7"))
    assert first.status_code == 201, first.text
    for _ in range(5):
        again = client.post("/api/payments", json=PAYMENT, headers=auth("checkout-7"))
        assert again.status_code == 201 and again.json()["payment_id"] == first.json()["payment_id"]
    listed = client.get("/api/payments").json()["data"]
    assert [p["payment_id"] for p in listed] == [first.json()["payment_id"]]
    timeline = client.get(f"/api/payments/{first.json()['payment_id']}/timeline").json()
    assert [e["event_type"] for e in timeline] == ["PaymentInitiated"]
    conflict = client.post("/api/payments", json={**PAYMENT, "amount": "100.00"}, headers=auth("checkout-7"))
    assert conflict.status_code == 409 and conflict.json()["error"]["code"] == "idempotency_key_reused"


def test_lifecycle_through_the_api(client: TestClient) -> None:
    pid = client.post("/api/payments", json=PAYMENT, headers=auth("k1")).json()["payment_id"]
    assert client.post(f"/api/payments/{pid}/capture", headers=auth("k2")).status_code == 409  # before authorize
    for step in ("authorize", "capture", "complete"):
        r = client.post(f"/api/payments/{pid}/{step}", headers=auth(f"k-{step}"))
        assert r.status_code == 200, r.text
    body = client.get(f"/api/payments/{pid}").json()
    assert body["state"] == "processed" and body["amount"] == "99.99"  # money as a decimal string
    events = client.get(f"/api/payments/{pid}/timeline").json()
    assert [e["event_type"] for e in events] == [
        "PaymentInitiated", "PaymentAuthorized", "PaymentCaptured", "PaymentProcessed"]
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    assert {e["headers"]["correlationId"] for e in events} == {body["correlation_id"]}
    r = client.post(f"/api/payments/{pid}/fail", json={"code": "cancelled", "reason": "late"}, headers=auth("k3"))
    assert r.status_code == 409


def test_declines_failures_and_bad_input(client: TestClient) -> None:
    pid = client.post("/api/payments", json=PAYMENT, headers=auth("d1")).json()["payment_id"]
    r = client.post(f"/api/payments/{pid}/authorize", json={"decline": "insufficient_funds"}, headers=auth())
    assert r.status_code == 200 and r.json()["state"] == "failed"
    assert r.json()["failure_code"] == "insufficient_funds"
    pid2 = client.post("/api/payments", json=PAYMENT, headers=auth("d2")).json()["payment_id"]
    r = client.post(f"/api/payments/{pid2}/fail", json={"code": "cancelled", "reason": "customer"}, headers=auth())
    assert r.status_code == 200 and r.json()["state"] == "failed"
    bad = client.post("/api/payments", json={**PAYMENT, "currency": "usd"}, headers=auth("d3"))
    assert bad.status_code == 422 and bad.json()["error"]["param"] == "currency"
    assert client.get("/api/payments/pay_nope").status_code == 404
    assert client.get("/api/payments/pay_nope/timeline").status_code == 404


def test_invoices_customers_and_reads(client: TestClient) -> None:
    r = client.post("/api/invoices", json={"customer_id": "cus_1", "amount_due": "250.00", "currency": "USD",
                                           "due_date": "2030-01-01", "invoice_id": "INV-API-1"}, headers=auth())
    assert r.status_code == 201, r.text
    assert client.get("/api/invoices/INV-API-1").json()["invoice"]["status"] == "Open"
    listed = client.get("/api/invoices", params={"status": "Open"}).json()["data"]
    assert [i["invoice_id"] for i in listed] == ["INV-API-1"]
    r = client.post("/api/customers", json={"customer_id": "cus_1", "name": "Ada", "email": "ada@example.com"},
                    headers=auth())
    assert r.status_code == 201
    assert client.get("/api/customers/cus_1").json()["email"] == "ada@example.com"
    assert client.get("/api/ledger/trial-balance").json()["balanced"] is True
    assert client.get("/api/ledger/journal").json()["data"] == []
    assert client.get("/api/analytics/report", params={"from": "2030-01-01", "to": "2030-01-31"}).json() == []
    assert client.get("/api/notifications").json()["data"] == []
    assert client.get("/api/dead-letters").json()["data"] == []
    health = client.get("/api/health")
    assert health.status_code == 200 and health.json()["status"] == "ok" and health.json()["env"] == "dev"
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and "# TYPE" in metrics.text


def test_reads_after_processing(processed: dict[str, Any]) -> None:
    settings: Settings = processed["settings"]
    with TestClient(create_app(settings)) as c:
        trial = c.get("/api/ledger/trial-balance").json()
        assert trial["balanced"] and {cur["currency"] for cur in trial["currencies"]} == {"USD", "JPY", "KWD"}
        usd = next(cur for cur in trial["currencies"] if cur["currency"] == "USD")
        assert usd["total_debits_minor"] == usd["total_credits_minor"] == 12000 + 9999
        statuses = {i["invoice_id"]: i["status"] for i in c.get("/api/invoices").json()["data"]}
        full, part = processed["invoices"]
        assert statuses == {full: "Paid", part: "Partially Paid"}
        letters = c.get("/api/dead-letters").json()["data"]
        assert letters and all(d["reason"] for d in letters) and {d["key"] for d in letters} == {"pay_broken"}
        sent = c.get("/api/notifications", params={"status": "sent"}).json()["data"]
        assert len(sent) == 4
        channel = c.get("/api/channel").json()
        assert channel["publish"]["published"] == processed["published"]
        assert {g["service"]: g["lag"] for g in channel["lag"]} == {
            "ledger": 0, "invoices": 0, "analytics": 0, "notifications": 0}
        assert c.get("/catalog/channel.html").status_code == 200


def test_an_invoice_named_by_the_api_can_be_paid(client: TestClient) -> None:
    """The id the API derives for an invoice created without one (from its Idempotency-Key) is never taken for a
    card number: under the key ``order-6873`` it was ``INV-7D11240570895911`` (15 digits that pass Luhn), and a
    payment naming that invoice was refused as card data."""
    r = client.post("/api/invoices", json={"customer_id": "cus_1", "amount_due": "99.99", "currency": "USD",
                                           "due_date": "2030-01-31"}, headers=auth("order-6873"))
    assert r.status_code == 201, r.text
    invoice_id = r.json()["invoice"]["invoice_id"]
    paid = client.post("/api/payments", json={**PAYMENT, "invoice_id": invoice_id}, headers=auth("pay-6873"))
    assert paid.status_code == 201, paid.text
