"""A full disk is an ordinary fault: every write of every process fails with ENOSPC for a while, then space
comes back. Supervision must go on through it (a worker killed meanwhile is restarted), and no file is
left half-written."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from supervising import DEADLINE, alive, supervising, wait_for

from payevents.runtime import runner
from payevents.runtime.workers import read_registry, registry_dir
from payevents.settings import Settings


def test_supervision_goes_on_when_the_supervisor_cannot_write_a_status_file(settings: Settings) -> None:
    stop = threading.Event()
    exits: list[runner.WorkerExit] = []
    failed: list[BaseException] = []

    def supervise() -> None:
        try:
            exits.extend(runner.run_workers(settings, ["relay"], report=False, stop=stop))
        except BaseException as exc:  # what the test reports: supervision ended by its own bookkeeping
            failed.append(exc)

    thread = threading.Thread(target=supervise, daemon=True)
    thread.start()
    try:
        first = wait_for(lambda: next((v for v in read_registry(settings) if v.name == "relay" and v.alive
                                       and v.pid), None), "the relay alive")
        # The supervisor's own status writes now fail as on a full disk: its temporary file's name is taken by
        # a directory (the worker's writes, under its own pid, still work).
        blocker = registry_dir(settings) / f".relay.0.json.{os.getpid()}.tmp"
        blocker.mkdir()
        os.kill(first.pid, signal.SIGKILL)
        again = wait_for(lambda: failed or next((v for v in read_registry(settings) if v.name == "relay"
                                                 and v.alive and v.pid != first.pid), None),
                         "the killed relay restarted")
        assert not failed, f"supervision ended: {failed[0]!r}"
        assert again.restarts == 1 and thread.is_alive()
    finally:
        stop.set()
        thread.join(DEADLINE)
    assert not failed and [(e.name, e.restarts) for e in exits] == [("relay", 1)]
    assert not [p for p in registry_dir(settings).iterdir() if p.name.endswith(".tmp") and p.is_file()]


def test_a_supervisor_that_fails_stops_its_workers_instead_of_leaving_them_unsupervised(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever ends the supervisor's watch (here a stand-in for a bug in its bookkeeping), its workers do not
    run on without it: they are stopped and the error propagates (``payevents run`` exits non-zero)."""
    def broken(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("a bug in the supervisor's bookkeeping")

    monkeypatch.setattr(runner, "update_slot", broken)
    failed: list[BaseException] = []

    def supervise() -> None:
        try:
            runner.run_workers(settings, ["relay", "ledger"], report=False)
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=supervise, daemon=True)
    thread.start()
    views = wait_for(lambda: (v := {w.name: w for w in read_registry(settings) if w.alive and w.pid})
                     and len(v) == 2 and v, "the relay and the ledger alive")
    os.kill(views["relay"].pid, signal.SIGKILL)
    thread.join(DEADLINE)
    assert not thread.is_alive() and [str(e) for e in failed] == ["a bug in the supervisor's bookkeeping"]
    assert not Path(f"/proc/{views['ledger'].pid}").exists(), "the ledger runs on without its supervisor"


def test_a_worker_killed_in_the_middle_of_writing_its_status_file_leaves_no_temporary_file(
        settings: Settings) -> None:
    """SIGKILL between a status file's temporary write and its rename leaves ``.{slot}.{pid}.tmp`` behind (CI met
    it once, the kill landing in a heartbeat's write): the supervisor removes a dead worker's partial files when
    it reaps the worker, and a new run those of processes gone before it (here: a supervisor killed with its
    worker)."""
    folder = registry_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    gone = subprocess.Popen(["true"])
    gone.wait()  # its pid no longer runs
    earlier = folder / f".relay.0.json.{gone.pid}.tmp"
    earlier.write_text('{"name": "re')
    with supervising(settings, ["relay"]) as exits:
        first = alive(settings, "relay")
        assert not earlier.exists(), "a partial status file of a process gone before this run is still there"
        (folder / f".relay.0.json.{first.pid}.tmp").write_text('{"name": "relay", "ins')  # as the kill left it
        assert first.pid is not None
        os.kill(first.pid, signal.SIGKILL)
        alive(settings, "relay", other_than=first.pid)
    assert [(e.name, e.restarts) for e in exits] == [("relay", 1)]
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]
