"""How payevents starts its worker processes: forked from a fork server that imported payevents once.

A spawned worker (a fresh interpreter) imports payevents itself — SQLAlchemy, the contracts, its
service — about a third of a second of CPU each, before it reads a record: the four services of a drain paid it
four times over on two cores, and each restart paid it again. ``payevents run`` starts its workers from a fork
server instead (multiprocessing's ``forkserver``): one clean process, without threads, started with the first
worker, that imports :data:`PRELOAD` once and forks each worker from itself; a worker then starts with those
modules in place (shared with its siblings until written to) and spends its own CPU on its migrations and its
group join only.

What a worker inherits is what a spawned one got: its supervisor's environment, working directory and
``sys.path`` as they are when it is started (:func:`start`; the fork server keeps those it was started with),
fresh module state (the fork server only imports), a reseeded ``random`` (its at-fork hook). Its parent is the
fork server, not the supervisor, so a worker knows its supervisor is gone by the supervisor's pid and start time
(:class:`ProcessIdentity`), not by its parent pid.

``PAYEVENTS_WORKER_START`` = ``forkserver`` (the default where the platform has it) or ``spawn`` (as before
2026-12-04; the benchmarks' baseline of this).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.forkserver
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing import resource_tracker
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from payevents.errors import ConfigError

if TYPE_CHECKING:
    from payevents.settings import Settings

log = logging.getLogger("payevents.procs")

START_ENV: Final = "PAYEVENTS_WORKER_START"
START_METHODS: Final = ("forkserver", "spawn")
#: what the fork server imports before it forks a worker: everything a relay or a consumer worker of the four
#: services imports to start (a module missing here is imported by each worker, as before) — with the transport
#: and the database driver of the run (:func:`preload`)
PRELOAD: Final = (
    "payevents.runtime.runner",
    "payevents.runtime.consumer",
    "payevents.runtime.relay",
    "payevents.services.ledger.service",
    "payevents.services.invoices.service",
    "payevents.services.analytics.service",
    "payevents.services.notifications.service",
    "payevents.services.notifications.delivery",
)


#: imported last: the server's heap, collected once and frozen before its first fork (runtime.preloaded)
FREEZE: Final = "payevents.runtime.preloaded"


def preload(settings: Settings | None) -> list[str]:
    """:data:`PRELOAD`, and the run's transport and database driver (on PostgreSQL psycopg and SQLAlchemy's
    dialect: ~80 ms of CPU a worker otherwise), then :data:`FREEZE`."""
    if settings is None:
        return [*PRELOAD, FREEZE]
    transport = "payevents.transport.kafka" if settings.is_kafka else "payevents.transport.embedded"
    postgresql = settings.database_url_for("ledger").startswith("postgresql")  # one URL for every service
    drivers = ["psycopg", "sqlalchemy.dialects.postgresql.psycopg"] if postgresql else \
        ["sqlalchemy.dialects.sqlite.pysqlite"]
    return [*PRELOAD, transport, *drivers, FREEZE]


def start_method() -> str:
    """``PAYEVENTS_WORKER_START``, checked: ``forkserver`` (default where available) or ``spawn``."""
    raw = os.environ.get(START_ENV, "").strip()
    if not raw:
        return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    if raw not in START_METHODS or raw not in multiprocessing.get_all_start_methods():
        have = [m for m in START_METHODS if m in multiprocessing.get_all_start_methods()]
        raise ConfigError(f"{START_ENV}: {raw!r} must be {' or '.join(have)}")
    return raw


def context(method: str | None = None, settings: Settings | None = None) -> BaseContext:
    """The multiprocessing context workers are started with (:func:`start_method` unless ``method``); a fork
    server that is not running yet will import :func:`preload` of ``settings``."""
    method = method or start_method()
    ctx = multiprocessing.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(preload(settings))  # type: ignore[attr-defined]
    return ctx


def child_context() -> BaseContext:
    """The context for a worker's own child processes (the notifications worker's delivery processes): the fork
    server this worker was forked from, where it was (the child then starts with the delivery's modules imported,
    and its parent is the fork server too), else ``spawn``."""
    return multiprocessing.get_context("forkserver" if _inherited_server else "spawn")  # the server's imports are done


#: this process was forked from a fork server it can ask for processes of its own (:func:`_reuse_server`)
_inherited_server = False


def start(ctx: BaseContext, target: Callable[..., Any], args: Sequence[Any], *, name: str,
          daemon: bool | None = None) -> BaseProcess:
    """Start ``target(*args)`` in a new process of ``ctx``, with this process's environment and working directory
    of now (a forked worker would otherwise have the fork server's)."""
    method = ctx.get_start_method()
    proc = ctx.Process(target=_entry, name=name, daemon=daemon,  # type: ignore[attr-defined]
                       args=(method, dict(os.environ), os.getcwd(), list(sys.path), target, tuple(args)))
    try:
        proc.start()
    except OSError as exc:
        if method != "forkserver":
            raise
        # the fork server is gone (killed: a worker's cannot be started again from the worker) or cannot be
        # reached: this process is spawned, as before, and the next start tries a (new) server again
        log.warning("%s: the fork server cannot start it (%s); spawning it", name, exc)
        return start(multiprocessing.get_context("spawn"), target, args, name=name, daemon=daemon)
    return proc  # type: ignore[no-any-return]


def _entry(method: str, environ: dict[str, str], cwd: str, path: list[str], target: Callable[..., Any],
           args: tuple[Any, ...]) -> None:
    if os.environ != environ:
        os.environ.clear()
        os.environ.update(environ)
    with contextlib.suppress(OSError):  # gone since: the worker starts where the fork server is
        os.chdir(cwd)
    sys.path[:] = path  # e.g. a service named by its module (``--service mymodule:SERVICE``) found as spawned
    if method == "forkserver":
        _reuse_server()
    target(*args)


def _reuse_server() -> None:
    """In a process forked from a fork server: let it ask that server for processes of its own. The server's
    address and its "alive" pipe come with the fork; multiprocessing would still start a second server (it
    knows the first by the pid of its own child only), so its check is replaced by the resource tracker's alone.
    Where this Python's fork server is not built so, nothing changes (:func:`child_context` spawns)."""
    global _inherited_server
    server = multiprocessing.forkserver._forkserver  # type: ignore[attr-defined]
    if (getattr(server, "_forkserver_pid", 0) is None and getattr(server, "_forkserver_address", None)
            and getattr(server, "_forkserver_alive_fd", None) is not None):
        server.ensure_running = resource_tracker.ensure_running  # type: ignore[method-assign]
        _inherited_server = True


def proc_stat(pid: int | str) -> list[str] | None:
    """The fields of ``/proc/{pid}/stat`` after the command name — state, ppid, ... (``proc(5)``, numbered from
    3) — or None when the process is gone or this is not Linux. The name, in parentheses, may hold spaces and
    parentheses itself: the fields start after its last ``)``."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields or None


def pid_alive(pid: int) -> bool:
    """The process exists and is not a zombie (on this host)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = proc_stat(pid)
    return fields is None or fields[0] not in ("Z", "X")


def _children(pids: set[int]) -> list[int]:
    """The processes whose parent is one of ``pids`` (Linux ``/proc``; none elsewhere)."""
    out = []
    for proc in Path("/proc").glob("[0-9]*"):
        fields = proc_stat(proc.name)
        if fields is not None and len(fields) > 1 and int(fields[1]) in pids:
            out.append(int(proc.name))
    return out


def descendants(pid: int) -> list[int]:
    """Every process under ``pid`` (Linux ``/proc``), each level after the one above it."""
    tree: list[int] = []
    level = {pid}
    while level := set(_children(level)) - set(tree) - {pid}:
        tree += sorted(level)
    return tree


def server_pid() -> int | None:
    """The pid of this process's fork server, while one runs."""
    return multiprocessing.forkserver._forkserver._forkserver_pid  # type: ignore[attr-defined,no-any-return]


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far; 0.0 when it is gone or this is not Linux."""
    return live_cpu_s(pid) or 0.0


def live_cpu_s(pid: int) -> float | None:
    """:func:`cpu_s`, but None when the process is gone (or this is not Linux): from one read of its stat."""
    fields = proc_stat(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK") if fields else None  # utime, stime


def server_cpu_s() -> float:
    """CPU seconds the running fork server has used (its imports, its forks): 0.0 without one. For the
    benchmarks, which count it with the workers'."""
    pid = server_pid()
    return cpu_s(pid) if pid is not None else 0.0


def stop_server() -> None:
    """Stop this process's fork server (the next worker starts a new one, which imports :data:`PRELOAD` again):
    a benchmark run that times its workers from their start counts the fork server's start too. Processes of it
    still running are killed first (the server ends once every process it forked has)."""
    pid = server_pid()
    if pid is None:
        return
    for left in descendants(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(left, signal.SIGKILL)
    with contextlib.suppress(OSError):
        multiprocessing.forkserver._forkserver._stop()  # type: ignore[attr-defined]


@dataclass(frozen=True)
class ProcessIdentity:
    """A process by pid and start time (``/proc/{pid}/stat`` field 22), so that a pid reused by another process
    is not taken for it; where there is no ``/proc``, by pid alone."""

    pid: int
    started: str | None

    @classmethod
    def of(cls, pid: int) -> ProcessIdentity:
        fields = proc_stat(pid)
        return cls(pid, fields[19] if fields and len(fields) > 19 else None)

    def alive(self) -> bool:
        if self.started is None:
            return pid_alive(self.pid)
        fields = proc_stat(self.pid)  # one reading: there, not a zombie, and the same process
        return fields is not None and fields[0] not in ("Z", "X") and len(fields) > 19 and fields[19] == self.started


class Watched:
    """A started worker as its supervisor sees it: its exit code comes with the process's sentinel, and for one
    forked from the fork server that goes through the server — killed, the server takes every worker's sentinel
    with it, and multiprocessing then reports each of them exited (255) while they still run. A code of 255 from a
    worker still running under its pid and start time is therefore no exit (:attr:`exitcode` None), and the
    worker is watched by its pid until it is gone."""

    def __init__(self, proc: BaseProcess) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.identity = ProcessIdentity.of(proc.pid) if proc.pid is not None else None

    @property
    def exitcode(self) -> int | None:
        code = self.proc.exitcode
        if code == _SENTINEL_LOST and self.identity is not None and self.identity.alive():
            return None  # its fork server is gone, it is not
        return code

    def join(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        self.proc.join(timeout)
        while self.exitcode is None and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.05)  # only where the sentinel was lost: by pid until it is gone

    def kill(self) -> None:
        if self.pid is not None and self.exitcode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)


#: what multiprocessing reports for a process of a fork server that is gone (its exit status lost)
_SENTINEL_LOST: Final = 255
