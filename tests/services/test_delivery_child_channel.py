"""What the delivery child sends its worker (log records, pass reports, beats) travels on a pipe. A child
killed part-way through a message — by the supervisor's stuck-worker kill, the OOM killer, an operator — must
not leave its worker waiting for the rest of it: before 2026-12-02 the worker's delivery thread then waited for
ever (it held the channel's write end itself, so no end of file ever came), and no e-mail went out again."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Any

import pytest

from payevents.services.notifications import delivery
from payevents.settings import Settings


def dies_half_way_through_a_message(_settings: Settings, _stop: Any, events: Any, *_rest: Any) -> None:
    """A delivery child that sends one log record whole, then is killed half-way through writing a large one."""
    from multiprocessing import connection

    send = connection.Connection._send  # type: ignore[attr-defined]

    def half_then_die(self: Any, buf: Any, *args: Any) -> None:
        if len(buf) > 100_000:
            send(self, bytes(memoryview(buf)[: len(buf) // 2]))
            os.kill(os.getpid(), signal.SIGKILL)
        send(self, buf, *args)

    connection.Connection._send = half_then_die  # type: ignore[attr-defined]
    events.put(logging.makeLogRecord({"name": "payevents.notifications", "msg": "sent whole before the kill",
                                      "levelno": logging.WARNING, "levelname": "WARNING"}))
    events.put("x" * 1_000_000)
    time.sleep(60)  # not reached


def test_a_delivery_child_killed_half_way_through_a_message_does_not_block_its_worker(
        settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(delivery, "_delivery_child", dies_half_way_through_a_message)
    stop = threading.Event()
    thread = threading.Thread(target=delivery.run_delivery_process, args=(settings, stop),
                              kwargs={"interval_s": 0.1}, daemon=True)
    with caplog.at_level(logging.WARNING):
        thread.start()
        deadline = time.monotonic() + 60
        while "restarting it" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        thread.join(20)
    assert not thread.is_alive(), "the worker's delivery thread waits for the rest of a dead child's message"
    assert "sent whole before the kill" in caplog.text
    assert "notification delivery process exited (code -9); restarting it" in caplog.text
