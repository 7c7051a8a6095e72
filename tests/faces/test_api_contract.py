"""The API's contract (issue #13): one error object, statuses by class of error, unknown fields refused,
amounts as decimal strings, and all of it in the OpenAPI document."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from payevents.faces.web import create_app
from payevents.settings import Settings

TOKEN = "s3cret-token"
PAYMENT: dict[str, Any] = {"customer_id": "cus_1", "amount": "99.99", "currency": "USD", "description": "Order 7"}


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings.replace(api_token=TOKEN)), raise_server_exceptions=False) as c:
        yield c


def auth(key: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}", **({"Idempotency-Key": key} if key else {})}


def error_of(r: Any, status: int) -> dict[str, Any]:
    """The response's error object, after checking the status and that it is the only thing in the body."""
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"type", "code", "message", "param"}, err
    assert isinstance(err["message"], str) and err["message"]
    return dict(err)


def test_every_class_of_error_has_its_status_and_the_one_error_object(client: TestClient) -> None:
    # 400: shape of the request
    e = error_of(client.post("/api/payments", json={**PAYMENT, "colour": "red"}, headers=auth("k1")), 400)
    assert (e["type"], e["code"], e["param"]) == ("invalid_request_error", "parameter_unknown", "colour")
    e = error_of(client.post("/api/payments", json={k: v for k, v in PAYMENT.items() if k != "currency"},
                             headers=auth("k2")), 400)
    assert (e["code"], e["param"]) == ("parameter_missing", "currency")
    e = error_of(client.post("/api/payments", json=PAYMENT, headers=auth()), 400)
    assert (e["code"], e["param"]) == ("parameter_missing", "Idempotency-Key")
    e = error_of(client.get("/api/payments", params={"limit": "many"}), 400)
    assert (e["code"], e["param"]) == ("parameter_invalid", "limit")
    e = error_of(client.post("/api/payments", content=b"{not json", headers={**auth("k3"),
                                                                            "Content-Type": "application/json"}), 400)
    assert e["type"] == "invalid_request_error"
    # 401
    r = client.post("/api/payments", json=PAYMENT, headers={"Idempotency-Key": "k4"})
    e = error_of(r, 401)
    assert (e["type"], e["code"]) == ("authentication_error", "token_invalid")
    assert r.headers["www-authenticate"].startswith("Bearer")
    # 404: a resource, and a path
    e = error_of(client.get("/api/payments/pay_nope"), 404)
    assert (e["type"], e["code"]) == ("invalid_request_error", "resource_missing")
    assert error_of(client.get("/api/nothing-here"), 404)["code"] == "resource_missing"
    # 422: well-formed, breaks a rule
    e = error_of(client.post("/api/payments", json={**PAYMENT, "currency": "usd"}, headers=auth("k5")), 422)
    assert (e["type"], e["code"], e["param"]) == ("invalid_request_error", "parameter_invalid", "currency")
    e = error_of(client.post("/api/payments", json={**PAYMENT, "amount": "99.999"}, headers=auth("k6")), 422)
    assert e["param"] == "amount"
    # 409: idempotency and state
    pid = client.post("/api/payments", json=PAYMENT, headers=auth("k7")).json()["payment_id"]
    e = error_of(client.post("/api/payments", json={**PAYMENT, "amount": "1.00"}, headers=auth("k7")), 409)
    assert (e["type"], e["code"], e["param"]) == ("idempotency_error", "idempotency_key_reused", "Idempotency-Key")
    e = error_of(client.post(f"/api/payments/{pid}/capture", headers=auth()), 409)
    assert (e["type"], e["code"]) == ("invalid_request_error", "payment_state_invalid")


def test_unknown_fields_are_refused_on_every_write(client: TestClient) -> None:
    pid = client.post("/api/payments", json=PAYMENT, headers=auth("u0")).json()["payment_id"]
    writes = [
        ("/api/payments", {**PAYMENT, "amount_cents": 9999}),
        ("/api/invoices", {"customer_id": "c", "amount_due": "1.00", "currency": "USD", "due_date": "2030-01-01",
                           "invoice_id": "INV-U", "tax": "0.10"}),
        ("/api/customers", {"customer_id": "c", "name": "C", "phone": "+1 555"}),
        (f"/api/payments/{pid}/authorize", {"decline": None, "reason": "x"}),
        (f"/api/payments/{pid}/fail", {"code": "cancelled", "reason": "x", "note": "x"}),
    ]
    for path, body in writes:
        e = error_of(client.post(path, json=body, headers=auth("u-" + path)), 400)
        assert e["code"] == "parameter_unknown", (path, e)
        assert e["param"] in body and e["param"] not in {"customer_id", "code", "decline"}, (path, e)
    assert client.get(f"/api/payments/{pid}").json()["state"] == "initiated"  # nothing happened


@pytest.mark.parametrize("amount", [99.99, 100, "1e2", "-5.00", "99,99", " 99.99", ""])
def test_an_amount_is_a_decimal_string_and_nothing_else(client: TestClient, amount: Any) -> None:
    e = error_of(client.post("/api/payments", json={**PAYMENT, "amount": amount}, headers=auth(f"a{amount!r}")), 400)
    assert (e["code"], e["param"]) == ("parameter_invalid", "amount")
    assert '"99.99"' in e["message"] and "decimal string" in e["message"]
    e = error_of(client.post("/api/invoices", json={"customer_id": "c", "amount_due": amount, "currency": "USD",
                                                    "due_date": "2030-01-01", "invoice_id": "INV-A"}, headers=auth()),
                 400)
    assert e["param"] == "amount_due"
    assert client.get("/api/payments").json()["data"] == []


def test_amounts_in_major_units_of_each_currency(client: TestClient) -> None:
    for amount, currency in (("99.99", "USD"), ("1500", "JPY"), ("1.250", "KWD")):
        r = client.post("/api/payments", json={**PAYMENT, "amount": amount, "currency": currency},
                        headers=auth(currency))
        assert r.status_code == 201, r.text
        assert r.json()["amount"] == amount and r.json()["currency"] == currency


def test_the_openapi_document_states_the_error_object_and_the_amount_rule(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    err = schemas["ErrorDetail"]
    assert set(err["properties"]) == {"type", "code", "message", "param"}
    ref = {"$ref": "#/components/schemas/ErrorResponse"}
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            codes = set(op["responses"])
            assert {"400", "404", "422", "503"} <= codes, (method, path, codes)
            for code in codes - {"200", "201"}:
                assert op["responses"][code]["content"]["application/json"]["schema"] == ref, (method, path, code)
            if method == "post":
                assert {"401", "409"} <= codes, (method, path)
    payment = schemas["CreatePayment"]
    assert payment["additionalProperties"] is False
    assert payment["properties"]["amount"]["type"] == "string" and "pattern" in payment["properties"]["amount"]
    assert schemas["CreateInvoice"]["properties"]["amount_due"]["type"] == "string"


def test_a_bug_is_a_500_error_object_without_details(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from payevents.services import payments

    def boom(*_a: Any, **_k: Any) -> Any:
        raise RuntimeError("secret detail 4111 1111 1111 1111")

    monkeypatch.setattr(payments, "show", boom)
    e = error_of(client.get("/api/payments/pay_1"), 500)
    assert (e["type"], e["code"]) == ("api_error", "internal_error")
    assert "secret" not in e["message"]


def test_the_docs_work_offline(client: TestClient) -> None:
    """/docs references no other host: Swagger UI's script, style and icon come from this server."""
    import re

    page = client.get("/docs")
    assert page.status_code == 200
    urls = re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", page.text)
    assert urls and all(u.startswith("/") and not u.startswith("//") for u in urls), urls
    assert "validatorUrl" in page.text and "https://" not in page.text and "http://" not in page.text
    for u in urls:
        assert client.get(u).status_code == 200, u
    assert client.get("/redoc").status_code == 404  # FastAPI's ReDoc page loads from a CDN: not served
    doc = client.get("/openapi.json").json()
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"  # "Authorize" in the docs


def walk(client: TestClient, path: str, limit: int, **params: Any) -> list[list[dict[str, Any]]]:
    """Every page of a list, following next_cursor."""
    pages, after = [], None
    while True:
        r = client.get(path, params={**params, "limit": limit, **({"starting_after": after} if after else {})})
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {"data", "has_more", "next_cursor"}, body
        pages.append(body["data"])
        if not body["has_more"]:
            assert body["next_cursor"] is None
            return pages
        after = body["next_cursor"]
        assert isinstance(after, str) and after


def test_lists_page_with_a_cursor(store_settings: Settings) -> None:
    """Keyset paging on SQLite and PostgreSQL."""
    with TestClient(create_app(store_settings.replace(api_token=TOKEN))) as client:
        _lists_page_with_a_cursor(client, store_settings)


def _lists_page_with_a_cursor(client: TestClient, settings: Settings) -> None:
    from payevents.services import notifications

    ids = []
    for i in range(7):
        r = client.post("/api/payments", json={**PAYMENT, "customer_id": f"cus_{i}", "payment_id": f"pay_{i:02d}"},
                        headers=auth())
        ids.append(r.json()["payment_id"])
        client.post("/api/invoices", json={"customer_id": "c", "amount_due": "1.00", "currency": "USD",
                                           "due_date": "2030-01-01", "invoice_id": f"INV-{i:02d}"}, headers=auth())
        notifications.add_customer(settings, f"cus_{i}", f"Customer {i}")
    whole = client.get("/api/payments", params={"limit": 100}).json()["data"]
    pages = walk(client, "/api/payments", 3)
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [p["payment_id"] for page in pages for p in page] == [p["payment_id"] for p in whole]
    assert sorted(p["payment_id"] for p in whole) == sorted(ids)
    # a page boundary holds when something new arrives meanwhile (newest first: it is before the cursor)
    first = client.get("/api/payments", params={"limit": 3}).json()
    client.post("/api/payments", json={**PAYMENT, "payment_id": "pay_late"}, headers=auth())
    second = client.get("/api/payments", params={"limit": 3, "starting_after": first["next_cursor"]}).json()
    assert [p["payment_id"] for p in second["data"]] == [p["payment_id"] for p in whole[3:6]]
    invoices = [i["invoice_id"] for page in walk(client, "/api/invoices", 2) for i in page]
    assert invoices == [f"INV-{i:02d}" for i in range(7)]
    customers = [c["customer_id"] for page in walk(client, "/api/customers", 4) for c in page]
    assert customers == [f"cus_{i}" for i in range(7)]
    for path in ("/api/payments", "/api/invoices", "/api/customers", "/api/notifications", "/api/ledger/journal",
                 "/api/dead-letters", "/api/outbox/set-aside", "/api/invoices/unapplied"):
        body = client.get(path).json()
        assert set(body) == {"data", "has_more", "next_cursor"}, path
        e = error_of(client.get(path, params={"starting_after": "nope"}), 400)
        assert (e["code"], e["param"]) == ("parameter_invalid", "starting_after"), path
        assert error_of(client.get(path, params={"limit": 0}), 400)["param"] == "limit", path


def test_the_journal_pages_newest_first(processed: dict[str, Any]) -> None:
    with TestClient(create_app(processed["settings"])) as c:
        pages = walk(c, "/api/ledger/journal", 2)
        entries = [e for page in pages for e in page]
        assert len(entries) >= 4 and all(len(p) == 2 for p in pages[:-1])
        posted = [e["posted_at"] for e in entries]
        assert posted == sorted(posted, reverse=True)
        assert len({e["entry_id"] for e in entries}) == len(entries)
        line = entries[0]["lines"][0]
        assert isinstance(line["amount"], str) and line["currency"]
        letters = [d for page in walk(c, "/api/dead-letters", 1) for d in page]
        assert letters and {d["key"] for d in letters} == {"pay_broken"}
