"""A worker may be killed at any instant (SIGKILL from an operator, the kernel's OOM killer), including the
instant it tells its supervisor it is up. Whatever state it dies in, the supervisor sees the death and goes on.

Seen in CI: a relay killed right after its start left the supervisor blocked for good (the readiness signal
was a multiprocessing Event, whose lock the dying worker held), and the worker beside it ran on unsupervised."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any

import pytest

from payevents.runtime import runner
from payevents.settings import Settings

DEADLINE = 60.0


def killed_while_reporting_itself_up(_settings: Settings, _name: str, _max_batch: int, ready: Any,
                                     *_rest: Any) -> None:
    """A worker's process killed in the middle of telling its supervisor it is up: at the second line that
    ``ready.set`` runs (whatever its implementation), or as it returns if it has fewer."""
    def in_set(_frame: FrameType, event: str, _arg: Any) -> Any:
        in_set.lines += 1 if event == "line" else 0  # type: ignore[attr-defined]
        if event == "return" or in_set.lines >= 2:  # type: ignore[attr-defined]
            os.kill(os.getpid(), signal.SIGKILL)
        return in_set

    in_set.lines = 0  # type: ignore[attr-defined]
    code = type(ready).set.__code__
    sys.settrace(lambda frame, event, _arg: in_set if event == "call" and frame.f_code is code else None)
    ready.set()
    time.sleep(60)  # not reached


def test_a_worker_killed_while_it_reports_itself_up_does_not_block_its_supervisor(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "_worker_main", killed_while_reporting_itself_up)
    exits: list[runner.WorkerExit] = []
    failed: list[BaseException] = []
    stop = threading.Event()

    def supervise() -> None:
        try:
            exits.extend(runner.run_workers(settings, ["relay", "ledger"], report=False,
                                            restart=False, stop=stop))
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=supervise, daemon=True)
    thread.start()
    thread.join(DEADLINE)
    if thread.is_alive():
        stop.set()  # a supervisor that is not blocked would end now
        thread.join(5)
    assert not thread.is_alive(), "the supervisor is blocked by a worker killed while reporting itself up"
    assert not failed, f"supervision ended: {failed[0]!r}"
    assert sorted((e.name, e.exitcode) for e in exits) == [("ledger", -9), ("relay", -9)]
