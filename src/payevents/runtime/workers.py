"""What each worker process tells about itself: an HTTP endpoint and a status file.

Every worker process started by ``payevents run`` (the relay, each consumer instance; the notifications
consumer also runs the e-mail delivery worker) serves on its own port, announced in its status file and
on ``payevents run``'s output:

- ``/metrics``: this process's Prometheus registry (text exposition format);
- ``/livez``: 200 while every loop of the process (consumer, relay, delivery) made progress within
  :data:`LIVE_AFTER_S`, else 503;
- ``/readyz``: 200 while the worker is running, its store answered the last check and it has work
  assigned (a consumer: partitions of its group; the relay: its last pass reached store and broker, and
  the outbox lease where the relay has one), else 503;
- ``/status``: the status document below, as JSON.

The status file ``{data_dir}/workers/{name}.{instance}.json`` is rewritten (atomically) every
:data:`HEARTBEAT_S` by the worker, and by the supervisor when the worker dies or is restarted. The
dashboard and ``/api/health`` read these files (:func:`read_registry`): a worker is *alive* when its state
is a running one, its heartbeat is fresh and (on this host) its pid exists, so a killed worker shows at
once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final

from payevents.runtime import metrics
from payevents.runtime.procs import ProcessIdentity, pid_alive
from payevents.settings import Settings, seconds_env

log = logging.getLogger("payevents.workers")

#: seconds between two status-file writes (and store checks at most every 2 of them)
HEARTBEAT_S: Final = 1.0
#: a loop that made no progress for this long is not live (the default; PAYEVENTS_LIVE_AFTER_S: :func:`live_after_s`)
LIVE_AFTER_S: Final = 30.0
LIVE_AFTER_ENV: Final = "PAYEVENTS_LIVE_AFTER_S"
#: its most: a day (1e300 was taken, and a worker stuck for good was never judged stuck)
MAX_LIVE_AFTER_S: Final = 86_400.0
#: a status file not rewritten for this long belongs to a dead or stuck worker
STALE_AFTER_S: Final = 10.0
#: states of a worker process that is (supposed to be) up
UP_STATES: Final = ("starting", "waiting", "running")
#: metrics endpoint: PAYEVENTS_METRICS_HOST (default 127.0.0.1), PAYEVENTS_METRICS_PORT (0 = any free port;
#: N = the first worker gets N, the next N+1, ...)
METRICS_HOST_ENV: Final = "PAYEVENTS_METRICS_HOST"
METRICS_PORT_ENV: Final = "PAYEVENTS_METRICS_PORT"


def live_after_s() -> float:
    """How long a loop may make no progress before ``/livez`` answers 503 (PAYEVENTS_LIVE_AFTER_S, default 30)."""
    return seconds_env(LIVE_AFTER_ENV, LIVE_AFTER_S, MAX_LIVE_AFTER_S)

_beats: dict[str, float] = {}


def beat(component: str) -> None:
    """Record that ``component``'s loop (e.g. ``delivery``) made progress now (cheap; any thread)."""
    _beats[component] = time.monotonic()


def forget(component: str) -> None:
    """``component``'s loop ended on purpose (e.g. a delivery process that joined for a backlog): no longer one
    whose progress ``/livez`` follows."""
    _beats.pop(component, None)


#: this process's children that are not under it in the process tree — forked by the fork server it came from
#: (runtime.procs): the notifications worker's delivery processes — by their liveness name; in the status file
#: (``children``), for the supervisor to kill them with this process (runner.kill_tree)
_children: dict[str, ProcessIdentity] = {}


def adopt(component: str, child: ProcessIdentity) -> None:
    """``child`` (started by this process, its loop beating as ``component``) runs until :func:`disown`."""
    _children[component] = child


def disown(component: str) -> None:
    _children.pop(component, None)


def children_of(settings: Settings, name: str, instance: int) -> list[ProcessIdentity]:
    """The children a slot's worker (on this host) listed in its status file, those still running."""
    doc = _read(_slot_file(settings, name, instance)) or {}
    if doc.get("host") != socket.gethostname():
        return []
    out = []
    for item in doc.get("children") or []:
        if isinstance(item, list) and len(item) == 2 and isinstance(item[0], int):
            child = ProcessIdentity(item[0], item[1] if isinstance(item[1], str) else None)
            if child.alive():
                out.append(child)
    return out


def registry_dir(settings: Settings) -> Path:
    return settings.data_dir / "workers"


def _slot_file(settings: Settings, name: str, instance: int) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    return registry_dir(settings) / f"{safe}.{instance}.json"


def _write(path: Path, doc: dict[str, Any]) -> None:
    """Write a status file atomically, or log why not and leave the old one (and no temporary file) in place.

    Never raises: a status file is bookkeeping, and a disk that is full for a while must not end a worker's
    loop or the supervisor's watch over its workers; the worker's next heartbeat writes the file again."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(doc, sort_keys=True))
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        log.warning("worker status file %s not written: %s", path, exc)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def update_slot(settings: Settings, name: str, instance: int, **changes: Any) -> None:
    """The supervisor's write: merge ``changes`` into a slot's status file (e.g. after its worker died); never
    raises (:func:`_write`)."""
    path = _slot_file(settings, name, instance)
    doc = _read(path) or {"name": name, "instance": instance, "host": socket.gethostname()}
    doc.update(changes, updated_at=time.time())
    _write(path, doc)


# -- inside a worker process ---------------------------------------------------------------------------


class WorkerProbe:
    """The worker's side: status document, heartbeat thread and HTTP endpoint.

    The worker sets ``sampler`` (returns ``{"ready": bool, "batches": int, "lag": int | None, ...}`` from its
    runtime; called from the heartbeat thread) and ``store_check`` (raises when the store is unreachable)
    once its runtime is built, calls :meth:`set_state` as it goes, and :meth:`close` at the end."""

    def __init__(self, settings: Settings, name: str, instance: int = 0, *, restarts: int = 0,
                 supervisor_pid: int | None = None, port: int = 0, host: str | None = None,
                 last_restart: str | None = None) -> None:
        self.settings = settings
        self.name = name
        self.instance = instance
        self.path = _slot_file(settings, name, instance)
        self.host = host or os.environ.get(METRICS_HOST_ENV) or "127.0.0.1"
        self.live_after = live_after_s()
        self.sampler: Callable[[], dict[str, Any]] | None = None
        #: component -> its loop's time.monotonic() of last progress (e.g. ``consumer`` -> runtime.progress_at)
        self.progress: dict[str, Callable[[], float]] = {}
        self.store_check: Callable[[], None] | None = None
        self.state = "starting"
        self.detail = ""
        self.store_ok: bool | None = None
        self._store_checked = 0.0
        self._batches = 0
        self._last_batch_at: float | None = None
        self._sample: dict[str, Any] = {}
        self._lock = threading.Lock()
        #: one write of the status file at a time, each from the state as it is then; none after close()'s
        self._write_lock = threading.Lock()
        self._closed = False
        self._stop = threading.Event()
        self.supervisor_pid = supervisor_pid
        #: the supervisor by pid and start time: a forked worker's parent is the fork server (runtime.procs)
        self._supervisor = ProcessIdentity.of(supervisor_pid) if supervisor_pid is not None else None
        #: set when the supervisor is gone (the worker then stops: a new `payevents run` starts its own)
        self.orphaned = threading.Event()
        self.started_at = time.time()
        self.doc: dict[str, Any] = {
            "name": name, "instance": instance, "pid": os.getpid(), "host": socket.gethostname(),
            "restarts": restarts, "supervisorPid": supervisor_pid, "startedAt": self.started_at,
            "lastRestart": last_restart,
        }
        metrics.WORKER_START.labels(worker=name).set(self.started_at)
        if restarts:
            metrics.WORKER_RESTARTS.labels(worker=name).inc(restarts)
        else:
            metrics.WORKER_RESTARTS.labels(worker=name)  # the series exists (0) from the start
        beat("worker")
        self._server = ThreadingHTTPServer((self.host, port), _handler_for(self))
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self.doc["metricsUrl"] = f"http://{self.host}:{self.port}/metrics"
        self._threads = [
            threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.5},
                             name="worker-http", daemon=True),
            threading.Thread(target=self._heartbeat_loop, name="worker-heartbeat", daemon=True),
        ]
        for t in self._threads:
            t.start()
        self.write()

    # -- state --------------------------------------------------------------------------------------

    def set_state(self, state: str, detail: str = "") -> None:
        self.state, self.detail = state, detail
        beat("worker")
        self.write()

    def live(self) -> tuple[bool, dict[str, float]]:
        now = time.monotonic()
        beats = dict(_beats)
        for component, source in list(self.progress.items()):
            try:
                beats[component] = float(source())
            except Exception:
                beats[component] = 0.0
        ages = {c: round(now - t, 3) for c, t in beats.items()}
        return all(a < self.live_after for a in ages.values()), ages

    def ready(self) -> bool:
        return (self.state == "running" and self.store_ok is not False
                and bool(self._sample.get("ready", False)))

    def status(self) -> dict[str, Any]:
        live, ages = self.live()
        with self._lock:
            doc = dict(self.doc)
            doc.update(self._sample)
        doc.update(state=self.state, detail=self.detail, live=live, ready=self.ready(), storeOk=self.store_ok,
                   progressAges=ages, lastBatchAt=self._last_batch_at, heartbeatAt=time.time(), port=self.port,
                   children=[[c.pid, c.started] for c in list(_children.values())])
        doc.pop("updated_at", None)
        return doc

    def write(self) -> None:
        """Write the status file from the state as it is now. The heartbeat thread, the worker's loop
        (:meth:`set_state`) and :meth:`close` all write: one at a time, and none after close()'s final state, which
        an earlier document ("running") written late would otherwise replace, for a worker that is gone."""
        with self._write_lock:
            if not self._closed:
                _write(self.path, self.status())

    def refresh(self) -> None:
        """Sample the runtime and (at most every 2 s) check the store; update the worker gauges."""
        if self.sampler is not None:
            try:
                sample = self.sampler()
            except Exception as exc:  # a sampler must never take the heartbeat down
                log.debug("worker sampler failed: %s", exc)
                sample = {}
            batches = int(sample.get("batches") or 0)
            if batches > self._batches:
                self._batches, self._last_batch_at = batches, time.time()
            with self._lock:
                self._sample = sample
        now = time.monotonic()
        if self.store_check is not None and now - self._store_checked >= 2 * HEARTBEAT_S:
            self._store_checked = now
            try:
                self.store_check()
                self.store_ok = True
            except Exception:
                self.store_ok = False
        metrics.WORKER_READY.labels(worker=self.name).set(1 if self.ready() else 0)
        wall = time.time()
        for component, age in self.live()[1].items():
            metrics.WORKER_PROGRESS.labels(worker=self.name, component=component).set(wall - age)

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            if self._supervisor is not None and not self.orphaned.is_set() and not self._supervisor.alive():
                log.warning("%s[%d]: the supervisor (pid %d) is gone; stopping", self.name, self.instance,
                            self.supervisor_pid)
                self.orphaned.set()
            if self.state in UP_STATES:
                beat("worker")  # the process itself is alive; its loops beat on their own
            self.refresh()
            self.write()

    def close(self, state: str = "stopped", detail: str = "") -> None:
        self._stop.set()
        with self._write_lock:
            self.state, self.detail = state, detail
            _write(self.path, self.status())
            self._closed = True
        self._server.shutdown()
        self._server.server_close()


def _handler_for(probe: WorkerProbe) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

                probe.refresh()
                self._send(200, generate_latest(), CONTENT_TYPE_LATEST)
            elif path == "/livez":
                live, ages = probe.live()
                self._json(200 if live else 503, {"live": live, "progressAges": ages})
            elif path == "/readyz":
                ready = probe.ready()
                self._json(200 if ready else 503, {"ready": ready, "state": probe.state, "detail": probe.detail,
                                                   "storeOk": probe.store_ok})
            elif path in ("/", "/status"):
                self._json(200, probe.status())
            else:
                self._send(404, b"not found\n", "text/plain")

        def _json(self, code: int, doc: dict[str, Any]) -> None:
            self._send(code, json.dumps(doc).encode() + b"\n", "application/json")

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


# -- the supervisor's watch over its workers' probes ---------------------------------------------------


class LivenessWatch:
    """What a supervisor asks its workers, as an orchestrator's liveness probe does: each worker's ``/livez``
    every :data:`HEARTBEAT_S` (2 s timeout), from a thread of its own, so that a worker that does not answer
    never holds up the supervisor's loop.

    A worker is *stuck* when its ``/livez`` answers 503 (a loop of it made no progress for
    :data:`LIVE_AFTER_S`: e.g. a query on a database connection that went silent, which no socket timeout
    ends) or when it has not answered at all for :data:`STALE_AFTER_S` (the process is frozen, or a C call
    holds its interpreter). A process is judged from the moment its status file announces its endpoint (the
    worker's first act): its start-up before that, however slow, is not. :meth:`stuck` says why."""

    def __init__(self, settings: Settings, *, period: float = HEARTBEAT_S, timeout: float = 2.0,
                 silent_after: float = STALE_AFTER_S) -> None:
        self.settings = settings
        self.period, self.timeout, self.silent_after = period, timeout, silent_after
        self._lock = threading.Lock()
        #: key -> (name, instance, pid) of each process watched
        self._targets: dict[int, tuple[str, int, int]] = {}
        #: key -> (pid, its /livez URL, time.monotonic() of its last answer)
        self._seen: dict[int, tuple[int, str, float]] = {}
        self._verdicts: dict[int, tuple[int, str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="supervisor-liveness", daemon=True)
        self._thread.start()

    def watch(self, key: int, name: str, instance: int, pid: int) -> None:
        """Judge process ``pid`` of slot ``key`` from now on (a new process of the slot replaces the old)."""
        with self._lock:
            self._targets[key] = (name, instance, pid)
            self._verdicts.pop(key, None)

    def forget(self, key: int) -> None:
        with self._lock:
            self._targets.pop(key, None)
            self._seen.pop(key, None)
            self._verdicts.pop(key, None)

    def stuck(self, key: int, pid: int | None) -> str | None:
        """Why process ``pid`` of slot ``key`` is stuck, or None."""
        with self._lock:
            verdict = self._verdicts.get(key)
        return verdict[1] if verdict is not None and verdict[0] == pid else None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(self.timeout + 1)

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            with self._lock:
                targets = dict(self._targets)
            for key, (name, instance, pid) in targets.items():
                reason = self._probe(key, name, instance, pid)
                if reason is not None:
                    with self._lock:
                        if self._targets.get(key, (None, None, None))[2] == pid:
                            self._verdicts[key] = (pid, reason)

    def _probe(self, key: int, name: str, instance: int, pid: int) -> str | None:
        import http.client
        import urllib.error
        import urllib.request

        seen = self._seen.get(key)
        if seen is None or seen[0] != pid:
            doc = _read(_slot_file(self.settings, name, instance))
            url = doc.get("metricsUrl") if doc is not None and doc.get("pid") == pid else None
            if not isinstance(url, str):
                return None  # not serving yet: its start-up is not judged
            seen = (pid, url.removesuffix("/metrics") + "/livez", time.monotonic())
            self._seen[key] = seen
        try:
            with urllib.request.urlopen(seen[1], timeout=self.timeout):
                pass
        except urllib.error.HTTPError as exc:
            if exc.code != 503:
                return None
            try:
                ages = json.loads(exc.read()).get("progressAges") or {}
            except (OSError, ValueError, AttributeError):
                ages = {}
            ages = {c: a for c, a in ages.items() if isinstance(a, int | float)}
            late = max(ages, key=ages.__getitem__, default=None)
            return (f"/livez 503: {late} made no progress for {ages[late]:.0f} s" if late is not None
                    else "/livez 503")
        except (OSError, http.client.HTTPException):
            silent = time.monotonic() - seen[2]
            return f"/livez has not answered for {silent:.0f} s" if silent >= self.silent_after else None
        self._seen[key] = (pid, seen[1], time.monotonic())
        return None


# -- reading the registry (dashboard, /api/health, `payevents workers`) -----------------------------------


@dataclasses.dataclass(frozen=True)
class WorkerView:
    name: str
    instance: int
    pid: int | None
    state: str
    alive: bool
    ready: bool
    restarts: int
    metrics_url: str | None
    last_batch_at: float | None
    lag: int | None
    heartbeat_age: float | None
    detail: str
    exitcode: int | None
    #: the worker's last check of its store (None: not checked yet)
    store_ok: bool | None = None
    #: why the process before this one of the slot ended (``killed: stuck (…)``, ``exited with code -9``)
    last_restart: str | None = None

    @property
    def label(self) -> str:
        return f"{self.name}[{self.instance}]"

    @property
    def healthy(self) -> bool:
        """Alive, running (not waiting for its database or broker) and its store answering."""
        return self.alive and self.state == "running" and self.store_ok is not False

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "instance": self.instance, "pid": self.pid, "state": self.state,
                "alive": self.alive, "ready": self.ready, "restarts": self.restarts, "metricsUrl": self.metrics_url,
                "lastBatchAt": self.last_batch_at, "lag": self.lag, "heartbeatAge": self.heartbeat_age,
                "detail": self.detail, "exitcode": self.exitcode, "storeOk": self.store_ok, "healthy": self.healthy,
                "lastRestart": self.last_restart}


def read_registry(settings: Settings, now: float | None = None) -> list[WorkerView]:
    """Every worker slot that ever ran against this data dir, with what its own status file says."""
    now = time.time() if now is None else now
    here = socket.gethostname()
    out: list[WorkerView] = []
    folder = registry_dir(settings)
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        doc = _read(path)
        if doc is None or "name" not in doc:
            continue
        state = str(doc.get("state", "unknown"))
        beat_at = doc.get("heartbeatAt")
        age = round(now - float(beat_at), 3) if isinstance(beat_at, int | float) else None
        pid = doc.get("pid") if isinstance(doc.get("pid"), int) else None
        alive = state in UP_STATES and age is not None and age < STALE_AFTER_S
        if alive and pid is not None and doc.get("host") == here:
            alive = pid_alive(pid)
        if alive and doc.get("live") is False:  # the process is there, but a loop of it is stuck
            alive, state = False, "stuck"
        lag = doc.get("lag")
        store_ok = doc.get("storeOk")
        out.append(WorkerView(
            name=str(doc["name"]), instance=int(doc.get("instance", 0)), pid=pid,
            state=state if alive or state not in UP_STATES else "dead", alive=alive,
            store_ok=store_ok if isinstance(store_ok, bool) else None,
            ready=bool(alive and doc.get("ready")), restarts=int(doc.get("restarts") or 0),
            metrics_url=doc.get("metricsUrl") if alive else None, last_batch_at=doc.get("lastBatchAt"),
            lag=int(lag) if isinstance(lag, int) else None, heartbeat_age=age, detail=str(doc.get("detail") or ""),
            exitcode=doc.get("exitcode") if isinstance(doc.get("exitcode"), int) else None,
            last_restart=str(doc["lastRestart"]) if doc.get("lastRestart") else None,
        ))
    return out


def supervised_elsewhere(settings: Settings, slots: Iterable[tuple[str, int]], me: int) -> dict[tuple[str, int], str]:
    """Which of ``slots`` (name, instance) another live ``payevents run`` on this host supervises (or a worker run on
    its own serves), and how it is known: the slot's status file names a supervisor pid (or, without one, a worker
    pid) other than ``me`` that is running payevents, and a worker state that is up or restarting. Two supervisors
    of one slot would run two workers under one status file, each heartbeat overwriting the other's."""
    here = socket.gethostname()
    out: dict[tuple[str, int], str] = {}
    for name, instance in slots:
        doc = _read(_slot_file(settings, name, instance))
        if doc is None or doc.get("host") != here or doc.get("state") not in (*UP_STATES, "restarting"):
            continue
        sup, pid = doc.get("supervisorPid"), doc.get("pid")
        owner = sup if isinstance(sup, int) else pid  # a worker run on its own (`payevents relay`, `run --one`)
        if not isinstance(owner, int) or owner == me or not pid_alive(owner):
            continue
        try:
            if b"payevents" not in Path(f"/proc/{owner}/cmdline").read_bytes():
                continue  # the pid was reused by another program
        except OSError:
            continue
        out[(name, instance)] = f"worker pid {pid}" + (f", supervised by pid {sup}" if isinstance(sup, int) else "")
    return out


_PARTIAL = re.compile(r"^\..+\.json\.(\d+)\.tmp$")


def sweep_partials(settings: Settings, pid: int | None = None) -> None:
    """Remove the temporary status files (:func:`_write`) of ``pid``, or of every process no longer running on this
    host: a process killed between the write and the rename leaves one behind. The supervisor calls it when it
    reaps a worker, and a run at its start for processes gone before it."""
    folder = registry_dir(settings)
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        if (m := _PARTIAL.match(name)) is None:
            continue
        owner = int(m.group(1))
        if owner == pid or (pid is None and not pid_alive(owner)):
            with contextlib.suppress(OSError):  # a directory in its way, or gone meanwhile
                (folder / name).unlink()


def forget_slot(settings: Settings, name: str, instance: int) -> None:
    """Remove a slot's status file (its worker is gone and will not come back under this name)."""
    try:
        _slot_file(settings, name, instance).unlink()
    except FileNotFoundError:
        pass
