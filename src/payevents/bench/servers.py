"""The CPU of the servers a benchmark run uses besides its own processes: the Kafka broker(s) and PostgreSQL.

A server process's CPU is read from ``/proc`` (user + system) when the run starts and when it ends. PostgreSQL
serves each connection with a backend process of its own that ends with the connection, and its CPU with it: a
worker that closed its connections before the run's end took its backends' CPU out of ``/proc``. Until
2026-12-05 the suites read only the postgres processes listed at the start, and a backend gone by the end
counted its CPU at the start *against* the run, while the backends opened during the run (the ledger's
write-behind connections, the writer's) were not counted at all: the end-to-end and scale-out suites showed
PostgreSQL at a sixth of its CPU.

Now each worker process counts the backends serving its own connections (:func:`track_backends`, then
:func:`backends_cpu` before it closes them) and reports them by pid, and the run's account (:class:`ServerCpu`)
takes every server process alive at the end — from the start, or from its birth when it was born during the
run — but the pids the workers reported, whose CPU it adds instead. A backend opened and closed again within the
run by a process that does not report it (none of the suites' processes does that) is still not counted.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from payevents.runtime.procs import live_cpu_s

if TYPE_CHECKING:
    from payevents.bench.core import BenchEnv

#: the processes of a server by kind (``"broker"``, ``"postgres"``)
Lister = Callable[[], Mapping[str, Iterable[int]]]

#: the backend pids of this process's PostgreSQL connections, recorded as each opens (:func:`track_backends`)
_backends: set[int] = set()
_tracking: list[bool] = []


def server_pids(broker: Any = None, postgresql: bool = False) -> dict[str, list[int]]:
    """The processes serving a run besides its own: the pids of the broker's nodes (a ``LocalKafka``), and with
    ``postgresql`` every postgres process of this host (a shared server: other clients' work counts too)."""
    out: dict[str, list[int]] = {}
    if broker is not None:
        out["broker"] = [n.proc.pid for n in broker.nodes if n.proc is not None]
    if postgresql:
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/comm") as f:
                        if f.read().strip() in ("postgres", "postmaster"):
                            pids.append(int(entry))
                except OSError:
                    continue
        out["postgres"] = pids
    return out


class ServerCpu:
    """The CPU seconds the server processes ``lister`` names used between this object's creation and
    :meth:`since_start`: a process alive at both counts the difference, one born since counts all of its CPU, one
    gone by the end counts nothing (its CPU left ``/proc`` with it: the worker that owned a backend reports it)."""

    def __init__(self, lister: Lister) -> None:
        self._lister = lister
        self._start = {kind: {pid: live_cpu_s(pid) for pid in pids} for kind, pids in lister().items()}

    @classmethod
    def of_run(cls, benv: BenchEnv) -> ServerCpu:
        """The account of a benchmark run's servers: its broker's nodes, and PostgreSQL where it runs on it."""
        return cls(lambda: server_pids(benv.broker, benv.database == "postgresql"))

    def since_start(self, reported: Mapping[int, float] | None = None) -> dict[str, float]:
        """Seconds per kind; ``reported``: PostgreSQL backends' CPU the workers measured themselves, by pid — added to
        ``postgres``, and those pids not read again here."""
        reported = reported or {}
        out: dict[str, float] = {}
        for kind, pids in self._lister().items():
            before = self._start.get(kind, {})
            total = 0.0
            for pid in pids:
                if pid in reported:
                    continue
                now = live_cpu_s(pid)
                if now is not None:
                    total += now - (before.get(pid) or 0.0)
            out[kind] = total
        if reported:
            out["postgres"] = out.get("postgres", 0.0) + sum(reported.values())
        return out


def track_backends() -> None:
    """From now on, record the backend pid of every PostgreSQL connection this process opens (an SQLAlchemy
    ``connect`` listener on every engine; SQLite connections have none). Idempotent."""
    if _tracking:
        return
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    @event.listens_for(Engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        pid = getattr(getattr(dbapi_conn, "info", None), "backend_pid", None)
        if pid:
            _backends.add(int(pid))

    _tracking.append(True)


def backends_cpu(since: Mapping[int, float] | None = None) -> dict[int, float]:
    """CPU seconds of each live backend of this process's connections (:func:`track_backends`), by pid; with
    ``since`` (an earlier result), what each used after it (a backend opened since: all of its CPU)."""
    out: dict[int, float] = {}
    for pid in sorted(_backends):
        now = live_cpu_s(pid)
        if now is not None:
            out[pid] = now - (since or {}).get(pid, 0.0)
    return out


def reported_backends(results: Iterable[Mapping[str, Any]]) -> dict[int, float]:
    """The backends' CPU the worker processes of a run reported (``"backends_cpu"`` of each result), by pid."""
    return {pid: s for r in results for pid, s in r["backends_cpu"].items()}
