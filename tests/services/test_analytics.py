"""Analytics: figures equal the events (per currency, minor units) after duplicates and replays;
report outputs (CSV, JSON, chart) and the CLI."""

from __future__ import annotations

import csv
import io
import json
import random
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from conftest_an import T0, feed, lifecycle, processed
from typer.testing import CliRunner

from payevents.contracts.codec import DecodedEvent
from payevents.errors import ContractError
from payevents.services import analytics
from payevents.services.analytics.service import SERVICE
from payevents.settings import Settings

EXPONENT = {"JPY": 0, "USD": 2, "KWD": 3, "CLF": 4}


def _value(rng: random.Random, currency: str) -> str:
    exp = EXPONENT[currency]
    minor = rng.randint(1, 5_000_00 * 10 ** max(0, exp - 2) + 1)
    return str(Decimal(minor).scaleb(-exp))


def _mixed_run(seed: int = 7, payments: int = 60) -> tuple[list[DecodedEvent], dict[str, int], dict[str, int]]:
    """Events of many payments over three months and four currencies, some failing, some legacy.

    Returns (events in order, expected processed minor units per currency, expected failures per code)."""
    rng = random.Random(seed)
    events: list[DecodedEvent] = []
    expected: dict[str, int] = {}
    failures: dict[str, int] = {}
    for i in range(payments):
        currency = rng.choice(list(EXPONENT))
        value = _value(rng, currency)
        at = T0 - timedelta(days=rng.randint(0, 75), hours=rng.randint(0, 23))
        kind = rng.random()
        if kind < 0.15:
            code = rng.choice(["card_declined", "insufficient_funds"])
            events += lifecycle(f"pay_{i}", value, currency, at=at, fail=(code, f"gateway said {code}"))
            failures[code] = failures.get(code, 0) + 1
            continue
        if kind < 0.25:
            events.append(processed(f"pay_{i}", value, currency, at=at, legacy=True, merchant_id="MERCH-LEGACY",
                                    method="CREDIT_CARD"))
        else:
            events += lifecycle(f"pay_{i}", value, currency, at=at, merchant_id=rng.choice(["MERCH-1", "MERCH-2"]))
        expected[currency] = expected.get(currency, 0) + int(Decimal(value).scaleb(EXPONENT[currency]))
    return events, expected, failures


def _with_duplicates(events: list[DecodedEvent], rng: random.Random) -> list[DecodedEvent]:
    """Every fifth event delivered again right after itself, then the whole stream replayed."""
    out: list[DecodedEvent] = []
    for i, e in enumerate(events):
        out.append(e)
        if i % 5 == 0:
            out.append(e)
    replay = list(events)
    rng.shuffle(replay)  # a replay re-delivers the same events (order across payments may differ)
    return out + replay


def _totals(rows: list[analytics.RevenueRow]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for r in rows:
        totals[r.currency] = totals.get(r.currency, 0) + r.amount_minor
    return totals


def test_report_totals_equal_events_after_duplicates_and_replays(store_settings: Settings) -> None:
    events, expected, failures = _mixed_run()
    feed(store_settings, SERVICE, _with_duplicates(events, random.Random(1)), batch=37)
    d0, d1 = (T0 - timedelta(days=80)).date(), (T0 + timedelta(days=1)).date()

    daily = analytics.report(store_settings, d0, d1, by="day")
    monthly = analytics.report(store_settings, d0, d1, by="month")
    assert _totals(daily) == expected
    assert _totals(monthly) == expected
    assert {r.period for r in monthly} <= {"2025-09", "2025-10", "2025-11", "2025-12"}
    assert all(len(r.period) == 10 for r in daily)
    n_processed = sum(1 for e in events if e.event_type == "PaymentProcessed")
    assert sum(r.payments for r in daily) == n_processed == sum(r.payments for r in monthly)
    assert sum(r.failed for r in daily) == sum(failures.values())
    for r in daily:  # the decimal string and the minor units are the same amount
        assert Decimal(r.amount).scaleb(EXPONENT[r.currency]) == r.amount_minor

    m = analytics.metrics(store_settings)
    assert {p["currency"]: p["amount_minor"] for p in m["processed"]} == expected
    counts: dict[str, int] = {}
    for e in events:
        counts[e.event_type] = counts.get(e.event_type, 0) + 1
    assert m["events"] == counts
    assert {r["reason"]: r["count"] for r in m["failures"]["by_reason"]} == failures
    finished = n_processed + sum(failures.values())
    assert m["failures"]["rate"] == pytest.approx(sum(failures.values()) / finished, abs=1e-6)
    # lifecycle(): authorization 3 s before capture, capture 0.5 s before processed, for every payment
    a2c, c2p = m["timings"]["authorization_to_capture"], m["timings"]["capture_to_processed"]
    assert a2c["count"] == sum(1 for e in events if e.event_type == "PaymentCaptured")
    assert (a2c["p50_ms"], a2c["max_ms"]) == (3000, 3000)
    assert (c2p["p50_ms"], c2p["max_ms"], c2p["avg_ms"]) == (500, 500, 500.0)

    # a replay from the beginning gives identical figures
    feed(store_settings, SERVICE, events, batch=100)
    assert analytics.report(store_settings, d0, d1, by="day") == daily
    assert analytics.metrics(store_settings) == m


def test_metrics_per_method_merchant_and_day(settings: Settings) -> None:
    events = [
        *lifecycle("p1", "10.00", "USD", merchant_id="M1", method="credit_card"),
        *lifecycle("p2", "5.50", "USD", merchant_id="M2", method="debit_card"),
        *lifecycle("p3", "1000", "JPY", merchant_id="M1", method="credit_card", at=T0 + timedelta(days=1)),
        processed("p4", "2.25", "USD", legacy=True, merchant_id="MERCH-456", method="CREDIT_CARD"),
        *lifecycle("p5", "7.00", "USD", merchant_id="M1", fail=("card_declined", "Do not honor")),
    ]
    feed(settings, SERVICE, events)
    m = analytics.metrics(settings)
    by_merchant = {(r["merchant_id"], r["currency"]): (r["payments"], r["amount"]) for r in m["by_merchant"]}
    # PaymentProcessed carries no merchantId: it comes from the payment's earlier events (or legacy metadata)
    assert by_merchant == {("M1", "USD"): (1, "10.00"), ("M2", "USD"): (1, "5.50"), ("M1", "JPY"): (1, "1000"),
                           ("MERCH-456", "USD"): (1, "2.25")}
    by_method = {(r["method_type"], r["currency"]): r["amount_minor"] for r in m["by_method"]}
    assert by_method == {("credit_card", "USD"): 1225, ("debit_card", "USD"): 550, ("credit_card", "JPY"): 1000}
    by_day = {(r["day"], r["currency"]): r["payments"] for r in m["by_day"]}
    assert by_day == {("2025-12-11", "USD"): 3, ("2025-12-12", "JPY"): 1}
    assert m["failures"]["by_reason"] == [
        {"reason": "card_declined", "count": 1, "stages": {"authorized": 1}, "rate": 0.2}]
    only_12th = analytics.metrics(settings, date(2025, 12, 12), date(2025, 12, 12))
    assert [p["currency"] for p in only_12th["processed"]] == ["JPY"]


def test_report_rejects_bad_ranges(settings: Settings) -> None:
    with pytest.raises(ContractError, match="before from"):
        analytics.report(settings, date(2025, 2, 1), date(2025, 1, 1))
    with pytest.raises(ContractError, match="'week'"):
        analytics.report(settings, date(2025, 1, 1), date(2025, 2, 1), by="week")  # type: ignore[arg-type]


def test_csv_json_and_chart(settings: Settings, tmp_path: Path) -> None:
    events, expected, _ = _mixed_run(seed=3, payments=40)
    feed(settings, SERVICE, events)
    rows = analytics.report(settings, date(2025, 9, 1), date(2025, 12, 31), by="day")

    parsed = list(csv.DictReader(io.StringIO(analytics.to_csv(rows))))
    assert len(parsed) == len(rows)
    totals: dict[str, int] = {}
    for rec in parsed:
        totals[rec["currency"]] = totals.get(rec["currency"], 0) + int(rec["amount_minor"])
        assert Decimal(rec["amount"]).scaleb(EXPONENT[rec["currency"]]) == int(rec["amount_minor"])
    assert totals == expected
    assert json.loads(analytics.to_json(rows)) == [r.as_dict() for r in rows]

    import matplotlib.image

    for by in ("day", "month"):
        path = analytics.render_chart(analytics.report(settings, date(2025, 9, 1), date(2025, 12, 31), by=by),
                                      tmp_path / f"revenue-{by}.png")
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        img = matplotlib.image.imread(path)
        assert img.shape[0] > 400 and img.shape[1] > 600  # one panel per currency: a tall, wide image
        assert img.std() > 0.05  # not a blank canvas
    svg = analytics.render_chart(rows, tmp_path / "revenue.svg")
    assert svg.read_text().lstrip().startswith(("<?xml", "<svg"))
    empty = analytics.render_chart([], tmp_path / "empty.png")
    assert empty.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_report_and_metrics(settings: Settings, tmp_path: Path) -> None:
    from payevents.faces.cli import app

    feed(settings, SERVICE, [*lifecycle("p1", "99.99", "USD"), *lifecycle("p2", "1.234", "KWD"),
                             *lifecycle("p3", "500", "JPY", at=T0 + timedelta(days=40))])
    env = {"PAYEVENTS_ENV": "dev", "PAYEVENTS_DATA_DIR": str(settings.data_dir)}
    runner = CliRunner()
    res = runner.invoke(app, ["analytics", "report", "--from", "2025-12-01", "--to", "2026-01-31",
                              "--by", "month", "--format", "csv", "--chart", str(tmp_path / "c.png")], env=env)
    assert res.exit_code == 0, res.output
    parsed = list(csv.DictReader(io.StringIO(res.stdout)))
    assert [(r["period"], r["currency"], r["amount"]) for r in parsed] == [
        ("2025-12", "KWD", "1.234"), ("2025-12", "USD", "99.99"), ("2026-01", "JPY", "500")]
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"

    res = runner.invoke(app, ["analytics", "report", "--from", "2025-12-01", "--to", "2025-12-31"], env=env)
    assert res.exit_code == 0, res.output
    assert "99.99" in res.stdout and "1.234" in res.stdout and "500" not in res.stdout.replace("1.234", "")

    res = runner.invoke(app, ["analytics", "report", "--from", "2025-12-01", "--to", "2025-12-31",
                              "--format", "json"], env=env)
    assert {r["currency"]: r["amount_minor"] for r in json.loads(res.stdout)} == {"USD": 9999, "KWD": 1234}

    res = runner.invoke(app, ["analytics", "report", "--from", "yesterday", "--to", "2025-12-31"], env=env)
    assert res.exit_code != 0 and "--from" in res.output

    res = runner.invoke(app, ["analytics", "metrics", "--format", "json"], env=env)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["events"]["PaymentProcessed"] == 3
    res = runner.invoke(app, ["analytics", "metrics"], env=env)
    assert res.exit_code == 0 and "Stage times" in res.stdout


def test_a_store_at_migration_1_upgrades_without_the_payment_and_month_indexes(store_settings: Settings) -> None:
    """Analytics migration 2 drops ix_analytics_events_payment (nothing reads events by payment), migration 3
    ix_analytics_events_type_month (the report by month selects its rows by day): a store written at version 1
    upgrades with its figures unchanged, by day and by month, and goes on consuming."""
    import dataclasses

    from payevents.services.analytics import store
    from payevents.store import db

    events, expected, _failures = _mixed_run()
    old = dataclasses.replace(SERVICE, migrations=tuple(m for m in store.MIGRATIONS if m.version == 1))
    feed(store_settings, old, events[: len(events) // 2], batch=40)
    d0, d1 = (T0 - timedelta(days=80)).date(), (T0 + timedelta(days=1)).date()
    db.dispose_engines()
    feed(store_settings, SERVICE, events[len(events) // 2 :], batch=40)  # migrates to the newest version first
    assert _totals(analytics.report(store_settings, d0, d1, by="day")) == expected
    assert _totals(analytics.report(store_settings, d0, d1, by="month")) == expected
    eng = store.engine(store_settings)
    with eng.connect() as conn:
        if eng.dialect.name == "sqlite":
            indexes = set(conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'index'").scalars())
        else:
            indexes = set(conn.exec_driver_sql(
                "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()").scalars())
    assert "ix_analytics_events_type_day" in indexes
    assert not indexes & {"ix_analytics_events_payment", "ix_analytics_events_type_month"}
