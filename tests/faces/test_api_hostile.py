"""Hostile input against every route of the API and the dashboard: whatever a client sends (a field of any JSON
type, text of any length or alphabet, a card number, markup, a date that does not exist, a path segment of any
text), the answer is never a 500, a refusal is the one error object with a message, and a card number sent in is
never sent back."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from payevents.contracts.cardguard import holds_card_number
from payevents.faces.web import create_app
from payevents.settings import Settings

TOKEN = "s3cret-token"
CARDS = ("4111 1111 1111 1111", "4111111111111111")
PAYMENT: dict[str, Any] = {"customer_id": "cus_1", "amount": "99.99", "currency": "USD", "description": "Order 7",
                           "method_type": "credit_card", "last4": "4242", "invoice_id": None, "order_id": "o1",
                           "merchant_id": "m", "payment_id": None}
INVOICE: dict[str, Any] = {"customer_id": "cus_1", "amount_due": "10.00", "currency": "USD",
                           "due_date": "2030-01-01", "invoice_id": "INV-1", "description": "d"}
CUSTOMER: dict[str, Any] = {"customer_id": "cus_1", "name": "Ada", "email": "ada@example.com", "locale": "en_US"}
READS = ["/api/payments", "/api/payments/{id}", "/api/payments/{id}/timeline", "/api/customers",
         "/api/customers/{id}", "/api/invoices", "/api/invoices/unapplied", "/api/invoices/{id}",
         "/api/ledger/journal", "/api/ledger/trial-balance", "/api/notifications", "/api/notifications/summary",
         "/api/dead-letters", "/api/outbox/set-aside", "/api/channel", "/api/analytics/report",
         "/api/analytics/metrics", "/api/health", "/api/workers", "/", "/payments", "/payments/{id}", "/ledger",
         "/invoices", "/revenue", "/notifications", "/dead-letters", "/catalog", "/charts/revenue.svg",
         "/charts/publish-delay.svg", "/docs"]
PARAMS = ["state", "status", "customer_id", "limit", "starting_after", "from", "to", "by", "currency"]

texts = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=200, max_size=3000),
    st.sampled_from([*CARDS, "", " ", "\x00", "\r\nBcc: x@y", "😀" * 50, "NaN", "Infinity", "-0", "1e400",
                     "0.000000000000000000001", "9" * 40, "99.999", "-1", "0", "0.00", "1_000", "١٢٣", "２",
                     "2030-02-30", "2030-01-01T00:00:00", "0001-01-01", "9999-12-31", "usd", "XXX",
                     "../../etc/passwd", "%s%n", "' OR 1=1 --", "<script>alert(1)</script>", "cus_1", "INV-1",
                     "a" * 100_000]),
)
values = st.one_of(texts, st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                   st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=3))
query_values = st.one_of(texts.filter(lambda t: len(t) < 5000), st.integers().map(str), st.dates().map(str))
segments = query_values.filter(lambda t: "/" not in t and t not in ("", ".", ".."))  # one path segment
_keys = itertools.count()


def _sent_a_card(*parts: object) -> bool:
    return any(card in repr(parts) for card in CARDS)


def _check(r: Any, *sent: object) -> None:
    assert r.status_code < 500, (sent, r.status_code, r.text[:500])
    assert not (_sent_a_card(*sent) and holds_card_number(r.content)), (sent, r.text[:500])
    if r.status_code >= 400 and r.headers.get("content-type", "").startswith("application/json"):
        error = r.json()["error"]
        assert isinstance(error["message"], str) and error["message"], error


@pytest.fixture
def client(store_settings: Settings) -> Iterator[TestClient]:
    """The API on SQLite and on PostgreSQL, with one payment in it (``client.payment_id``)."""
    with TestClient(create_app(store_settings.replace(api_token=TOKEN)), raise_server_exceptions=False) as c:
        r = c.post("/api/payments", json={k: v for k, v in PAYMENT.items() if v is not None},
                   headers={"Authorization": f"Bearer {TOKEN}", "Idempotency-Key": "a-payment"})
        assert r.status_code == 201, r.text
        c.payment_id = r.json()["payment_id"]  # type: ignore[attr-defined]
        yield c


def test_no_write_answers_500_or_sends_a_card_back(client: TestClient) -> None:
    @hsettings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def write(data: Any) -> None:
        path, base = data.draw(st.sampled_from([("/api/payments", PAYMENT), ("/api/invoices", INVOICE),
                                                ("/api/customers", CUSTOMER)]))
        changes = data.draw(st.dictionaries(st.sampled_from(sorted(base)), values, max_size=len(base)))
        body = {**base, **changes}
        r = client.post(path, json=body, headers={"Authorization": f"Bearer {TOKEN}",
                                                  "Idempotency-Key": f"k{next(_keys)}"})
        _check(r, path, body)

    write()


def test_no_read_answers_500_or_sends_a_card_back(client: TestClient) -> None:
    @hsettings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(path=st.sampled_from(READS), segment=segments,
           params=st.dictionaries(st.sampled_from(PARAMS), query_values, max_size=4))
    def read(path: str, segment: str, params: dict[str, str]) -> None:
        r = client.get(path.replace("{id}", quote(segment, safe="")), params=params)
        _check(r, path, segment, params)

    read()


def test_no_payment_action_answers_500_or_sends_a_card_back(client: TestClient) -> None:
    @hsettings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(action=st.sampled_from(["authorize", "capture", "complete", "fail"]),
           segment=st.one_of(st.just(client.payment_id), segments),  # type: ignore[attr-defined]
           body=st.one_of(st.none(), st.dictionaries(st.sampled_from(["decline", "code", "reason", "note"]), values,
                                                     max_size=3)),
           key=st.one_of(st.none(), st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=300)))
    def act(action: str, segment: str, body: dict[str, Any] | None, key: str | None) -> None:
        headers = {"Authorization": f"Bearer {TOKEN}", **({"Idempotency-Key": key} if key else {})}
        r = client.post(f"/api/payments/{quote(segment, safe='')}/{action}", json=body, headers=headers)
        _check(r, action, segment, body, key)

    act()



MIB = 1024 * 1024


@pytest.mark.parametrize("token", [TOKEN, "wrong", None], ids=["authorized", "wrong-token", "no-token"])
@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_a_body_over_the_limit_is_refused_with_the_rule(settings: Settings, token: str | None,
                                                        declared: bool) -> None:
    from payevents.faces.web.errors import MAX_BODY_BYTES

    head = b'{"customer_id": "cus_1", "amount": "1.00", "currency": "USD", "description": "'

    def body() -> Iterator[bytes]:
        yield head
        for _ in range(4):
            yield b"a" * MIB
        yield b'"}'

    headers = {"Idempotency-Key": "big", "content-type": "application/json",
               **({"Authorization": f"Bearer {token}"} if token else {})}
    if declared:
        headers["content-length"] = str(len(head) + 4 * MIB + 2)
    with TestClient(create_app(settings.replace(api_token=TOKEN)), raise_server_exceptions=False) as c:
        r = c.post("/api/payments", content=body(), headers=headers)
        assert r.status_code == 413, r.text[:300]
        error = r.json()["error"]
        assert error["code"] == "body_too_large" and error["param"] == "body"
        assert f"at most {MAX_BODY_BYTES:,} bytes" in error["message"]
        if declared:
            assert error["message"].startswith(f"request body: {len(head) + 4 * MIB + 2:,} bytes")
        # a body under the limit still meets the fields' own rules
        r = c.post("/api/payments", json={**PAYMENT, "description": "a" * 300_000, "payment_id": None},
                   headers={"Authorization": f"Bearer {TOKEN}", "Idempotency-Key": "long"})
        assert r.status_code == 422 and r.json()["error"]["param"] == "description", r.text[:300]


def test_a_huge_body_without_a_token_does_not_grow_the_servers_memory(tmp_path: Any) -> None:
    # Every route read the whole body before anything else, the token check included: one request of a few
    # hundred MiB, from anyone, was held in the server's memory (and parsed as JSON) before its 401
    import http.client
    import os
    import subprocess
    import sys
    import time

    from faces.conftest import free_port

    def peak_rss(pid: int) -> int:
        status = Path(f"/proc/{pid}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) * 1024

    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PAYEVENTS_")},
           "PAYEVENTS_ENV": "dev", "PAYEVENTS_DATA_DIR": str(tmp_path)}
    server = subprocess.Popen([sys.executable, "-c", "from payevents.faces.cli import main; main()", "serve",
                               "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                probe = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                probe.request("GET", "/api/health")
                probe.getresponse().read()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "payevents serve did not start"
                time.sleep(0.2)
        before = peak_rss(server.pid)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.putrequest("POST", "/api/payments")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        chunk = b"%x\r\n%s\r\n" % (MIB, b"7" * MIB)
        try:
            opening = b'{"description": "'
            conn.send(b"%x\r\n%s\r\n" % (len(opening), opening))
            for _ in range(256):  # 256 MiB
                conn.send(chunk)
            conn.send(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may close the connection once it has answered
        try:
            status = conn.getresponse().status
        except (http.client.HTTPException, OSError):
            status = None
        grown = peak_rss(server.pid) - before
        assert grown < 64 * MIB, f"the server's peak memory grew by {grown // MIB} MiB (answer: {status})"
        assert status in (413, None)
    finally:
        server.terminate()
        server.wait(timeout=60)


@pytest.mark.parametrize(("body", "message"), [
    (b'{"customer_id": "cus_1",, }', "body: not valid JSON (Expecting property name enclosed in double quotes at"
                                     " char 24)"),
    (b'{"customer_id": "cus_\xff"}', "body: not UTF-8 (invalid byte at position 21: invalid start byte)"),
    (b'{"customer_id": "cus_1", "n": ' + b"9" * 5000 + b"}", "body: a JSON number has more than 4,300 digits"),
])
def test_a_body_that_is_not_json_is_refused_with_why(settings: Settings, body: bytes, message: str) -> None:
    # The framework's reader answered "14: JSON decode error" naming a character position as the parameter, and
    # "There was an error parsing the body" for bytes that are not UTF-8 or a number of 5,000 digits
    with TestClient(create_app(settings.replace(api_token=TOKEN)), raise_server_exceptions=False) as c:
        r = c.post("/api/payments", content=body, headers={"Authorization": f"Bearer {TOKEN}",
                                                           "content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["error"] == {"type": "invalid_request_error", "code": "body_invalid", "message": message,
                                 "param": None}
