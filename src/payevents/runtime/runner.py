"""Long-running workers: the relay and the services' consumers, one process each.

``payevents run ledger invoices`` (or ``all``) starts the relay and one consumer process per service
(``--instances N`` for several members of a service's group: they share its partitions), forwards
SIGTERM/SIGINT to all of them, waits for each to finish its batch and commit, and reports every exit.
A worker that dies is restarted with exponential backoff and its restarts are counted; each worker serves
its metrics and health on a port it announces (:mod:`payevents.runtime.workers`).
``python -m payevents.runtime.runner SERVICE`` runs one consumer in this process (``SERVICE`` may be
``package.module:ATTR`` for a ServiceDef defined elsewhere, e.g. in tests); settings from ``PAYEVENTS_*``.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any, TypeVar

from payevents.errors import ConfigError
from payevents.runtime import logs, procs, tracing
from payevents.runtime.backoff import Backoff
from payevents.runtime.heap import settle_heap
from payevents.runtime.limits import MAX_INSTANCES, batch_problem
from payevents.runtime.service import ServiceDef
from payevents.runtime.workers import (
    METRICS_PORT_ENV,
    LivenessWatch,
    WorkerProbe,
    children_of,
    forget_slot,
    live_after_s,
    registry_dir,
    supervised_elsewhere,
    sweep_partials,
    update_slot,
)
from payevents.settings import Settings, log_level_env, port_env, seconds_env

log = logging.getLogger("payevents.runner")
_T = TypeVar("_T")

RELAY = "relay"
#: SIGTERM to SIGKILL grace period for a worker that does not stop
STOP_GRACE = 30.0
#: exit code of a worker whose configuration cannot work (EX_CONFIG): the supervisor does not restart it
EXIT_CONFIG = 78
#: a worker that lived this long before dying restarts after the first backoff delay again
STABLE_AFTER_S = 60.0
#: first restart delay in seconds (doubling up to 60 s)
RESTART_BACKOFF_ENV = "PAYEVENTS_RESTART_BACKOFF"
#: its most (1e300 was taken: the first restart was due in 1e300 s, a dead worker was never started again)
MAX_RESTART_BACKOFF_S = 3600.0


def resolve_service(spec: str) -> ServiceDef:
    """A service by its registered name or import path (see :mod:`payevents.runtime.registry`)."""
    from payevents.runtime.registry import resolve_service as resolve

    return resolve(spec)


def install_signal_handlers(stop: threading.Event) -> None:
    """SIGTERM and SIGINT set ``stop`` (a second signal is ignored while the batch finishes)."""

    def _handler(signum: int, _frame: FrameType | None) -> None:
        if not stop.is_set():
            log.info("signal %s: finishing the current batch, then stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)


def _ping(engine: Any) -> None:
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")


def unreachable(exc: BaseException) -> str | None:
    """One line naming the unreachable database or broker behind ``exc``; None for any other error."""
    import sqlalchemy as sa

    from payevents.errors import TransientError
    from payevents.store.db import store_state

    state = store_state(exc)  # read-only (mid-failover), or the session ended by the server
    if state is None and isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError | sa.exc.DisconnectionError
                                    | sa.exc.TimeoutError):
        state = "database unreachable"
    if state is not None:
        orig = getattr(exc, "orig", None) or exc
        text = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
        return f"{state}: {text}"
    if isinstance(exc, TransientError):
        return f"broker unreachable: {str(exc).strip().splitlines()[0] if str(exc).strip() else 'transient fault'}"
    if type(exc).__name__ == "KafkaException":
        return f"broker unreachable: {exc}"
    if isinstance(exc, ConnectionError | TimeoutError):
        return f"unreachable: {type(exc).__name__}: {exc}"
    return None


def start_when_reachable(build: Callable[[], _T], stop: threading.Event, what: str,
                         probe: WorkerProbe | None = None) -> _T | None:
    """``build()``, retried with backoff while the database or broker is unreachable (never exits for that);
    None when ``stop`` is set meanwhile. Other errors propagate."""
    backoff = Backoff(initial=0.5, maximum=15.0)
    while True:
        try:
            return build()
        except Exception as exc:
            reason = unreachable(exc)
            if reason is None:
                raise
        delay = backoff.next()
        log.warning("%s: %s at start-up; retrying in %.1f s", what, reason, delay)
        if probe is not None:
            probe.set_state("waiting", reason)
        if stop.wait(delay):
            return None


def check_reachable(settings: Settings, store: str) -> None:
    """Raise if the store's database or the broker cannot be reached (opens and closes what it uses, so a
    worker waiting at start-up does not leave half-built clients behind on every try)."""
    from payevents.contracts.channel import dead_letter_topic_for, topic_for
    from payevents.store.db import engine_for
    from payevents.transport import open_transport  # type: ignore[attr-defined]

    _ping(engine_for(settings, store))
    transport = open_transport(settings)
    try:
        transport.create_topics([topic_for(settings.env), dead_letter_topic_for(settings.env)], settings.partitions)
    finally:
        transport.close()


def _attach_consumer(probe: WorkerProbe, runtime: Any) -> None:
    stats = runtime.stats
    probe.store_check = lambda: _ping(runtime.engine)
    probe.progress["consumer"] = lambda: runtime.progress_at
    probe.sampler = lambda: {
        "ready": bool(stats.lag_by_partition), "batches": stats.batches, "lag": stats.lag,
        "partitions": sorted(p for _t, p in stats.lag_by_partition), "consumed": stats.consumed,
        "retries": stats.retries, "deadLettered": stats.dead_lettered,
    }
    probe.refresh()
    probe.set_state("running")


def _attach_relay(probe: WorkerProbe, relay: Any) -> None:
    def sample() -> dict[str, Any]:
        st = relay.stats
        # ready: the last pass reached the store and the broker, and the outbox lease is held where the
        # relay takes one (an attribute ``lease_held``; absent = no lease to hold)
        return {"ready": bool(relay.last_pass_ok) and getattr(relay, "lease_held", True) is not False,
                "batches": st.batches, "published": st.published, "lag": relay.pending, "pending": relay.pending,
                "slaBreaches": st.sla_breaches}

    probe.store_check = lambda: _ping(relay.engine)
    probe.progress["relay"] = lambda: relay.progress_at
    probe.sampler = sample
    probe.refresh()
    probe.set_state("running")


def run_one(settings: Settings, spec: str, *, stop: threading.Event | None = None, max_batch: int = 500,
            ready: Any = None, probe: WorkerProbe | None = None, instance: int = 0) -> int:
    """Run one service's consumer in this process until SIGTERM/SIGINT (or ``stop``); 0 on a clean stop.
    ``ready`` (an Event) is set once the consumer is built and its store migrated. An unreachable database
    or broker at start-up is waited for (retried with backoff), not an exit. ``instance``: which member of
    the group on this host (after a death its next process watches its first records for one that kills it:
    ``ConsumerRuntime``)."""
    from payevents.runtime.consumer import ConsumerRuntime

    stop = stop or threading.Event()
    service = resolve_service(spec)
    runtime = _start(settings, service.name, service.name,
                     lambda: ConsumerRuntime(settings, service, max_batch=max_batch, instance=instance), stop,
                     ready, probe, _attach_consumer)
    if runtime is not None:
        runtime.run(stop)
    return 0


def _start(settings: Settings, name: str, store: str, build: Callable[[], _T], stop: threading.Event, ready: Any,
           probe: WorkerProbe | None, attach: Callable[[WorkerProbe, _T], None]) -> _T | None:
    """A worker's start: signal handlers (on the main thread), ``build()`` once the broker and the database of
    service ``store`` answer (None when stopped meanwhile), the probe attached, ``ready`` set."""
    if threading.current_thread() is threading.main_thread():
        install_signal_handlers(stop)

    def checked() -> _T:
        if probe is not None:
            check_reachable(settings, store)
        return build()

    built = start_when_reachable(checked, stop, name, probe)
    if built is not None:
        if probe is not None:
            attach(probe, built)
            settle_heap()  # a worker process (it has a probe): its start-up's objects stay for good
        if ready is not None:
            ready.set()
    return built


def run_relay(settings: Settings, *, stop: threading.Event | None = None, ready: Any = None,
              probe: WorkerProbe | None = None) -> int:
    """Run the outbox relay in this process until SIGTERM/SIGINT (or ``stop``)."""
    from payevents.runtime.relay import Relay

    stop = stop or threading.Event()
    relay = _start(settings, RELAY, "payments", lambda: Relay(settings), stop, ready, probe, _attach_relay)
    if relay is None:
        return 0
    try:
        relay.run(stop)
    finally:
        relay.close()
    return 0


def _worker_main(settings: Settings, name: str, max_batch: int, ready: Any = None, log_file: str | None = None,
                 instance: int = 0, restarts: int = 0, port: int = 0, supervisor_pid: int | None = None,
                 last_restart: str | None = None) -> None:
    """A worker process started by :func:`run_workers`."""
    sys.exit(serve_worker(settings, name, max_batch=max_batch, ready=ready, log_file=log_file, instance=instance,
                          restarts=restarts, port=port, supervisor_pid=supervisor_pid, last_restart=last_restart))


def check_max_batch(max_batch: int) -> None:
    """``--max-batch`` checked before any worker starts (the consumer runtime checks it too, for teams' own code)."""
    if (problem := batch_problem(max_batch)) is not None:
        raise ConfigError(f"--max-batch: {problem}")


def serve_worker(settings: Settings, name: str, *, max_batch: int = 500, ready: Any = None,
                 log_file: str | None = None, instance: int = 0, restarts: int = 0, port: int | None = None,
                 supervisor_pid: int | None = None, last_restart: str | None = None) -> int:
    """Run one worker (``relay`` or a consumer service) in this process with its status probe (HTTP endpoint
    + status file) until SIGTERM/SIGINT; returns its exit code (:data:`EXIT_CONFIG` for a configuration that
    cannot work). ``port`` None: PAYEVENTS_METRICS_PORT, else any free port."""
    check_process_env()
    check_max_batch(max_batch)
    check_services(settings, [name])
    check_data_dir(settings)
    logs.configure(log_file=log_file, service=name if name == RELAY else resolve_label(name))
    try:
        tracing.configure(name if name == RELAY else resolve_label(name))
    except ConfigError as exc:
        log.error("%s[%d]: %s", name, instance, exc)
        return EXIT_CONFIG
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        install_signal_handlers(stop)
    if port is None:
        port = port_env(METRICS_PORT_ENV)
    try:
        probe = WorkerProbe(settings, name, instance, restarts=restarts, supervisor_pid=supervisor_pid, port=port,
                            last_restart=last_restart)
    except OSError as exc:
        log.error("%s[%d]: cannot serve metrics on port %d: %s", name, instance, port, exc)
        return EXIT_CONFIG
    if supervisor_pid is None:
        print(f"{name}[{instance}] pid {os.getpid()}; metrics {probe.doc['metricsUrl']}", flush=True)
    else:
        def stop_when_orphaned() -> None:
            probe.orphaned.wait()
            stop.set()

        threading.Thread(target=stop_when_orphaned, name="worker-orphan", daemon=True).start()
    code, state, detail = 0, "stopped", ""
    try:
        if name == RELAY:
            code = run_relay(settings, stop=stop, ready=ready, probe=probe)
        else:
            code = run_one(settings, name, stop=stop, max_batch=max_batch, ready=ready, probe=probe,
                           instance=instance)
    except KeyboardInterrupt:
        code = 0
    except Exception as exc:
        reason = unreachable(exc)
        if isinstance(exc, ConfigError):  # restarting will not help
            log.error("%s[%d]: %s", name, instance, exc)
            code, state, detail = EXIT_CONFIG, "failed", str(exc)
        elif reason is not None:
            log.error("%s[%d]: %s", name, instance, reason)
            code, state, detail = 1, "crashed", reason
        else:
            log.exception("%s[%d] crashed", name, instance)
            code, state, detail = 1, "crashed", f"{type(exc).__name__}: {exc}"
    probe.close(state, logs.mask(detail))
    return code


def resolve_label(spec: str) -> str:
    """The service name a worker logs as (``pkg.mod:ATTR`` -> its ServiceDef's name when importable)."""
    if ":" not in spec:
        return spec
    try:
        return resolve_service(spec).name
    except Exception:
        return spec


def _configure_logging(log_file: str | None = None) -> None:
    logs.configure(log_file=log_file)


@dataclasses.dataclass
class WorkerExit:
    name: str
    instance: int
    pid: int | None
    exitcode: int | None
    #: times the supervisor restarted this slot
    restarts: int = 0


def expand(names: Sequence[str], *, relay: bool | None = None) -> list[str]:
    """``all`` -> relay + every installed service (the ``payevents.services`` entry points: the four
    built-in ones first, then third-party ones by name); the relay is included unless ``relay`` is False."""
    from payevents.runtime.registry import registered_services

    known = registered_services()
    everything = list(known)
    out: list[str] = []
    for n in names:
        for name in ([RELAY, *everything] if n == "all" else [n]):
            if name not in out:
                out.append(name)
    if relay is False and RELAY in out:
        out.remove(RELAY)
    elif relay and RELAY not in out:
        out.insert(0, RELAY)
    for name in out:
        if name != RELAY and ":" not in name and name not in known:
            raise ConfigError(f"service: {name!r} is not one of relay, {', '.join(sorted(known))}, all "
                              "(or package.module:service)")
    return out


class StartedFlag:
    """A worker's "I am up" to its supervisor: one shared byte written by the worker and read by the
    supervisor, no lock. (A multiprocessing Event holds a lock shared with the worker while it is set: a
    worker killed at that instant left it held, and the supervisor's next look blocked it for good.)"""

    def __init__(self, ctx: Any) -> None:
        self._up = ctx.RawValue(ctypes.c_bool, False)

    def set(self) -> None:
        self._up.value = True

    def is_set(self) -> bool:
        return bool(self._up.value)


@dataclasses.dataclass
class _Slot:
    name: str
    instance: int
    index: int
    backoff: Backoff
    proc: procs.Watched | None = None
    ready: StartedFlag | None = None
    pid: int | None = None
    started_at: float = 0.0
    restarts: int = 0
    restart_at: float | None = None
    last_exit: int | None = None
    #: why the supervisor killed the slot's process (it was stuck), until it is started again
    stuck: str | None = None
    #: why the slot's last process ended (told to its successor, which shows it in its status)
    why: str | None = None
    final: WorkerExit | None = None

    @property
    def label(self) -> str:
        return f"{self.name}[{self.instance}]"


def restart_backoff() -> Backoff:
    """The supervisor's restart policy: PAYEVENTS_RESTART_BACKOFF seconds first (default 1), doubling to 60."""
    initial = seconds_env(RESTART_BACKOFF_ENV, 1.0, MAX_RESTART_BACKOFF_S)
    return Backoff(initial=initial, maximum=max(60.0, initial))


def check_services(settings: Settings, names: Sequence[str]) -> None:
    """Each named consumer service's own check of the settings (``ServiceDef.check``), before anything starts."""
    for name in names:
        if name != RELAY:
            service = resolve_service(name)
            if service.check is not None:
                service.check(settings)


def check_data_dir(settings: Settings) -> None:
    """The data dir (status files; the embedded log, SQLite stores and Maildir where they are used) exists or is
    created now: one that cannot be (a file of that name, a read-only place) refuses the run with one line,
    before any worker starts, instead of every worker crashing on it and being restarted for ever."""
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)  # FileExistsError when it is there but no directory
    except OSError as exc:
        raise ConfigError(f"PAYEVENTS_DATA_DIR (--data-dir): cannot use {settings.data_dir}: "
                          f"{exc.strerror or type(exc).__name__}") from None


def check_process_env() -> None:
    """The process's own knobs (PAYEVENTS_LIVE_AFTER_S, _WORKER_START, _METRICS_PORT, _RESTART_BACKOFF, _LOG_LEVEL,
    _LOG_FORMAT), checked before anything starts: a bad one is one ConfigError naming it and its rule, not a
    traceback in a worker (or in each of its restarts)."""
    from payevents.runtime.logs import log_format

    live_after_s()
    procs.start_method()
    port_env(METRICS_PORT_ENV)
    restart_backoff()
    log_level_env()
    log_format()


def run_workers(settings: Settings, names: Sequence[str], *, instances: int = 1, max_batch: int = 500,
                stop: threading.Event | None = None, report: bool = True, ready: threading.Event | None = None,
                log_file: str | None = None, restart: bool = True, metrics_port: int | None = None) -> list[WorkerExit]:
    """Start one process per worker (``instances`` per consumer service; one relay) and supervise them: a
    worker that dies is restarted with exponential backoff (:func:`restart_backoff`; reset after
    :data:`STABLE_AFTER_S` of life) and its restarts are counted, except one that exited with
    :data:`EXIT_CONFIG` (its configuration cannot work). SIGTERM/SIGINT or ``stop`` stops them all; returns
    how each slot's last process exited. ``ready`` is set once every worker is up; ``log_file`` sends the
    workers' logs to a file instead of stderr; ``metrics_port`` (default PAYEVENTS_METRICS_PORT, 0 = any
    free port) is the first worker's metrics port, the next get the following ones."""
    if not 1 <= instances <= MAX_INSTANCES:
        raise ConfigError(f"--instances: {instances} must be a whole number from 1 to {MAX_INSTANCES}")
    check_max_batch(max_batch)
    from payevents.store.db import dispose_engines

    dispose_engines()
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        install_signal_handlers(stop)
    check_process_env()
    check_services(settings, names)
    check_data_dir(settings)
    base_port = metrics_port if metrics_port is not None else port_env(METRICS_PORT_ENV)
    ctx = procs.context(settings=settings)
    slots: list[_Slot] = []
    for name in names:
        for i in range(1 if name == RELAY else instances):
            slots.append(_Slot(name, i, len(slots), restart_backoff()))
    taken = supervised_elsewhere(settings, [(s.name, s.instance) for s in slots], os.getpid())
    if taken:
        raise ConfigError("payevents run: " + "; ".join(f"{name}[{i}] is already running ({how})"
                                                        for (name, i), how in taken.items())
                          + f" on this data dir ({settings.data_dir}); stop that run first, or use another --data-dir")
    _forget_dead_slots(settings, slots)

    def say(text: str) -> None:
        if report:
            try:
                print(text, flush=True)
            except OSError as exc:  # stdout on a full disk: the supervisor's watch goes on
                log.warning("could not print %r: %s", text, exc)

    def start(slot: _Slot) -> None:
        slot.ready = StartedFlag(ctx)
        port = base_port + slot.index if base_port else 0
        slot.proc = procs.Watched(procs.start(ctx, _worker_main, (settings, slot.name, max_batch, slot.ready,
                                                                  log_file, slot.instance, slot.restarts, port,
                                                                  os.getpid(), slot.why),
                                              name=f"payevents-{slot.name}-{slot.instance}"))
        slot.pid, slot.started_at, slot.stuck = slot.proc.pid, time.monotonic(), None
        if slot.pid is not None:
            watch.watch(slot.index, slot.name, slot.instance, slot.pid)
        again = f" (restart {slot.restarts})" if slot.restarts else ""
        say(f"started {slot.label} pid {slot.pid}{again}; status in {registry_dir(settings)}")

    watch = LivenessWatch(settings)
    try:
        for slot in slots:
            start(slot)
        return _supervise(settings, slots, stop, ready, restart, start, say, watch)
    except BaseException:
        # The watch itself failed (a bug, or something it cannot do): its workers must not run on without it,
        # unsupervised and unstoppable by SIGTERM (the process would wait for them at exit). They are stopped,
        # and the error ends `payevents run` non-zero, for the process manager above it to start it again.
        log.exception("the supervisor failed; stopping its workers")
        _stop_now([slot.proc for slot in slots if slot.proc is not None])
        raise
    finally:
        watch.close()


def kill_tree(pid: int | None, also: Sequence[procs.ProcessIdentity] = ()) -> None:
    """SIGKILL a worker, every process under it and its children ``also`` that are not under it (forked by the
    fork server: ``children`` in its status file), and theirs: the notifications worker's delivery process, when
    that one is what is stuck, would otherwise be left, stopped or waiting, for ever."""
    if pid is None:
        return
    tree = [pid, *procs.descendants(pid)]
    for child in also:
        if child.alive():
            tree += [child.pid, *procs.descendants(child.pid)]
    for p in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)


def _stop_now(workers: Sequence[procs.Watched]) -> None:
    """SIGTERM to every live worker, SIGKILL to those still alive after :data:`STOP_GRACE` s; waits for all."""
    for p in workers:
        if p.exitcode is None and p.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE
    for p in workers:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.exitcode is None:
            p.kill()
            p.join()


def _supervise(settings: Settings, slots: list[_Slot], stop: threading.Event, ready: threading.Event | None,
               restart: bool, start: Callable[[_Slot], None], say: Callable[[str], None],
               watch: LivenessWatch) -> list[WorkerExit]:
    """The supervisor's loop (:func:`run_workers`): announce, kill a stuck worker (``watch``), restart with
    backoff, stop on ``stop``."""
    announced: set[int] = set()
    signalled_at: float | None = None
    while not all(slot.final is not None for slot in slots):
        now = time.monotonic()
        if ready is not None and not ready.is_set() and all(s.ready is not None and s.ready.is_set() for s in slots):
            ready.set()
        if stop.is_set() and signalled_at is None:
            signalled_at = now
            for slot in slots:
                if slot.proc is not None and slot.proc.exitcode is None and slot.proc.pid is not None:
                    os.kill(slot.proc.pid, signal.SIGTERM)
        if signalled_at is not None and now - signalled_at > STOP_GRACE:
            for slot in slots:
                if slot.proc is not None and slot.proc.exitcode is None:
                    slot.proc.kill()
        for slot in slots:
            if slot.final is not None:
                continue
            p = slot.proc
            if p is not None and slot.index not in announced and slot.ready is not None and slot.ready.is_set():
                announced.add(slot.index)
                _announce(settings, slot, say)
            if p is not None and p.exitcode is None:
                why = None if stop.is_set() or slot.stuck else watch.stuck(slot.index, slot.pid)
                if why is not None:  # alive but stuck: only a new process gets it going again
                    slot.stuck = why
                    say(f"{slot.label} pid {slot.pid} is stuck ({why}); killing it")
                    log.warning("%s pid %s is stuck (%s); killing it", slot.label, slot.pid, why,
                                extra={"worker": slot.label, "outcome": "stuck"})
                    kill_tree(slot.pid, children_of(settings, slot.name, slot.instance))
                continue
            if p is not None:  # it has just exited
                code = p.exitcode
                p.join()
                watch.forget(slot.index)
                if slot.pid is not None:
                    sweep_partials(settings, slot.pid)
                slot.proc, slot.last_exit = None, code
                announced.discard(slot.index)
                if stop.is_set():
                    slot.final = WorkerExit(slot.name, slot.instance, slot.pid, code, slot.restarts)
                    say(f"{slot.label} pid {slot.pid} " + ("stopped" if code == 0 else f"exited with code {code}"))
                    if code != 0:
                        update_slot(settings, slot.name, slot.instance, state="exited", exitcode=code, pid=slot.pid)
                    continue
                if not restart or code == EXIT_CONFIG:
                    slot.final = WorkerExit(slot.name, slot.instance, slot.pid, code, slot.restarts)
                    why = "its configuration cannot work" if code == EXIT_CONFIG else "restarts are off"
                    say(f"{slot.label} pid {slot.pid} exited with code {code}; not restarted ({why})")
                    update_slot(settings, slot.name, slot.instance, state="failed", exitcode=code, pid=slot.pid)
                    continue
                if now - slot.started_at >= STABLE_AFTER_S:
                    slot.backoff.reset()
                delay = slot.backoff.next()
                slot.restarts += 1
                slot.restart_at = now + delay
                say(f"{slot.label} pid {slot.pid} exited with code {code}; restart {slot.restarts} in {delay:.1f} s")
                log.warning("%s pid %s exited with code %s; restart %d in %.1f s", slot.label, slot.pid, code,
                            slot.restarts, delay, extra={"worker": slot.label, "outcome": "restarting"})
                slot.why = f"killed: stuck ({slot.stuck})" if slot.stuck else f"exited with code {code}"
                update_slot(settings, slot.name, slot.instance, state="restarting", exitcode=code, pid=slot.pid,
                            restarts=slot.restarts, nextStartAt=time.time() + delay, detail=slot.why)
            elif stop.is_set():  # waiting for a restart: not any more
                slot.final = WorkerExit(slot.name, slot.instance, slot.pid, slot.last_exit, slot.restarts)
                say(f"{slot.label} not restarted: stopping")
            elif slot.restart_at is not None and now >= slot.restart_at:
                slot.restart_at = None
                start(slot)
        time.sleep(0.1)
    return [slot.final for slot in slots if slot.final is not None]


def _announce(settings: Settings, slot: _Slot, say: Callable[[str], None]) -> None:
    from payevents.runtime.workers import read_registry

    for view in read_registry(settings):
        if view.name == slot.name and view.instance == slot.instance and view.metrics_url:
            say(f"{slot.label} pid {slot.pid} ready; metrics {view.metrics_url}")
            return


def _forget_dead_slots(settings: Settings, slots: Sequence[_Slot]) -> None:
    """Status files of these slots (or of more instances of their services) from an earlier run whose worker
    is gone: this run writes its own; other names are left alone."""
    from payevents.runtime.workers import read_registry

    sweep_partials(settings)
    names = {s.name for s in slots}
    for view in read_registry(settings):
        if view.name in names and not view.alive:
            forget_slot(settings, view.name, view.instance)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m payevents.runtime.runner SERVICE [MAX_BATCH]``: one consumer, settings from the env."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print("usage: python -m payevents.runtime.runner SERVICE|module:ATTR [MAX_BATCH]", file=sys.stderr)
        return 2
    _configure_logging()
    settings = Settings.from_env()
    return run_one(settings, args[0], max_batch=int(args[1]) if len(args) > 1 else 500)


if __name__ == "__main__":
    sys.exit(main())
