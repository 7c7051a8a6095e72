"""The money services' commands: payments lifecycle, invoices, ledger journal/balances/verify (exit codes)."""

from __future__ import annotations

import json
from pathlib import Path

from money_helpers import deliver, processed
from typer.testing import CliRunner

from payevents.errors import IllegalTransition
from payevents.faces.cli import app
from payevents.services.ledger import store as ledger_store
from payevents.settings import Settings


def _run(settings: Settings, *args: str) -> tuple[int, str, BaseException | None]:
    result = CliRunner().invoke(app, [*args, "--env", "dev", "--data-dir", str(settings.data_dir)])
    return result.exit_code, result.output, result.exception


def test_payment_lifecycle_and_invoice_commands(settings: Settings) -> None:
    code, out, _ = _run(settings, "invoices", "create", "--customer", "cus_1", "--amount", "100.00",
                        "--currency", "USD", "--due", "2025-12-31", "--id", "INV-CLI")  # fmt: skip
    assert code == 0 and "INV-CLI" in out and "Open" in out
    code, out, _ = _run(settings, "payments", "create", "--customer", "cus_1", "--amount", "60.00", "--currency", "USD",
                        "--description", "Order 1", "--invoice", "INV-CLI", "--idempotency-key", "k1", "--json")
    assert code == 0
    pid = json.loads(out)["payment_id"]
    code, out, _ = _run(settings, "payments", "create", "--customer", "cus_1", "--amount", "60.00", "--currency", "USD",
                        "--description", "Order 1", "--invoice", "INV-CLI", "--idempotency-key", "k1", "--json")
    assert json.loads(out)["payment_id"] == pid  # retried with the same key: the first result
    code, _, exc = _run(settings, "payments", "capture", pid)
    assert isinstance(exc, IllegalTransition)
    for step in ("authorize", "capture", "complete"):
        code, out, _ = _run(settings, "payments", step, pid)
        assert code == 0, out
    code, out, _ = _run(settings, "payments", "show", pid)
    assert "processed" in out and "PaymentProcessed" in out and "txn_" in out
    code, out, _ = _run(settings, "payments", "list", "--state", "processed")
    assert pid in out


def test_decline_exits_non_zero(settings: Settings) -> None:
    code, out, _ = _run(settings, "payments", "create", "--customer", "cus_1", "--amount", "5", "--currency", "JPY",
                        "--description", "x", "--json")  # fmt: skip
    pid = json.loads(out)["payment_id"]
    code, out, _ = _run(settings, "payments", "authorize", pid, "--decline", "insufficient_funds")
    assert code == 1 and "failed" in out and "insufficient_funds" in out


def test_ledger_commands_and_verify_exit_code(settings: Settings, tmp_path: Path) -> None:
    e = processed(amount="12.50", currency="USD", invoice_id="INV-X")
    deliver(settings, "ledger", [e])
    code, out, _ = _run(settings, "ledger", "journal", "--payment", e.payment_id, "--json")
    [entry] = json.loads(out)
    assert code == 0 and [ln["amount_minor"] for ln in entry["lines"]] == [1250, 1250]
    code, out, _ = _run(settings, "ledger", "balances")
    assert code == 0 and "balanced" in out and "12.50" in out
    code, out, _ = _run(settings, "ledger", "verify")
    assert code == 0 and out.startswith("ok")
    with ledger_store.engine(settings).begin() as conn:
        conn.exec_driver_sql("DROP TRIGGER journal_lines_no_update")
        conn.exec_driver_sql("UPDATE journal_lines SET amount_minor = 1 WHERE side = 'C'")
    code, out, _ = _run(settings, "ledger", "verify")
    assert code == 1 and "balanced-per-currency" in out and "journal_lines_no_update" in out
    code, out, _ = _run(settings, "invoices", "unapplied")
    assert code == 0
