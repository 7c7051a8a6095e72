"""`payevents run all` as an operator sees it: each worker's /metrics, /livez, /readyz and status file,
restarts after SIGKILL, /api/health and the dashboard's worker table, JSON logs.

One `payevents run all` (embedded transport, a temp data dir) serves the tests of this module in order.
Nothing here times anything: every wait polls for a condition with a generous deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import runtime_counter as rc
from prometheus_client.parser import text_string_to_metric_families
from supervising import CLI, DEADLINE, wait_for

from payevents.runtime.workers import read_registry
from payevents.settings import Settings

SERVICES = ("ledger", "invoices", "analytics", "notifications")
WORKERS = ("relay", *SERVICES)
CARD = "4111111111111111"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class Run:
    def __init__(self, settings: Settings, proc: subprocess.Popen[bytes], out: Path, err: Path) -> None:
        self.settings, self.proc, self.out, self.err = settings, proc, out, err

    def views(self) -> dict[str, Any]:
        return {v.name: v for v in read_registry(self.settings)}

    def url(self, name: str) -> str:
        view = wait_for(lambda: (v := self.views().get(name)) is not None and v.alive and v.metrics_url and v,
                        f"{name} alive with a metrics URL")
        return str(view.metrics_url)

    def scrape(self, name: str) -> Samples:
        try:
            text = httpx.get(self.url(name), timeout=10).text
        except httpx.HTTPError:
            return {}
        out: Samples = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out[(s.name, frozenset(s.labels.items()))] = s.value
        return out

    def value(self, name: str, metric: str, **labels: str) -> float:
        want = set(labels.items())
        return sum(v for (n, ls), v in self.scrape(name).items() if n == metric and want <= ls)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    data = tmp_path_factory.mktemp("workers")
    env = {**os.environ, "PAYEVENTS_ENV": "dev", "PAYEVENTS_DATA_DIR": str(data), "PAYEVENTS_LOG_FORMAT": "json",
           # a long first restart delay, so that the SIGKILLed worker is seen down before it is back
           "PAYEVENTS_RESTART_BACKOFF": "12"}
    out, err = data / "run.out", data / "run.err"
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen([CLI, "run", "all"], stdout=o, stderr=e, env=env, start_new_session=True)
    r = Run(Settings(env="dev", data_dir=data), proc, out, err)
    try:
        wait_for(lambda: all((v := r.views().get(n)) is not None and v.alive and v.ready for n in WORKERS),
                 "the relay and the four consumers alive and ready")
        yield r
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_run_announces_each_worker_and_its_probes_answer(run: Run) -> None:
    announced = run.out.read_text()
    for name in WORKERS:
        url = run.url(name)
        assert f"{name}[0] pid" in announced and url in announced
        base = url.removesuffix("/metrics")
        assert httpx.get(f"{base}/livez", timeout=10).status_code == 200
        ready = httpx.get(f"{base}/readyz", timeout=10)
        assert ready.status_code == 200 and ready.json()["ready"] is True
        # once started, the worker's heap is settled: its start-up objects frozen out of the collector's way
        wait_for(lambda name=name: run.value(name, "payevents_worker_heap_frozen_objects") > 1000,
                 f"{name}'s heap settled")
    # a consumer is ready because it holds partitions: the lag series are per partition
    lags = {ls for (n, ls) in run.scrape("ledger") if n == "payevents_consumer_lag"}
    assert {dict(ls)["partition"] for ls in lags} == {str(p) for p in range(run.settings.partitions)}


def test_every_named_series_moves(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    from payevents.runtime import outbox
    from payevents.services import notifications, payments

    s = run.settings
    notifications.add_customer(s, "cus_obs", "Ada Observer", "ada@example.com", "en_US")
    before = {name: run.scrape(name) for name in WORKERS}

    def moved(name: str, metric: str, **labels: str) -> bool:
        want = set(labels.items())
        old = sum(v for (n, ls), v in before[name].items() if n == metric and want <= ls)
        return run.value(name, metric, **labels) > old

    # 1. payments flow: publish delay, published, batches and records applied in every consumer, e-mails
    payments.process_payments(s, [payments.PaymentSpec(customer_id="cus_obs", amount=f"{10 + i}.00", currency="EUR",
                                                       description=f"observed {i}") for i in range(10)])
    wait_for(lambda: moved("relay", "payevents_publish_delay_seconds_count"), "publish delay observed")
    wait_for(lambda: moved("relay", "payevents_relay_published_total"), "relay published")
    for name in SERVICES:
        wait_for(lambda name=name: moved(name, "payevents_consumer_records_total", outcome="applied")
                 or moved(name, "payevents_consumer_records_total", outcome="ignored"), f"{name} records")
        wait_for(lambda name=name: moved(name, "payevents_consumer_batch_duration_seconds_count"),
                 f"{name} batch latency")
    wait_for(lambda: moved("notifications", "payevents_notifications_emails_total", outcome="sent"), "e-mail sent")

    # 2. an SLA breach: an event whose outbox commit is 10 s old when the relay acknowledges it
    real_clock = outbox.clock
    monkeypatch.setattr(outbox, "clock", lambda: real_clock() - 10.0)
    payments.process_payments(s, [payments.PaymentSpec(customer_id="cus_obs", amount="7.00", currency="EUR",
                                                       description="late")])
    monkeypatch.setattr(outbox, "clock", real_clock)
    wait_for(lambda: moved("relay", "payevents_publish_sla_breaches_total"), "SLA breach counted")

    # 3. dead letters: a poison record, with a card number in it, reaches every consumer
    rc.send(s, [rc.record(s, f'{{"eventType": "PaymentProcessed", "note": "{CARD}"}}'.encode(), "PAY-POISON",
                          event_id="evt-poison-1")])
    for name in SERVICES:
        wait_for(lambda name=name: moved(name, "payevents_consumer_dead_lettered_total"), f"{name} dead letter")
        assert moved(name, "payevents_consumer_records_total", outcome="dead_lettered")

    # 4. pending outbox rows and consumer retries: the relay is paused while payments commit, then the
    #    payments and ledger databases are write-locked: the relay sends but cannot mark (pending > 0), the
    #    ledger cannot apply (a transient fault: rolled back and retried)
    relay_pid = run.views()["relay"].pid
    assert relay_pid is not None
    os.kill(relay_pid, signal.SIGSTOP)
    try:
        payments.process_payments(s, [payments.PaymentSpec(customer_id="cus_obs", amount="3.00", currency="EUR",
                                                           description=f"held {i}") for i in range(5)])
    finally:
        locks = [sqlite3.connect(s.data_dir / f"{db}.db", isolation_level=None) for db in ("payments", "ledger")]
        for conn in locks:
            conn.execute("BEGIN IMMEDIATE")
        os.kill(relay_pid, signal.SIGCONT)
    try:
        wait_for(lambda: run.value("relay", "payevents_outbox_pending") > 0, "pending outbox rows reported")
        wait_for(lambda: moved("ledger", "payevents_consumer_retries_total"), "ledger retried a batch")
        # records held back show as lag: the gauge is set at most once a ``lag_interval`` (1 s), on the steps that
        # wait out the backoff, so it follows the retry counter within a second rather than at once
        wait_for(lambda: run.value("ledger", "payevents_consumer_lag") > 0, "held records shown as lag")
    finally:
        for conn in locks:
            conn.execute("ROLLBACK")
            conn.close()
    wait_for(lambda: run.value("relay", "payevents_outbox_pending") == 0, "outbox drained after the lock")
    wait_for(lambda: run.value("ledger", "payevents_consumer_lag") == 0, "ledger caught up")

    # the status files tell the same story (what the dashboard shows)
    views = run.views()
    assert all(views[n].last_batch_at is not None for n in WORKERS)


def test_logs_are_json_lines_with_bound_fields_and_no_card_number(run: Run) -> None:
    lines = [json.loads(line) for line in run.err.read_text().splitlines() if line.startswith("{")]
    assert lines, "the workers log JSON lines"
    dead = [rec for rec in lines if rec.get("outcome") == "dead_lettered" and rec.get("eventId") == "evt-poison-1"]
    assert {rec["service"] for rec in dead} == set(SERVICES)
    for rec in dead:
        assert rec["topic"] == "payments.dev.events" and rec["paymentId"] == "PAY-POISON"
        assert isinstance(rec["partition"], int) and isinstance(rec["offset"], int)
    breach = [rec for rec in lines if rec.get("outcome") == "sla_breach"]
    assert breach and breach[0]["service"] == "relay" and breach[0]["eventId"]
    assert CARD not in run.err.read_text() and CARD not in run.out.read_text()


def test_a_killed_worker_is_seen_down_then_restarted_and_counted(run: Run) -> None:
    from fastapi.testclient import TestClient

    from payevents.faces.web.app import create_app

    s = run.settings
    client = TestClient(create_app(s))
    wait_for(lambda: client.get("/api/health").json()["status"] == "ok", "health ok with every worker alive")
    old = run.views()["ledger"]
    assert old.pid is not None and old.restarts == 0
    os.kill(old.pid, signal.SIGKILL)

    health = wait_for(lambda: (h := client.get("/api/health")).status_code == 503 and h, "health degraded")
    assert health.json()["status"] == "degraded"
    assert health.json()["checks"]["worker:ledger[0]"].startswith("down")
    page = client.get("/").text
    assert 'data-worker="ledger[0]" data-alive="no"' in page and "of 5 workers down" in page

    new = wait_for(lambda: (v := run.views()["ledger"]).alive and v.pid != old.pid and v, "ledger restarted")
    assert new.restarts == 1 and new.last_restart == "exited with code -9"
    wait_for(lambda: run.value("ledger", "payevents_worker_restarts_total") == 1, "restart counted in /metrics")
    assert "ledger[0] pid" in run.out.read_text() and "restart 1" in run.out.read_text()
    wait_for(lambda: client.get("/api/health").status_code == 200, "health ok again")
    page = client.get("/").text
    assert 'data-worker="ledger[0]" data-alive="yes"' in page and "last: exited with code -9" in page


def test_a_frozen_worker_is_seen_stuck_then_killed_and_restarted(run: Run) -> None:
    # SIGSTOP: the process is there, its pid alive, but nothing in it runs (a worker whose every thread waits on
    # something that never comes looks the same from outside); only a new process gets its work going again
    old = wait_for(lambda: (v := run.views()["invoices"]).alive and v.restarts == 0 and v, "invoices alive")
    assert old.pid is not None
    os.kill(old.pid, signal.SIGSTOP)
    try:
        down = wait_for(lambda: (v := run.views()["invoices"]).state == "restarting" and v, "invoices killed")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(old.pid, signal.SIGCONT)
    assert down.detail.startswith("killed: stuck (/livez has not answered for") and not down.alive
    assert f"invoices[0] pid {old.pid} is stuck" in run.out.read_text()
    new = wait_for(lambda: (v := run.views()["invoices"]).alive and v.pid != old.pid and v, "invoices restarted")
    assert new.restarts == 1 and new.last_restart == down.detail  # why, after the new process took over the slot
    listed = subprocess.run([CLI, "workers", "--env", "dev", "--data-dir", str(run.settings.data_dir)],
                            capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "400"})
    assert "1 (last: killed: stuck (/livez has not answered for" in listed.stdout, listed.stdout


def test_stopped_run_leaves_the_dashboard_degraded(run: Run) -> None:
    from fastapi.testclient import TestClient

    from payevents.faces.web.app import create_app

    run.proc.send_signal(signal.SIGTERM)
    assert run.proc.wait(timeout=DEADLINE) == 0
    views = run.views()
    assert {v.state for v in views.values()} == {"stopped"} and not any(v.alive for v in views.values())
    health = TestClient(create_app(run.settings)).get("/api/health")
    assert health.status_code == 503 and health.json()["status"] == "degraded"
    listed = subprocess.run([CLI, "workers", "--json", "--env", "dev", "--data-dir", str(run.settings.data_dir)],
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 1 and {w["state"] for w in json.loads(listed.stdout)} == {"stopped"}
