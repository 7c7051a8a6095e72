"""Workers forked from a fork server that imported payevents once (runtime.procs): they start as spawned ones did
— the supervisor's environment, working directory and sys.path of the moment — and stop when their supervisor is
gone, though their parent is the fork server."""

from __future__ import annotations

import gc
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from supervising import CLI, DEADLINE, alive, cli_env, parent_of, supervising, wait_for

from payevents.errors import ConfigError
from payevents.runtime import procs, runner
from payevents.runtime.procs import ProcessIdentity, proc_stat
from payevents.runtime.workers import read_registry
from payevents.settings import Settings


def _parent(pid: int) -> int:
    ppid = parent_of(pid)
    assert ppid is not None, f"pid {pid} is gone"
    return ppid


def _cmdline(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")


def _what_i_see(out: Any, name: str) -> None:
    out.put((os.environ.get(name), os.getcwd(), list(sys.path), "sqlalchemy" in sys.modules, gc.get_freeze_count()))


def test_a_worker_started_after_the_fork_server_sees_the_environment_of_its_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fork server keeps the environment, directory and sys.path it was started with; a worker gets its
    starter's of the moment (as a spawned one did), with the fork server's imports already done."""
    ctx = procs.context("forkserver")
    out = ctx.Queue()
    first = procs.start(ctx, _what_i_see, (out, "PAYEVENTS_TEST_PROCS"), name="first")  # starts the fork server
    env, _cwd, _path, preloaded, frozen = out.get(timeout=DEADLINE)
    first.join(DEADLINE)
    # the server's imports came collected and frozen: the worker's own collections do not visit them again
    assert env is None and preloaded and frozen > 20_000
    monkeypatch.setenv("PAYEVENTS_TEST_PROCS", "after the fork server")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path / "services"))
    second = procs.start(ctx, _what_i_see, (out, "PAYEVENTS_TEST_PROCS"), name="second")
    env, cwd, path, preloaded, _frozen = out.get(timeout=DEADLINE)
    second.join(DEADLINE)
    assert env == "after the fork server" and Path(cwd) == tmp_path and path[0] == str(tmp_path / "services")
    assert preloaded, "the worker imported nothing before it ran: not forked from the preloaded server"
    assert second.exitcode == 0 and _parent(procs.server_pid() or 0) == os.getpid()


def test_payevents_run_forks_its_workers_from_a_fork_server_that_imported_the_services(settings: Settings) -> None:
    procs.stop_server()  # one an earlier test started (this session's): run_workers starts one for its settings
    with supervising(settings, ["ledger"]) as exits:
        worker = alive(settings, "ledger")
        assert worker.pid is not None
        server = _parent(worker.pid)
        assert server != os.getpid() and server == procs.server_pid()
        assert b"multiprocessing.forkserver" in _cmdline(server)
        assert b"payevents.services.ledger.service" in _cmdline(server)
        assert b"payevents.transport.embedded" in _cmdline(server)
    assert [(e.name, e.exitcode) for e in exits] == [("ledger", 0)]


def test_payevents_worker_start_spawn_spawns_them_and_a_bad_value_is_refused(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(procs.START_ENV, "fork")
    with pytest.raises(ConfigError, match=r"PAYEVENTS_WORKER_START: 'fork' must be forkserver or spawn"):
        runner.run_workers(settings, ["ledger"], report=False)
    monkeypatch.setenv(procs.START_ENV, "spawn")
    with supervising(settings, ["ledger"]):
        worker = alive(settings, "ledger")
        assert worker.pid is not None and _parent(worker.pid) == os.getpid()


def test_workers_stop_when_their_supervisor_is_killed_though_their_parent_is_the_fork_server(
        tmp_path: Path) -> None:
    env = cli_env(tmp_path / "data")
    supervisor = subprocess.Popen([CLI, "run", "ledger", "invoices"], env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
    try:
        settings = Settings.from_env(env)
        views = wait_for(lambda: (v := [w for w in read_registry(settings) if w.alive and w.pid]) and len(v) == 2
                         and v, "both workers alive")
        pids = [v.pid for v in views if v.pid is not None]
        server = _parent(pids[0])
        assert server != supervisor.pid and _parent(server) == supervisor.pid
        supervisor.send_signal(signal.SIGKILL)
        supervisor.wait(DEADLINE)
        wait_for(lambda: not any(proc_stat(p) and proc_stat(p)[0] not in "ZX" for p in [*pids, server]),  # type: ignore[index]
                 "the workers and the fork server gone")
    finally:
        if supervisor.poll() is None:
            supervisor.kill()


def test_a_process_is_known_by_its_pid_and_start_time() -> None:
    me = ProcessIdentity.of(os.getpid())
    assert me.alive() and me.started is not None
    assert not ProcessIdentity(os.getpid(), str(int(me.started) + 1)).alive(), "another process under my pid"
    gone = subprocess.Popen(["true"])
    gone.wait()
    assert not ProcessIdentity.of(gone.pid).alive()
    assert multiprocessing.current_process().name == "MainProcess"


def test_the_delivery_process_is_forked_from_the_same_server_and_ends_with_its_worker(settings: Settings) -> None:
    """The notifications worker asks its fork server for its delivery process (its imports done there too): a
    sibling of the worker in the process tree, listed in the worker's status file for the supervisor, and gone
    on its own once the worker is killed."""
    from payevents.runtime.workers import children_of

    with supervising(settings, ["notifications"]) as exits:
        worker = alive(settings, "notifications")
        assert worker.pid is not None
        (child,) = wait_for(lambda: children_of(settings, "notifications", 0), "its delivery process listed")
        assert _parent(child.pid) == _parent(worker.pid) == procs.server_pid()
        assert child.pid not in procs.descendants(worker.pid)
        os.kill(worker.pid, signal.SIGKILL)
        wait_for(lambda: not child.alive(), "the delivery process gone with its worker")
        wait_for(lambda: (v := children_of(settings, "notifications", 0)) and v[0].pid != child.pid,
                 "the restarted worker's own delivery process")
    assert [(e.name, e.restarts) for e in exits] == [("notifications", 1)]


def test_the_fork_server_also_imports_the_runs_transport_and_database_driver() -> None:
    kafka_pg = Settings.from_env({"PAYEVENTS_ENV": "dev", "PAYEVENTS_BROKER": "kafka://127.0.0.1:9092",
                                  "PAYEVENTS_DATABASE_URL": "postgresql+psycopg://u@127.0.0.1/db"})
    embedded = Settings.from_env({"PAYEVENTS_ENV": "dev"})
    assert procs.preload(kafka_pg)[-4:] == ["payevents.transport.kafka", "psycopg",
                                            "sqlalchemy.dialects.postgresql.psycopg", procs.FREEZE]
    assert procs.preload(embedded)[-3:] == ["payevents.transport.embedded", "sqlalchemy.dialects.sqlite.pysqlite",
                                            procs.FREEZE]
    for name in [*procs.preload(kafka_pg), *procs.preload(embedded)]:  # each one there to be imported
        if name != procs.FREEZE:  # (it would freeze this test process's heap)
            __import__(name)


def test_a_killed_fork_server_is_not_taken_for_its_workers_deaths(settings: Settings) -> None:
    """multiprocessing reports every process of a fork server that is gone as exited (255): the supervisor must not
    start a second worker beside one that still runs, and a worker that dies afterwards is still seen and
    restarted (from a new server)."""
    with supervising(settings, ["ledger"]) as exits:
        first = alive(settings, "ledger")
        assert first.pid is not None
        server = _parent(first.pid)
        os.kill(server, signal.SIGKILL)
        wait_for(lambda: not procs.pid_alive(server), "the fork server gone")
        time.sleep(2.0)  # twenty turns of the supervisor's loop
        (view,) = read_registry(settings)
        assert view.pid == first.pid and view.alive and view.restarts == 0, view
        os.kill(first.pid, signal.SIGKILL)
        again = alive(settings, "ledger", other_than=first.pid)
        assert again.pid is not None and _parent(again.pid) not in (server, os.getpid())
        assert _parent(again.pid) == procs.server_pid()
    assert [(e.name, e.restarts) for e in exits] == [("ledger", 1)]


def test_a_process_the_fork_server_cannot_start_is_spawned(monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    import multiprocessing.forkserver

    def refused(_fds: Any) -> Any:
        raise ConnectionRefusedError(111, "Connection refused")

    ctx = procs.context("forkserver")
    monkeypatch.setattr(multiprocessing.forkserver, "connect_to_new_process", refused)
    out = multiprocessing.get_context("spawn").Queue()
    proc = procs.start(ctx, _what_i_see, (out, "PAYEVENTS_TEST_PROCS"), name="refused")
    out.get(timeout=DEADLINE)
    proc.join(DEADLINE)
    assert proc.exitcode == 0 and proc._start_method == "spawn"  # type: ignore[attr-defined]
    assert "refused: the fork server cannot start it" in caplog.text
