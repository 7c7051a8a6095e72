"""Long-running workers: the relay and the services' consumers, one process each.

``payevents run ledger invoices`` (or ``all``) starts the relay and one consumer process per service
(``--instances N`` for several members of a service's group: they share its partitions), forwards
SIGTERM/SIGINT to all of them, waits for each to finish its batch and commit, and reports every exit.
A worker that crashes is reported, not restarted. ``python -m payevents.runtime.runner SERVICE``
runs one consumer in this process (``SERVICE`` may be ``package.module:ATTR`` for a ServiceDef
defined elsewhere, e.g. in tests); settings come from ``PAYEVENTS_*``.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any

from payevents.errors import ConfigError
from payevents.runtime.service import ServiceDef
from payevents.settings import Settings

log = logging.getLogger("payevents.runner")

RELAY = "relay"
#: SIGTERM to SIGKILL grace period for a worker that does not stop
STOP_GRACE = 30.0


def resolve_service(spec: str) -> ServiceDef:
    """A service by its registered name (``ledger``: the ``payevents.services`` entry points, built-in and
    third-party alike) or by import path (``package.module:ATTR``, a Service or ServiceDef)."""
    from payevents.consuming import as_definition

    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        try:
            obj = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"service: cannot load {spec!r} ({exc})") from None
        return as_definition(obj, repr(spec))
    from payevents.services import load_service

    return load_service(spec)


def install_signal_handlers(stop: threading.Event) -> None:
    """SIGTERM and SIGINT set ``stop`` (a second signal is ignored while the batch finishes)."""

    def _handler(signum: int, _frame: FrameType | None) -> None:
        if not stop.is_set():
            log.info("signal %s: finishing the current batch, then stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)


def run_one(settings: Settings, spec: str, *, stop: threading.Event | None = None, max_batch: int = 500,
            ready: Any = None) -> int:
    """Run one service's consumer in this process until SIGTERM/SIGINT (or ``stop``); 0 on a clean stop.
    ``ready`` (an Event) is set once the consumer is built and its store migrated."""
    from payevents.runtime.consumer import ConsumerRuntime

    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        install_signal_handlers(stop)
    runtime = ConsumerRuntime(settings, resolve_service(spec), max_batch=max_batch)
    if ready is not None:
        ready.set()
    runtime.run(stop)
    return 0


def run_relay(settings: Settings, *, stop: threading.Event | None = None, ready: Any = None) -> int:
    """Run the outbox relay in this process until SIGTERM/SIGINT (or ``stop``)."""
    from payevents.runtime.relay import Relay

    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        install_signal_handlers(stop)
    relay = Relay(settings)
    if ready is not None:
        ready.set()
    relay.run(stop)
    return 0


def _worker_main(settings: Settings, name: str, max_batch: int, ready: Any = None, log_file: str | None = None) -> None:
    _configure_logging(log_file)
    try:
        if name == RELAY:
            code = run_relay(settings, ready=ready)
        else:
            code = run_one(settings, name, max_batch=max_batch, ready=ready)
    except KeyboardInterrupt:
        code = 0
    sys.exit(code)


def _configure_logging(log_file: str | None = None) -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=os.environ.get("PAYEVENTS_LOG_LEVEL", "INFO"), filename=log_file,
                            format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")


@dataclasses.dataclass
class WorkerExit:
    name: str
    instance: int
    pid: int | None
    exitcode: int | None


def expand(names: Sequence[str], *, relay: bool | None = None) -> list[str]:
    """``all`` -> relay + the four consumer services; the relay is included unless ``relay`` is False."""
    from payevents.services import CONSUMER_SERVICES

    out: list[str] = []
    for n in names:
        for name in ([RELAY, *CONSUMER_SERVICES] if n == "all" else [n]):
            if name not in out:
                out.append(name)
    if relay is False and RELAY in out:
        out.remove(RELAY)
    elif relay and RELAY not in out:
        out.insert(0, RELAY)
    from payevents.services import registered_services

    known = registered_services()
    for name in out:
        if name != RELAY and ":" not in name and name not in known:
            raise ConfigError(f"service: {name!r} is not one of relay, {', '.join(sorted(known))}, all "
                              "(or package.module:service)")
    return out


def run_workers(settings: Settings, names: Sequence[str], *, instances: int = 1, max_batch: int = 500,
                stop: threading.Event | None = None, report: bool = True, ready: threading.Event | None = None,
                log_file: str | None = None) -> list[WorkerExit]:
    """Start one process per worker (``instances`` per consumer service; one relay), stop them all on
    SIGTERM/SIGINT or ``stop``, and return how each exited. ``ready`` is set once every worker is up;
    ``log_file`` sends the workers' logs to a file instead of stderr."""
    if instances < 1:
        raise ConfigError(f"--instances: {instances} must be a positive integer")
    from payevents.store.db import dispose_engines

    dispose_engines()
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        install_signal_handlers(stop)
    ctx = multiprocessing.get_context("spawn")
    procs: list[tuple[str, int, multiprocessing.process.BaseProcess]] = []
    readies: list[Any] = []
    for name in names:
        for i in range(1 if name == RELAY else instances):
            readies.append(ctx.Event())
            proc = ctx.Process(target=_worker_main, args=(settings, name, max_batch, readies[-1], log_file),
                               name=f"payevents-{name}-{i}")
            proc.start()
            procs.append((name, i, proc))
            if report:
                print(f"started {name}[{i}] pid {proc.pid}", flush=True)
    exits: dict[int, WorkerExit] = {}
    signalled_at: float | None = None
    while len(exits) < len(procs):
        if ready is not None and not ready.is_set() and all(r.is_set() for r in readies):
            ready.set()
        if stop.is_set() and signalled_at is None:
            signalled_at = time.monotonic()
            for _name, _i, p in procs:
                if p.exitcode is None and p.pid is not None:
                    os.kill(p.pid, signal.SIGTERM)
        if signalled_at is not None and time.monotonic() - signalled_at > STOP_GRACE:
            for _name, _i, p in procs:
                if p.exitcode is None:
                    p.kill()
        for k, (name, i, p) in enumerate(procs):
            if k not in exits and p.exitcode is not None:
                exits[k] = WorkerExit(name, i, p.pid, p.exitcode)
                if report:
                    how = "stopped" if p.exitcode == 0 else f"exited with code {p.exitcode}"
                    print(f"{name}[{i}] pid {p.pid} {how}", flush=True)
        time.sleep(0.1)
    for _name, _i, p in procs:
        p.join()
    return [exits[k] for k in range(len(procs))]


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
