"""Safe by default outside dev: the API token check at start, idempotent creates (issue #11)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from payevents.errors import ConfigError
from payevents.faces.web import create_app
from payevents.settings import Settings

STRONG = "k" * 20 + "-Z9q" * 4  # 36 characters


@pytest.mark.parametrize("env", ["sit", "prod"])
@pytest.mark.parametrize("token", ["dev-token", "short-but-set", " " * 3 + "x" * 10])
def test_outside_dev_the_api_refuses_to_start_with_a_default_or_short_token(settings: Settings, env: str,
                                                                            token: str) -> None:
    with pytest.raises(ConfigError) as err:
        create_app(settings.replace(env=env, api_token=token))
    message = str(err.value)
    assert "\n" not in message and "PAYEVENTS_API_TOKEN" in message and env in message
    assert token.strip() not in message  # the token itself is never echoed


@pytest.mark.parametrize("env", ["sit", "prod"])
def test_outside_dev_a_token_left_unset_is_refused(tmp_path: Any, env: str) -> None:
    settings = Settings.from_env({"PAYEVENTS_ENV": env, "PAYEVENTS_DATA_DIR": str(tmp_path)})
    with pytest.raises(ConfigError, match="PAYEVENTS_API_TOKEN"):
        create_app(settings)


def test_outside_dev_a_long_explicit_token_starts_and_guards_writes(settings: Settings) -> None:
    app = create_app(settings.replace(env="prod", api_token=STRONG))
    with TestClient(app) as client:
        assert client.get("/api/health").status_code == 200
        r = client.post("/api/customers", json={"customer_id": "c1", "name": "C"},
                        headers={"Authorization": "Bearer dev-token", "Idempotency-Key": "k"})
        assert r.status_code == 401


def test_dev_keeps_the_dev_default(settings: Settings) -> None:
    create_app(settings)  # no exception: dev is for laptops


def test_serve_outside_dev_exits_with_one_line(tmp_path: Any) -> None:
    env = {**os.environ, "PAYEVENTS_ENV": "prod", "PAYEVENTS_DATA_DIR": str(tmp_path)}
    env.pop("PAYEVENTS_API_TOKEN", None)
    proc = subprocess.run([sys.executable, "-c", "from payevents.faces.cli import main; main()", "serve",
                           "--port", "1"], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "PAYEVENTS_API_TOKEN" in lines[0], proc.stderr


# -- idempotent creates ---------------------------------------------------------------------------------

TOKEN = "t" * 40
PAYMENT: dict[str, Any] = {"customer_id": "cus_1", "amount": "99.99", "currency": "USD", "description": "Order 7"}
INVOICE: dict[str, Any] = {"customer_id": "cus_1", "amount_due": "250.00", "currency": "USD",
                           "due_date": "2030-01-31"}
CUSTOMER: dict[str, Any] = {"customer_id": "cus_9", "name": "Ada", "email": "ada@example.com"}


@pytest.fixture(params=["sqlite", "postgresql"])
def api(request: pytest.FixtureRequest, settings: Settings) -> Iterator[TestClient]:
    s = settings if request.param == "sqlite" else request.getfixturevalue("pg_settings")
    with TestClient(create_app(s.replace(api_token=TOKEN))) as c:
        yield c


def the_id(doc: dict[str, Any], field: str) -> str:
    return str(doc[field] if field in doc else doc["invoice"][field])  # an invoice comes with its payments


def auth(key: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}", **({"Idempotency-Key": key} if key else {})}


@pytest.mark.parametrize(("path", "body"), [("/api/payments", PAYMENT), ("/api/invoices", INVOICE)])
def test_a_create_without_key_or_chosen_id_is_refused(api: TestClient, path: str, body: dict[str, Any]) -> None:
    r = api.post(path, json=body, headers=auth())
    assert r.status_code == 400 and r.json()["error"]["param"] == "Idempotency-Key", r.text
    assert r.json()["error"]["code"] == "parameter_missing"
    assert api.get(path).json()["data"] == []


@pytest.mark.parametrize(("path", "body", "other", "id_field"), [
    ("/api/payments", PAYMENT, {**PAYMENT, "amount": "100.00"}, "payment_id"),
    ("/api/invoices", INVOICE, {**INVOICE, "amount_due": "251.00"}, "invoice_id"),
    ("/api/customers", CUSTOMER, {**CUSTOMER, "name": "Grace"}, "customer_id"),
])
def test_a_retry_gets_the_first_answer_and_another_body_is_a_conflict(
        api: TestClient, path: str, body: dict[str, Any], other: dict[str, Any], id_field: str) -> None:
    first = api.post(path, json=body, headers=auth("retry-me"))
    assert first.status_code == 201, first.text
    for _ in range(3):
        again = api.post(path, json=body, headers=auth("retry-me"))
        assert again.status_code == 201 and again.content == first.content
        assert again.headers["idempotent-replayed"] == "true"
    assert [x[id_field] for x in api.get(path).json()["data"]] == [the_id(first.json(), id_field)]
    conflict = api.post(path, json=other, headers=auth("retry-me"))
    assert conflict.status_code == 409 and conflict.json()["error"]["code"] == "idempotency_key_reused", conflict.text
    assert len(api.get(path).json()["data"]) == 1


@pytest.mark.parametrize(("path", "body", "other", "id_field"), [
    ("/api/payments", {**PAYMENT, "payment_id": "pay_chosen"}, {**PAYMENT, "payment_id": "pay_chosen",
                                                                "amount": "1.00"}, "payment_id"),
    ("/api/invoices", {**INVOICE, "invoice_id": "INV-CHOSEN"}, {**INVOICE, "invoice_id": "INV-CHOSEN",
                                                                "amount_due": "1.00"}, "invoice_id"),
    ("/api/customers", CUSTOMER, {**CUSTOMER, "email": "other@example.com"}, "customer_id"),
])
def test_a_client_chosen_id_stands_for_the_key(api: TestClient, path: str, body: dict[str, Any],
                                               other: dict[str, Any], id_field: str) -> None:
    first = api.post(path, json=body, headers=auth())
    again = api.post(path, json=body, headers=auth())
    assert first.status_code == again.status_code == 201, again.text
    assert again.content == first.content
    assert api.post(path, json=other, headers=auth()).status_code == 409
    assert [x[id_field] for x in api.get(path).json()["data"]] == [body[id_field]]


def test_the_replay_is_the_first_answer_not_the_current_state(api: TestClient) -> None:
    first = api.post("/api/payments", json=PAYMENT, headers=auth("k-state"))
    pid = first.json()["payment_id"]
    assert api.post(f"/api/payments/{pid}/authorize", headers=auth("k-auth")).json()["state"] == "authorized"
    again = api.post("/api/payments", json=PAYMENT, headers=auth("k-state"))
    assert again.json()["state"] == "initiated" and again.content == first.content


def test_a_refused_create_does_not_use_up_the_key(api: TestClient) -> None:
    bad = api.post("/api/invoices", json={**INVOICE, "currency": "usd"}, headers=auth("k-bad"))
    assert bad.status_code == 422
    good = api.post("/api/invoices", json=INVOICE, headers=auth("k-bad"))
    assert good.status_code == 201, good.text


def test_one_key_per_kind_of_thing(api: TestClient) -> None:
    assert api.post("/api/payments", json=PAYMENT, headers=auth("shared")).status_code == 201
    assert api.post("/api/invoices", json=INVOICE, headers=auth("shared")).status_code == 201


@pytest.mark.parametrize(("path", "body", "other", "id_field"), [
    ("/api/payments", PAYMENT, {**PAYMENT, "amount": "100.00"}, "payment_id"),
    ("/api/invoices", INVOICE, {**INVOICE, "amount_due": "251.00"}, "invoice_id"),
])
def test_keys_expire_after_a_day_and_a_late_retry_still_creates_nothing_twice(
        api: TestClient, monkeypatch: pytest.MonkeyPatch, path: str, body: dict[str, Any], other: dict[str, Any],
        id_field: str) -> None:
    import time

    from payevents.faces.web import idempotency

    clock = [time.time()]
    monkeypatch.setattr(idempotency, "_clock", lambda: clock[0])
    monkeypatch.setattr(idempotency, "_next_sweep", {})
    first = api.post(path, json=body, headers=auth("old-key"))
    assert first.status_code == 201, first.text
    engine = idempotency.engine(api.app.state.settings)  # type: ignore[attr-defined]
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT COUNT(*) FROM api_requests").scalar() == 1

    clock[0] += idempotency.KEY_TTL_S + 120  # a day and two minutes later: another create sweeps the old key
    assert api.post("/api/customers", json=CUSTOMER, headers=auth()).status_code == 201
    with engine.connect() as conn:
        keys = [k for (k,) in conn.exec_driver_sql("SELECT idem_key FROM api_requests")]
    assert "old-key" not in keys and len(keys) == 1, keys

    late = api.post(path, json=body, headers=auth("old-key"))  # a very late retry: no replay, but no second thing
    assert late.status_code in (200, 201), late.text
    assert the_id(late.json(), id_field) == the_id(first.json(), id_field)
    assert [x[id_field] for x in api.get(path).json()["data"]] == [the_id(first.json(), id_field)]
    assert api.post(path, json=other, headers=auth("old-key")).status_code == 409  # same key, other body


# -- PostgreSQL serialization failures are retried, never a 500 -------------------------------------------


def _serialization_failure() -> Exception:
    import psycopg
    import sqlalchemy as sa

    return sa.exc.OperationalError("UPDATE payments", {}, psycopg.errors.SerializationFailure("could not serialize"))


def test_a_serialization_failure_is_retried_not_answered_with_a_500(settings: Settings,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from payevents.services import payments

    real = payments.create
    failures = iter([_serialization_failure(), _serialization_failure()])

    def conflicting(*args: Any, **kwargs: Any) -> Any:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return real(*args, **kwargs)

    monkeypatch.setattr(payments, "create", conflicting)
    with TestClient(create_app(settings.replace(api_token=TOKEN)), raise_server_exceptions=False) as client:
        r = client.post("/api/payments", json=PAYMENT, headers=auth("ser-1"))
        assert r.status_code == 201, r.text
        assert len(client.get("/api/payments").json()["data"]) == 1


def test_a_conflict_that_never_clears_is_a_503_with_retry_after(settings: Settings,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from payevents.runtime import outbox
    from payevents.services import payments

    def always(*_args: Any, **_kwargs: Any) -> Any:
        raise _serialization_failure()

    monkeypatch.setattr(payments, "complete", always)
    monkeypatch.setattr(outbox.time, "sleep", lambda _s: None)
    with TestClient(create_app(settings.replace(api_token=TOKEN)), raise_server_exceptions=False) as client:
        r = client.post("/api/payments/pay_x/complete", headers=auth("ser-2"))
    assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
    assert r.json()["error"]["code"] == "service_unavailable"


def test_a_database_that_cannot_be_reached_is_a_503_with_retry_after_not_an_internal_error(
        settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    """Nothing listens where the stores are (a database down or restarting): every route that needs them says
    so with a 503 and Retry-After (the dashboard as a page), and nothing is logged as a bug."""
    down = settings.replace(api_token=TOKEN, database_url="postgresql+psycopg://postgres@127.0.0.1:1/test")
    with TestClient(create_app(down), raise_server_exceptions=False) as client:
        answers = [client.post("/api/payments", json=PAYMENT, headers=auth("down-1")),
                   client.post("/api/invoices", json=INVOICE, headers=auth("down-2")),
                   *(client.get(path) for path in ("/api/payments", "/api/invoices", "/api/ledger/trial-balance",
                                                   "/api/analytics/metrics", "/"))]
    for r in answers:
        assert r.status_code == 503 and r.headers["retry-after"] == "1", (r.request.url, r.text[:300])
        if r.request.url.path.startswith("/api/"):
            assert r.json()["error"] == {"type": "api_error", "code": "service_unavailable",
                                         "message": "database unreachable; retry later", "param": None}
    assert "database unreachable" in answers[-1].text  # the dashboard: an HTML page saying the same
    assert not [rec for rec in caplog.records if "unhandled error" in rec.getMessage()]


def test_a_database_turned_read_only_by_a_failover_is_a_503_and_a_fault_that_passes(
        pg_settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    """A write refused because the database is read-only (a standby, mid-failover) is the store's state, not a bug
    and not the request's fault: a 503 with Retry-After, and for the workers a fault to wait out."""
    import sqlalchemy as sa

    from db_faults import read_only_sessions
    from payevents.runtime.backoff import is_transient
    from payevents.runtime.runner import unreachable
    from payevents.store import db

    settings = pg_settings.replace(api_token=TOKEN)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        assert client.post("/api/payments", json=PAYMENT, headers=auth("ro-0")).status_code == 201
        with read_only_sessions(list(db._engines.values())):
            answers = [client.post("/api/payments", json=PAYMENT, headers=auth("ro-1")),
                       client.post("/api/invoices", json=INVOICE, headers=auth("ro-2"))]
        after = client.post("/api/payments", json=PAYMENT, headers=auth("ro-1"))
    for r in answers:
        assert r.status_code == 503 and r.headers["retry-after"] == "1", (r.request.url, r.text[:300])
        assert r.json()["error"] == {"type": "api_error", "code": "service_unavailable",
                                     "message": "database read-only; retry later", "param": None}
    assert after.status_code == 201, after.text  # the same key, once the database takes writes again
    assert not [rec for rec in caplog.records if "unhandled error" in rec.getMessage()]
    # the same error, as the workers see it: transient (backed off, never counted against a record) and, at
    # start-up, waited for
    assert settings.database_url is not None
    engine = db.make_engine(settings.database_url.get_secret_value())
    with pytest.raises(sa.exc.DBAPIError) as refused, engine.begin() as conn:
        conn.exec_driver_sql("SET TRANSACTION READ ONLY")
        conn.exec_driver_sql("CREATE TABLE nothing_here (n INT)")
    engine.dispose()
    assert is_transient(refused.value)
    assert (unreachable(refused.value) or "").startswith("database read-only: ")


# -- set-aside records on the dashboard and in the API ----------------------------------------------------


def test_set_aside_records_are_shown_with_their_reason(settings: Settings) -> None:
    from payevents.runtime import outbox
    from payevents.services import payments
    from payevents.services.payments import store

    p = payments.create(settings, customer_id="cus_1", amount="5.00", currency="USD", description="x",
                        idempotency_key="sa-1")
    engine = store.engine(settings)
    [event] = outbox.events_for_payment(engine, p.payment_id)
    with engine.begin() as conn:
        outbox.set_aside(conn, {event.seq: "record of 1200000 bytes is larger than message.max.bytes <b>"})
    with TestClient(create_app(settings)) as client:
        listed = client.get("/api/outbox/set-aside").json()["data"]
        assert [(a["seq"], a["event_id"], a["waiting"]) for a in listed] == [(event.seq, event.event_id, True)]
        page = client.get("/dead-letters").text
    assert 'id="set-aside"' in page and event.event_id in page and "message.max.bytes &lt;b&gt;" in page
    assert "payevents outbox resend" in page


def test_a_request_still_running_is_a_conflict_and_a_dead_one_is_taken_over(settings: Settings) -> None:
    import time

    from payevents.faces.web import idempotency

    body = {**INVOICE, "invoice_id": None, "description": None}
    fp = idempotency.fingerprint("invoices", body)
    engine = idempotency.engine(settings)
    with engine.begin() as conn:  # two claims without an answer: one fresh, one from a request that died
        conn.exec_driver_sql(
            "INSERT INTO api_requests (scope, idem_key, fingerprint, status_code, response, claimed_at)"
            " VALUES ('invoices', 'running', ?, NULL, NULL, ?), ('invoices', 'died', ?, NULL, NULL, ?)",
            (fp, time.time(), fp, time.time() - idempotency.STALE_AFTER_S - 1))
    with TestClient(create_app(settings.replace(api_token=TOKEN))) as client:
        running = client.post("/api/invoices", json=INVOICE, headers=auth("running"))
        assert running.status_code == 409 and "still running" in running.json()["error"]["message"]
        died = client.post("/api/invoices", json=INVOICE, headers=auth("died"))
        assert died.status_code == 201, died.text
        again = client.post("/api/invoices", json=INVOICE, headers=auth("died"))
        assert again.content == died.content
        assert len(client.get("/api/invoices").json()["data"]) == 1
