"""Money that cannot overflow: an upper bound per event (schema, decoder, services), and sums, balances
and reports that stay exact on SQLite and PostgreSQL far beyond 64 bits; every verify command and
page answers with a result."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from importlib import resources
from typing import Any

import pytest
from conftest_an import feed, processed
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from payevents.contracts import money
from payevents.contracts.codec import EventValidationError, decode_event, encode_event
from payevents.errors import ContractError
from payevents.faces.cli import app
from payevents.faces.web import create_app
from payevents.services import analytics, invoices, ledger
from payevents.services.analytics.service import SERVICE as ANALYTICS
from payevents.services.invoices.service import SERVICE as INVOICES
from payevents.services.ledger import store as ledger_store
from payevents.services.ledger.journal import Line, post
from payevents.services.payments.money import to_minor
from payevents.settings import Settings

MAX = money.MAX_AMOUNT
N = 12  # events of the maximum amount: their sum no longer fits a signed 64-bit integer
DAY = datetime(2025, 12, 11, 10, 30, tzinfo=UTC)


def _amount_schemas() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for f in resources.files("payevents.contracts").joinpath("schemas").iterdir():
        if f.name.endswith(".json"):
            doc = json.loads(f.read_text("utf-8"))
            body = doc["properties"].get("data") or doc["properties"]["payload"]
            out.append((f.name, body["properties"]["amount"]["properties"]["value"]))
    return out


def test_every_schema_states_the_upper_bound_of_an_amount() -> None:
    schemas = _amount_schemas()
    assert len(schemas) == 6
    for name, value in schemas:
        assert value.get("maximum") == int(MAX), name
        assert f"{int(MAX):,}" in value["description"] or str(int(MAX)) in value["description"], name


def test_the_bound_fits_every_currency_in_64_bits_with_room_for_sums() -> None:
    for code in money.MINOR_UNITS:
        assert money.to_minor(MAX, code) <= money.MAX_MINOR < 2**63 // 8, code


def test_an_amount_above_the_bound_is_refused_everywhere() -> None:
    at_bound = processed("pay_max", str(MAX), "CLF")
    assert decode_event(encode_event(at_bound.event)).event.data.amount.value == MAX
    over = str(MAX + Decimal("0.0001"))
    raw = encode_event(at_bound.event).replace(str(MAX).encode(), over.encode())
    with pytest.raises(EventValidationError) as err:
        decode_event(raw)
    assert [e.rule for e in err.value.errors] == ["maximum"]
    assert "data.amount.value" in str(err.value)
    legacy = json.dumps({
        "eventType": "PAYMENT_PROCESSED", "timestamp": "2025-12-11T10:30:00", "version": "1.0",
        "payload": {"paymentId": "PAY-BIG", "amount": {"value": 1, "currency": "USD"}, "status": "SUCCESS",
                    "paymentMethod": {"type": "CREDIT_CARD", "last4": "4242"}},
        "metadata": {"idempotencyKey": "PAY-BIG-1"},
    }).replace('"value": 1,', f'"value": {int(MAX) * 10},').encode()
    with pytest.raises(EventValidationError) as err:
        decode_event(legacy)
    assert "maximum" in [e.rule for e in err.value.errors]
    with pytest.raises(ContractError, match="maximum"):
        to_minor(over, "CLF")  # payments, invoices and the ledger refuse it too


def _fill(s: Settings) -> None:
    """N ledger entries, analytics facts and invoice credits of the maximum amount, in CLF (4 decimals)."""
    minor = money.to_minor(MAX, "CLF")
    with ledger_store.engine(s).begin() as conn:
        for i in range(N):
            post(conn, event_id=f"big-{i}", payment_id=f"pay_big_{i}", description="big", occurred_at=DAY,
                 lines=[Line(account="cash", currency="CLF", side="D", amount_minor=minor),
                        Line(account="accounts_receivable", currency="CLF", side="C", amount_minor=minor)])
    invoices.create(s, invoice_id="INV-BIG", customer_id="cus_big", amount_due="1", currency="CLF",
                    due_date="2026-01-31")
    events = [processed(f"pay_big_{i}", str(MAX), "CLF", customer_id="cus_big", invoice_id="INV-BIG", at=DAY)
              for i in range(N)]
    feed(s, ANALYTICS, events)
    feed(s, INVOICES, events)


def test_sums_balances_and_reports_of_maximum_amounts_are_exact(store_settings: Settings) -> None:
    s = store_settings
    _fill(s)
    total = N * money.to_minor(MAX, "CLF")
    assert total > 2**63
    trial = ledger.balances(s)
    [clf] = trial.currencies
    assert (clf.total_debits_minor, clf.total_credits_minor, clf.balanced) == (total, total, True)
    assert clf.total_debits == N * MAX
    report = ledger.verify(s)
    assert report.ok, report.violations
    [row] = analytics.report(s, DAY.date(), DAY.date())
    assert (row.payments, row.amount_minor, Decimal(row.amount)) == (N, total, N * MAX)
    metrics = analytics.metrics(s)
    assert metrics["processed"][0]["amount_minor"] == total
    assert metrics["by_day"][0]["amount_minor"] == total
    [credit] = invoices.credits(s)
    assert credit.amount_minor == total - 1 * 10**4  # all but the 1 CLF due
    assert invoices.check(s) == []


def test_a_ledger_entry_above_the_bound_is_refused(settings: Settings) -> None:
    big = money.MAX_MINOR
    with ledger_store.engine(settings).begin() as conn, pytest.raises(ContractError, match="debits of one entry"):
        post(conn, event_id="too-big", payment_id="pay_too_big", description="x", occurred_at=DAY,
             lines=[Line(account="cash", currency="CLF", side="D", amount_minor=big),
                    Line(account="cash", currency="CLF", side="D", amount_minor=1),
                    Line(account="accounts_receivable", currency="CLF", side="C", amount_minor=big + 1)])


def _cli(s: Settings, *args: str) -> tuple[int, str, BaseException | None]:
    result = CliRunner().invoke(app, [*args, "--env", "dev", "--data-dir", str(s.data_dir)])
    return result.exit_code, result.output, result.exception


def test_verify_commands_and_pages_answer_with_a_result(settings: Settings) -> None:
    _fill(settings)

    for args in (["ledger", "verify"], ["ledger", "balances"], ["invoices", "credits"],
                 ["analytics", "report", "--from", "2025-12-11", "--to", "2025-12-11"],
                 ["analytics", "metrics", "--format", "json"]):
        code, out, exc = _cli(settings, *args)
        assert code == 0 and exc is None, (args, out, exc)
    code, out, _ = _cli(settings, "ledger", "balances")
    assert "…" not in out  # no digit cut off
    code, out, _ = _cli(settings, "ledger", "balances", "--json")
    assert Decimal(json.loads(out)["currencies"][0]["total_debits"]) == N * MAX
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        for path in ("/", "/ledger", "/revenue?days=3660", "/invoices", "/api/ledger/trial-balance",
                     "/api/analytics/metrics", "/api/analytics/report?from=2025-12-11&to=2025-12-11"):
            r = client.get(path)
            assert r.status_code == 200, (path, r.text[-500:])
        tb = client.get("/api/ledger/trial-balance").json()
        assert tb["currencies"][0]["total_debits_minor"] == N * money.to_minor(MAX, "CLF")


def test_verify_reports_amounts_written_around_the_guards_instead_of_failing(settings: Settings) -> None:
    """Someone drops the journal's triggers and writes an entry whose lines overflow 64 bits when summed:
    verify (and the page) still answer, with the violations."""
    with ledger_store.engine(settings).begin() as conn:
        for trigger in ("journal_entries_balanced", "journal_lines_sealed"):
            conn.exec_driver_sql(f"DROP TRIGGER {trigger}")
        conn.exec_driver_sql("INSERT INTO ledger_accounts VALUES ('cash', 'CLF', 'Cash', 'asset', '2025-12-11')")
        for n in (1, 2):
            conn.exec_driver_sql(f"INSERT INTO journal_lines VALUES ('e-big', {n}, 'cash', 'CLF', 'D', {9 * 10**18})")
        conn.exec_driver_sql("INSERT INTO journal_entries VALUES ('e-big', 'ev-big', 'pay-big', 'payment', 'x', 0, 2,"
                             " '2025-12-11', '2025-12-11', NULL)")
    report = ledger.verify(settings)
    assert not report.ok
    rules = {v.rule for v in report.violations}
    assert {"balanced-per-currency", "trial-balance", "database-guard"} <= rules, report.violations
    [clf] = ledger.balances(settings).currencies
    assert clf.total_debits_minor == 18 * 10**18 and not clf.balanced
    code, out, exc = _cli(settings, "ledger", "verify")
    assert code == 1 and (exc is None or isinstance(exc, SystemExit)), (out, exc)  # the violations, no traceback
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        assert client.get("/ledger").status_code == 200
        assert client.get("/").status_code == 200
