"""The servers' CPU the benchmarks report (``payevents.bench.servers``): processes that end during a run, processes
born during it, and PostgreSQL backends counted by the process whose connections they serve."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from payevents.bench import servers
from payevents.bench.servers import ServerCpu, backends_cpu, server_pids, track_backends
from payevents.runtime.procs import cpu_s

#: a child that burns CPU until it has used ``s`` seconds of it, then waits for its stdin to close
_BURN = ("import sys, time\ns = float(sys.argv[1])\nwhile time.process_time() < s:\n    pass\n"
         "print('done', flush=True)\nsys.stdin.read()\n")


def _burner(seconds: float) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", _BURN, str(seconds)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)


def _burnt(p: subprocess.Popen[str]) -> None:
    assert p.stdout is not None and p.stdout.readline().strip() == "done"


def _end(p: subprocess.Popen[str]) -> None:
    assert p.stdin is not None
    p.stdin.close()
    p.wait(10)


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for p in started:
        p.kill()
        p.wait(10)


def test_a_server_process_gone_before_the_end_does_not_count_against_the_run(
        procs: list[subprocess.Popen[str]]) -> None:
    """The suites read the processes listed at the start, again at the end: one gone by then read as 0 CPU, and
    its CPU at the start was subtracted from the run's (a PostgreSQL backend whose worker closed its connection)."""
    stays, goes = _burner(0.05), _burner(0.3)
    procs += [stays, goes]
    _burnt(stays)
    _burnt(goes)
    assert cpu_s(goes.pid) >= 0.2
    account = ServerCpu(lambda: {"postgres": [p.pid for p in procs if p.poll() is None]})
    _end(goes)
    took = account.since_start()
    assert 0.0 <= took["postgres"] < 0.1  # the one that stayed: idle since the start


def test_a_server_process_born_during_the_run_counts_in_full(procs: list[subprocess.Popen[str]]) -> None:
    """A backend a connection opened during the run (the ledger's write-behind, the writer's) was not counted."""
    account = ServerCpu(lambda: {"postgres": [p.pid for p in procs]})
    born = _burner(0.2)
    procs.append(born)
    _burnt(born)
    assert account.since_start()["postgres"] >= 0.15


def test_reported_backends_are_added_once(procs: list[subprocess.Popen[str]]) -> None:
    """A worker reports its own backends' CPU; where one is still alive at the end it is not read again."""
    alive = _burner(0.2)
    procs.append(alive)
    _burnt(alive)
    account = ServerCpu(lambda: {"postgres": [alive.pid]})
    assert account.since_start({alive.pid: 1.5}) == {"postgres": 1.5}
    assert account.since_start({4_000_000: 0.25})["postgres"] == pytest.approx(0.25, abs=0.05)


def test_a_process_counts_the_backends_of_its_own_connections(pg_available: str) -> None:
    """The backend of a connection this process opens (after ``track_backends``) is found with its CPU, and it is
    one of the host's postgres processes."""
    track_backends()
    engine = sa.create_engine(pg_available)
    try:
        with engine.connect() as conn:
            pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
            assert pid in servers._backends
            assert pid in server_pids(postgresql=True)["postgres"]
            before = backends_cpu()
            conn.exec_driver_sql("SELECT count(*) FROM generate_series(1, 3000000) AS g WHERE g %% 7 = 3").scalar_one()
            used = backends_cpu(since=before)
            assert used[pid] > 0.0
            assert used[pid] <= cpu_s(pid)
    finally:
        engine.dispose()
