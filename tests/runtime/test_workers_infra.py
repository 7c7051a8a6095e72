"""Unreachable infrastructure: one clear line and a non-zero exit from a command; a worker waits and retries.
And the log formats (JSON lines, text) with bound fields and card numbers masked."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from supervising import CLI

from payevents.runtime import logs
from payevents.runtime.backoff import Backoff
from payevents.runtime.workers import read_registry
from payevents.settings import Settings

NO_DATABASE = "postgresql+psycopg://postgres@127.0.0.1:1/test"
NO_BROKER = "kafka://127.0.0.1:1"
CARD = "4111 1111 1111 1111"


def _cli(*args: str, data_dir: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args, "--env", "dev",
                           "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=timeout)


def test_unreachable_database_is_one_line_and_a_non_zero_exit(tmp_path: Path) -> None:
    out = _cli("payments", "list", "--database-url", NO_DATABASE, data_dir=tmp_path)
    assert out.returncode == 3, out.stderr
    assert "Traceback" not in out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("error: database unreachable:") and "127.0.0.1" in line


def test_unreachable_broker_is_one_line_and_a_non_zero_exit(tmp_path: Path) -> None:
    out = _cli("topics", "describe", "--broker", NO_BROKER, data_dir=tmp_path)
    assert out.returncode == 3, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("error: broker unreachable:")


@pytest.mark.parametrize("flag", [["--database-url", NO_DATABASE], ["--broker", NO_BROKER]],
                         ids=["database", "broker"])
def test_a_worker_waits_for_its_database_or_broker_instead_of_exiting(tmp_path: Path, flag: list[str]) -> None:
    cmd = [CLI, "run", "ledger", *flag, "--env", "dev",
           "--data-dir", str(tmp_path), "--log-format", "json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    settings = Settings(env="dev", data_dir=tmp_path)
    try:
        deadline = time.monotonic() + 120
        view = None
        while time.monotonic() < deadline:
            views = read_registry(settings)
            if views and views[0].state == "waiting" and views[0].alive:
                view = views[0]
                break
            assert proc.poll() is None, "payevents run exited instead of waiting"
            time.sleep(0.2)
        assert view is not None, "the worker never reported waiting"
        assert "unreachable" in view.detail and view.restarts == 0 and not view.ready
        from fastapi.testclient import TestClient

        from payevents.faces.web.app import create_app

        app_settings = Settings(env="dev", data_dir=tmp_path, database_url=NO_DATABASE if "--database-url" in flag
                                else None, broker=NO_BROKER if "--broker" in flag else "embedded")
        health = TestClient(create_app(app_settings)).get("/api/health")
        assert health.status_code == 503 and health.json()["status"] == "degraded"
        assert health.json()["checks"]["worker:ledger[0]"].startswith("degraded: waiting")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            _out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    waits = [json.loads(line) for line in err.splitlines() if line.startswith("{") and "at start-up" in line]
    assert waits and waits[0]["level"] == "WARNING" and waits[0]["service"] == "ledger"


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[Path]:
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    path = tmp_path / "log.txt"
    yield path
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    for h in saved:
        root.addHandler(h)
    root.setLevel(level)
    logs.bind_service(None)


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_log_lines_bind_fields_and_never_carry_a_card_number(log_file: Path, fmt: str) -> None:
    logs.configure(fmt, log_file=str(log_file), service="ledger", force=True)
    log = logging.getLogger("payevents.test")
    log.warning("rejected %s", f"card {CARD}", extra={"eventId": "evt-1", "paymentId": "PAY-1", "topic": "t",
                                                     "partition": 2, "offset": 7, "outcome": "dead_lettered",
                                                     "correlationId": f"c-{CARD.replace(' ', '')}"})
    try:
        raise ValueError(f"boom {CARD}")
    except ValueError:
        log.exception("failed")
    text = log_file.read_text()
    assert CARD not in text and CARD.replace(" ", "") not in text and "1111" in text
    if fmt == "json":
        first, second = (json.loads(line) for line in text.splitlines() if line.startswith("{"))
        assert first["service"] == "ledger" and first["eventId"] == "evt-1" and first["paymentId"] == "PAY-1"
        assert (first["topic"], first["partition"], first["offset"], first["outcome"]) == ("t", 2, 7, "dead_lettered")
        assert first["message"] == "rejected card **** **** **** 1111" and first["level"] == "WARNING"
        assert "ValueError" in second["exc_info"]
    else:
        first = text.splitlines()[0]
        assert "rejected card **** **** **** 1111" in first
        assert "eventId=evt-1" in first and "partition=2" in first and "outcome=dead_lettered" in first


def test_backoff_doubles_to_its_cap_and_resets() -> None:
    b = Backoff(initial=1.0, maximum=8.0, jitter=False)
    assert [b.next() for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    b.reset()
    assert b.next() == 1.0
    jittered = Backoff(initial=1.0, maximum=8.0)
    assert all(0.5 * d <= jittered.next() <= d for d in (1.0, 2.0, 4.0, 8.0))
