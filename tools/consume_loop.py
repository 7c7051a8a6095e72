"""The consume loop the measuring tools share (``consume_cpu.py``, ``consume_pg.py``): one service's
``ConsumerRuntime`` (and its background worker, if it has one) draining a prepared channel, with a warm-up batch
outside the measure and callbacks at the measure's start and end."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any


def consume_measured(settings: Any, name: str, n: int, start: Callable[[], None] = lambda: None,
                     end: Callable[[], None] = lambda: None, *, background: bool = True) -> tuple[int, int]:
    """Consume until ``n`` records were consumed; ``start()`` runs after the warm-up batch, ``end()`` right after
    the last step. Returns (records, batches) consumed between them; a dead-lettered record is an error (the
    figures would not be of the service's work). ``background=False``: without the service's background worker
    (notifications' intents then stay pending, for a tool that measures their delivery)."""
    from payevents.runtime.consumer import ConsumerRuntime
    from payevents.services import load_service

    service = load_service(name)
    rt = ConsumerRuntime(settings, service)
    stop = threading.Event()
    worker = None
    if background and service.background is not None:
        worker = threading.Thread(target=service.background, args=(settings, stop), daemon=True)
        worker.start()
    try:
        rt.step()  # the first batch warms up (imports, caches, statements) outside the measure
        getattr(rt, "settle", lambda: None)()  # confirmed there too (write-behind; a tree before it has none)
        _settle_heap()  # as a worker process does once started
        before, batches = rt.stats.consumed, rt.stats.batches
        deadline = time.monotonic() + 120 + n / 200
        start()
        while rt.stats.consumed < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name}: consumed {rt.stats.consumed} of {n}")
            rt.step()
        end()
        if rt.stats.dead_lettered:
            raise RuntimeError(f"{name}: {rt.stats.dead_lettered} dead-lettered")
        return rt.stats.consumed - before, max(rt.stats.batches - batches, 1)
    finally:
        stop.set()
        rt.close()
        if worker is not None:
            worker.join(10)


def _settle_heap() -> None:
    """``runtime.heap.settle_heap`` where the measured tree has it (a tree older than it measures without). Each
    call stands in for one worker's start, and a tool measures several services one after another in its one
    process: ``again``, or only the first service's start-up objects would be frozen."""
    try:
        from payevents.runtime.heap import settle_heap
    except ImportError:
        return
    settle_heap(again=True)
