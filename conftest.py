"""Fixtures for every test folder (tests/ and examples/): one Apache Kafka per test session.

In CI (CI=true) a broker that cannot start fails the test instead of skipping it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from payevents.localkafka import LocalKafka, fresh_channel
from payevents.runtime import procs
from payevents.runtime.procs import proc_stat

sys.path.insert(0, str(Path(__file__).parent / "tests"))  # the tests' helpers (pytest puts it there too, later)
from ci_rule import missing


@pytest.fixture(scope="session")
def kafka_session() -> Iterator[LocalKafka]:
    """One Apache Kafka (the release pinned in tools/kafka/pom.xml, single-node KRaft, free loopback ports,
    a temporary data dir) for the whole test session."""
    try:
        broker = LocalKafka().start()
    except Exception as exc:
        missing(f"Apache Kafka ({exc})")
        raise
    yield broker
    broker.stop()


@pytest.fixture
def kafka_broker(kafka_session: LocalKafka) -> LocalKafka:
    """The session's broker with a fresh channel: the test starts with no ``payments.{env}.events`` (nor its
    dead-letter channel) of any env, so it sees only the records it produces (group ids are per test too)."""
    fresh_channel(kafka_session.bootstrap)
    return kafka_session


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A test that failed half-way may leave a process running (a worker whose supervisor it lost): at exit
    Python would wait for it for ever (multiprocessing joins its children) and the test run would never end. What
    is left once every fixture is torn down is killed here and named."""
    session.config.stash[_EXIT_STATUS] = int(exitstatus)
    left = {}
    server = procs.server_pid()  # the workers' fork server ends by itself at exit, once its workers are gone
    for pid in procs.descendants(os.getpid()):
        if pid == server:
            continue
        stat = proc_stat(pid)
        with contextlib.suppress(OSError):
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            # multiprocessing's own resource tracker ends by itself at exit, and cleans up after the rest
            if stat is not None and stat[0] != "Z" and "multiprocessing.resource_tracker" not in command:
                left[pid] = command[:160]
    if not left:
        return
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.ensure_newline()
        reporter.write_line(f"killed {len(left)} process(es) the tests left running:", red=True)
        for pid, command in left.items():
            reporter.write_line(f"  {pid} {command}", red=True)


_EXIT_STATUS = pytest.StashKey[int]()


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Python also waits at exit for every thread that is not a daemon: one a failed test left running (a
    supervisor it could not stop) would hold the test run open for ever. Those still running 10 s after the last
    hook are named, and the process exits with the session's status without waiting for them."""
    stray = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    deadline = time.monotonic() + 10
    for thread in stray:
        thread.join(max(0.0, deadline - time.monotonic()))
    if stray := [t for t in stray if t.is_alive()]:
        sys.stderr.write(f"threads the tests left running, not waited for: {', '.join(t.name for t in stray)}\n")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(config.stash.get(_EXIT_STATUS, 1))
