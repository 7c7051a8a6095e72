"""Test helpers: ``payevents run``'s supervision (``runner.run_workers``) in a thread or as the command a user
runs, waiting for what it shows in the status registry, and a process's parent."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from payevents.runtime import runner
from payevents.runtime.procs import proc_stat
from payevents.runtime.workers import WorkerView, read_registry
from payevents.settings import Settings

DEADLINE = 120.0
#: the command line, as a user runs it
CLI = str(Path(sys.executable).parent / "payevents")


def cli_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a ``payevents`` process of a test: this one's without its PAYEVENTS_ settings, the dev
    channel, ``data_dir`` and ``extra``."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("PAYEVENTS_")},
            "PAYEVENTS_ENV": "dev", "PAYEVENTS_DATA_DIR": str(data_dir), **extra}


def parent_of(pid: int) -> int | None:
    """A process's parent pid (None when it is gone)."""
    fields = proc_stat(pid)
    return None if fields is None else int(fields[1])


def wait_for(cond: Callable[[], Any], what: str, deadline: float = DEADLINE) -> Any:
    """``cond()``'s first truthy value, within ``deadline`` s."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if value := cond():
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for: {what}")


def alive(settings: Settings, name: str, other_than: int | None = None) -> WorkerView:
    """The slot ``name``'s worker alive with a pid (other than ``other_than``: its replacement)."""
    return wait_for(lambda: next((v for v in read_registry(settings) if v.name == name and v.alive and v.pid
                                  and v.pid != other_than), None),
                    f"{name} alive" + (f", not pid {other_than}" if other_than else ""))


@contextlib.contextmanager
def supervising(settings: Settings, names: list[str], **kwargs: Any) -> Iterator[list[runner.WorkerExit]]:
    """``run_workers(settings, names)`` in a thread while the block runs, then stopped; yields the list its exits
    are put in once it has stopped."""
    stop = threading.Event()
    exits: list[runner.WorkerExit] = []
    thread = threading.Thread(target=lambda: exits.extend(runner.run_workers(settings, names, report=False,
                                                                            stop=stop, **kwargs)), daemon=True)
    thread.start()
    try:
        yield exits
    finally:
        stop.set()
        thread.join(DEADLINE)
