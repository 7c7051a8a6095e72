"""The main job: `payevents demo` drives the whole platform and ends with a balanced ledger and the summary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa

from card_leak import shows_test_card
from payevents.contracts.channel import topic_for
from payevents.faces.demo import run_demo
from payevents.services import ledger, load_service
from payevents.settings import Settings
from payevents.store.db import engine_for
from payevents.transport import open_transport


def test_demo_function_end_to_end(settings: Settings) -> None:
    r = run_demo(settings, payments=24, seed=3)
    assert r.ledger_ok, r.ledger_violations
    assert r.payments == 24 + 2  # the mix plus two payments failed half-way
    assert r.processed + r.failed == r.payments and r.failed >= 2
    # one journal entry per processed payment and per legacy-envelope event, balanced per currency
    entries = ledger.journal(settings, limit=10_000)
    assert len(entries) == r.processed + r.legacy_published
    assert all(c["total_debits_minor"] == c["total_credits_minor"] for c in r.trial_balance)
    # the partial payments of one invoice, the half-paid one and the overpayment
    assert r.invoices_by_status.get("Paid", 0) >= 3 and r.invoices_by_status.get("Partially Paid") == 1
    assert any(c["customer_id"] == "cus_omar" and c["amount_minor"] == 4250 for c in r.credits)
    # every event went through the outbox within the 5-second rule
    assert r.delays["count"] == r.events and r.breaches == 0
    # revenue per currency equals the ledger's cash debits per currency
    revenue = {}
    for row in r.revenue:
        revenue[row["currency"]] = revenue.get(row["currency"], 0) + row["amount_minor"]
    assert revenue == {c["currency"]: c["total_debits_minor"] for c in r.trial_balance}
    # e-mails: one per processed payment of a known customer with an address; the rest skipped with reasons
    assert r.emails["pending"] == 0 and r.emails["failed"] == 0
    assert r.emails["sent"] + r.emails["skipped"] == r.processed + r.legacy_published
    assert r.emails["reasons"]["skipped"] == {"no_customer_id": 3, "no_email": 1, "unknown_customer": 1}
    # the four malformed records are dead-lettered by each of the four services, with their reasons
    assert len(r.dead_letters) == 4
    assert all(services == ["analytics", "invoices", "ledger", "notifications"] for services in r.dead_letters.values())
    reasons = " ".join(r.dead_letters)
    assert "not valid JSON" in reasons and "'usd' is not an ISO 4217 code" in reasons
    assert "card number" in reasons and not shows_test_card(reasons)
    # each service marked every valid event of a type it handles exactly once (the legacy envelope is a
    # PaymentProcessed); the others it passed over unread, its group's offsets committed past every record
    with engine_for(settings, "payments").connect() as conn:
        by_type = dict(conn.execute(sa.text(
            "SELECT event_type, COUNT(*) FROM outbox_events GROUP BY event_type")).all())
    assert sum(by_type.values()) == r.events and by_type["PaymentProcessed"] == r.processed
    transport = open_transport(settings)
    try:
        topic = topic_for(settings.env)
        ends = transport.describe(topic).end_offsets
        for name in ("ledger", "invoices", "analytics", "notifications"):
            handled = load_service(name).handlers
            with engine_for(settings, name).connect() as conn:
                n = conn.execute(sa.text("SELECT COUNT(*) FROM processed_events WHERE service = :s"), {"s": name})
                assert n.scalar_one() == sum(c for t, c in by_type.items() if t in handled) + r.legacy_published
            committed = transport.group_offsets(load_service(name).group, topic)
            assert all(committed.get(p, 0) == end for p, end in ends.items()), (name, committed, ends)
    finally:
        transport.close()
    # a second run in the same data directory starts fresh invoices and adds up in the stores
    again = run_demo(settings, payments=8, seed=4)
    assert again.ledger_ok and again.payments == 8 + 2 and again.delays["count"] == again.events
    assert len(ledger.journal(settings, limit=10_000)) == r.processed + again.processed + 2 * r.legacy_published


def test_demo_command_prints_the_summary(tmp_path: Path) -> None:
    """What `make demo` runs, as a user would: a subprocess of the installed console command."""
    exe = Path(sys.executable).with_name("payevents")
    out_json = tmp_path / "summary.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYEVENTS_")}
    proc = subprocess.run(
        [str(exe), "demo", "--env", "dev", "--data-dir", str(tmp_path / "demo"), "--payments", "16",
         "--json", str(out_json)],
        capture_output=True, text=True, timeout=300, env={**env, "COLUMNS": "160"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for heading in ("this run", "publish delay", "ledger", "balanced per currency", "invoices", "revenue", "e-mails",
                    "dead letters"):
        assert heading in proc.stdout
    summary = json.loads(out_json.read_text())
    assert summary["ledger_ok"] is True and summary["payments"] == 18
