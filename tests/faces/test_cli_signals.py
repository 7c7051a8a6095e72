"""SIGTERM ends a command through its clean-up, as Ctrl-C does (``faces.cli.main``): a ``kill``, a CI's timeout
or an orchestrator stopping `payevents kafka up` (or a soak, or a benchmark on Kafka) while it starts its brokers
left the brokers running — their own session, so nothing else stopped them — holding their ports and memory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ci_rule import missing
from payevents.localkafka import free_port, kafka_libs


def _brokers(data: Path) -> list[int]:
    """The Kafka broker processes (``kafka.Kafka``) whose command line names ``data``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                args = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"kafka.Kafka" in args and any(str(data).encode() in a for a in args):
                found.append(int(entry.name))
    return found


def test_sigterm_while_kafka_up_starts_its_broker_stops_the_broker(tmp_path: Path) -> None:
    try:
        kafka_libs()
    except Exception as exc:
        missing(f"Apache Kafka's libraries ({exc})")
    data = tmp_path / "kdata"
    cli = Path(sys.executable).with_name("payevents")
    proc = subprocess.Popen([cli, "kafka", "up", "--port", str(free_port()), "--data-dir", str(data)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        broker: list[int] = []
        while not broker:  # the broker's JVM runs (formatted, starting): the command is inside LocalKafka.start
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the broker never started"
            broker = _brokers(data)
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 128 + signal.SIGTERM, (out, err)
        deadline = time.monotonic() + 30
        while _brokers(data):
            assert time.monotonic() < deadline, "the broker outlived the command that started it"
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in _brokers(data):  # the old code's orphan, so that it does not outlive the test
            os.kill(pid, signal.SIGKILL)
