"""A worker's heap, settled once it has started (issue #14).

Python's cyclic garbage collector runs a full (oldest-generation) collection whenever enough objects have
survived the younger ones, and a full collection visits every tracked object in the process: the modules, the
services, SQLAlchemy's and babel's caches — tens of thousands of objects that live as long as the process. In a
consumer they are most of the heap, and the full collections cost 6.5–9.8 µs of CPU an event (``gc.callbacks``
timing: ``tools/consume_cpu.py --gc``, docs/architecture.md "A worker's heap, settled").

:func:`settle_heap` collects once and moves every object alive at that moment into the permanent generation
(:func:`gc.freeze`): later collections, full ones too, visit only what the worker allocated since. Nothing
changes for the objects themselves: reference counting frees them as before; only a reference cycle among
objects frozen here would never be collected, and what is alive once a worker has started (imports, engines,
caches) lives as long as the process anyway.

It is called once per worker process where its start is done and before its loop: a consumer or the relay
(:func:`payevents.runtime.runner.serve_worker`), the notifications delivery child after its first pass (rendering
loads the locale data lazily), and the benchmarks' own worker processes. Not on import, and not by the library's
entry points a team calls from its own process (``ConsumerRuntime``, ``ServiceHarness``): that heap is theirs.

:func:`peak_rss_kb` is the process's own peak resident memory.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from pathlib import Path

_settled = False
_lock = threading.Lock()


def settle_heap(*, again: bool = False) -> bool:
    """Collect, then freeze what is alive now out of the collector's reach (once per process: a later call does
    nothing, unless ``again``: a benchmark process that runs one service after another in itself), and show how
    many objects are frozen (``payevents_worker_heap_frozen_objects``). Returns True when this call froze."""
    global _settled
    from payevents.runtime import metrics  # imported before the freeze: its objects are the worker's too

    with _lock:
        if _settled and not again:
            return False
        gc.collect()
        gc.freeze()
        _settled = True
    metrics.HEAP_FROZEN.set(gc.get_freeze_count())
    return True


def peak_rss_kb() -> int:
    """Peak resident set size of this process in KiB: ``VmHWM``, the peak of its own address space since its exec
    (``getrusage``'s ``ru_maxrss`` where there is no ``/proc``, which also counts what the parent's pages weighed when
    a fork and exec, as ``multiprocessing``'s spawn does, made it)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
