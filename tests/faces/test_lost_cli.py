"""``payevents lost``: the ranges each service's consumers recorded as deleted from the channel before they read
them (``tests/runtime/test_records_lost.py`` records them on Apache Kafka), with the command that publishes them
again."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from payevents.faces.cli import app
from payevents.faces.web.app import create_app
from payevents.faces.web.data import lag_per_service
from payevents.runtime.consumer import lost_ranges, migrate_runtime
from payevents.settings import Settings
from payevents.store import db


def test_lost_lists_what_each_service_recorded_with_the_command_to_publish_it_again(tmp_path: Path) -> None:
    settings = Settings(env="dev", data_dir=tmp_path / "data")  # type: ignore[arg-type]
    ledger = db.engine_for(settings, "ledger")
    assert lost_ranges(ledger, "ledger") == []  # no runtime tables yet: nothing, and nothing created
    migrate_runtime(ledger)
    with ledger.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO consumer_lost (service, topic, partition_no, first_offset, upto_offset, reported_at)"
            " VALUES ('ledger', 'payments.dev.events', 2, 120, 150, '2026-12-02T16:00:00+00:00')")
    opts = ["--env", "dev", "--data-dir", str(settings.data_dir)]
    out = CliRunner().invoke(app, ["lost", "--json", *opts])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout) == [{
        "service": "ledger", "topic": "payments.dev.events", "partition": 2, "firstOffset": 120, "lastOffset": 149,
        "records": 30, "reportedAt": "2026-12-02T16:00:00+00:00",
        "republish": "payevents outbox republish --partition 2 --from-offset 120 --to-offset 149",
        "publishedAgain": None}]  # no payments outbox in this data dir to say what it published again
    out = CliRunner().invoke(app, ["lost", "ledger", *opts], env={"COLUMNS": "300"})
    assert out.exit_code == 0 and "| no outbox here" in out.stdout.replace("│", "|"), out.stdout
    assert not list(settings.data_dir.glob("payments*"))  # asking created no outbox
    out = CliRunner().invoke(app, ["lost", "invoices", *opts])
    assert out.exit_code == 0 and "records lost before they were read (0)" in out.stdout
    assert not list(settings.data_dir.glob("invoices*"))  # asking created no store
    # the lag says so too, and the dashboard's lag table (lag_per_service) carries the figure
    out = CliRunner().invoke(app, ["lag", *opts])
    assert out.exit_code == 0, out.output
    assert [line for line in out.stdout.splitlines() if "lost" in line] == [
        "ledger                0 behind  (30 lost before read: payevents lost)"]
    assert {g.service: g.lost for g in lag_per_service(settings)} == {
        "ledger": 30, "invoices": 0, "analytics": 0, "notifications": 0}
    with TestClient(create_app(settings)) as client:
        html = client.get("/").text
    assert re.search(r'<tr data-service="ledger">.*?<td class="num lost"><strong>30</strong></td>', html, re.S)
    assert re.search(r'<tr data-service="invoices">.*?<td class="num lost">0</td>', html, re.S)
    assert "<code>payevents lost</code> lists them" in html
    db.dispose_engines()
    cli = Path(sys.executable).with_name("payevents")
    run = subprocess.run([cli, "lost", "ledgr", *opts], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and run.stderr.startswith("error: service: 'ledgr' is not one of "), run.stderr


def test_lost_ranges_read_on_both_databases(store_settings: Settings) -> None:
    """SQLite and PostgreSQL (its own schema): nothing before the runtime's tables exist, then what was stored."""
    engine = db.engine_for(store_settings, "ledger")
    assert lost_ranges(engine, "ledger") == []
    migrate_runtime(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO consumer_lost (service, topic, partition_no, first_offset, upto_offset, reported_at)"
            " VALUES ('ledger', 'payments.dev.events', 0, 5, 9, '2026-12-02T17:00:00+00:00')")
    [lost] = lost_ranges(engine, "ledger")
    assert (lost.gap.partition, lost.gap.first, lost.records) == (0, 5, 4)
    assert lost_ranges(engine, "invoices") == []
