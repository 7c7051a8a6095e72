"""A worker's heap, settled once it has started (``runtime.heap``): what is alive then is frozen out of the
garbage collector's reach, once per process, and what the worker allocates afterwards is collected as before.

Each check runs in a fresh interpreter: freezing the test process's own heap would keep its objects for good."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap


def _run(code: str) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_settling_freezes_what_is_alive_once_and_later_cycles_are_still_collected() -> None:
    got = _run("""
        import gc, json, weakref
        from payevents.runtime import metrics
        from payevents.runtime.heap import settle_heap

        class Node:
            pass

        before = gc.get_freeze_count()
        kept = Node()  # alive when the heap settles: frozen
        first, second = settle_heap(), settle_heap()
        frozen = gc.get_freeze_count()
        a, b = Node(), Node()  # a reference cycle made afterwards, then dropped
        a.other, b.other = b, a
        gone = weakref.ref(a)
        del a, b
        gc.collect()
        print(json.dumps({"before": before, "first": first, "second": second, "frozen": frozen,
                          # the collector's generations no longer hold it (the permanent one does)
                          "kept_frozen": gc.is_tracked(kept) and all(o is not kept for o in gc.get_objects()),
                          "cycle_collected": gone() is None,
                          "metric": metrics.HEAP_FROZEN._value.get()}))
    """)
    assert got["before"] == 0
    assert got["first"] is True and got["second"] is False  # once per process
    assert isinstance(got["frozen"], int) and got["frozen"] > 1000  # the imports' objects, at least
    assert got["metric"] == got["frozen"]
    assert got["kept_frozen"] is True
    assert got["cycle_collected"] is True
