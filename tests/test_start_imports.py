"""What a worker imports at its start: the libraries only an error path or a reference renderer needs are left
to that path (jsonschema: a rejected record's precise errors; Jinja: the reference the precompiled e-mail
templates are tested against), and pydantic to the HTTP API that validates with it (the settings' secrets are
``payevents.settings.Secret``). Each is tens of milliseconds of CPU at every worker's start."""

from __future__ import annotations

import subprocess
import sys

WORKER = """
import sys
from payevents.runtime.consumer import ConsumerRuntime
from payevents.services import load_service
from payevents.services.notifications import delivery, render
for name in ("ledger", "invoices", "analytics", "notifications"):
    load_service(name)
render._compiled()
print(" ".join(sorted(m for m in ("jsonschema", "jinja2", "pydantic") if m in sys.modules)))
"""


def test_a_worker_starts_without_the_error_path_libraries() -> None:
    out = subprocess.run([sys.executable, "-c", WORKER], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == ""


def test_the_precise_path_still_finds_jsonschema() -> None:
    """A rejected record still gets its errors with paths (the lazy import is taken)."""
    from payevents.contracts.codec import validate_document

    errors = validate_document(b'{"eventType": "PaymentProcessed", "eventVersion": "1.0.0"}')
    assert errors and all(e.path for e in errors if e.rule == "required")


def test_make_bytecode_leaves_every_module_compiled() -> None:
    """``make bytecode`` (a prerequisite of demo, test, bench and soak) writes each module's cached bytecode, fresh
    for its source, as a wheel's install does: an editable install run with PYTHONDONTWRITEBYTECODE (as on these
    machines) would otherwise compile the package's source again in every process it starts."""
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    subprocess.run(["make", "-s", "bytecode"], cwd=root, check=True, timeout=300, capture_output=True)
    stale = []
    for source in sorted((root / "src" / "payevents").rglob("*.py")):
        cached = Path(importlib.util.cache_from_source(str(source)))
        data = cached.read_bytes() if cached.exists() else b""
        st = source.stat()
        # a .pyc's header (PEP 552): magic, flags, then the source's mtime and size when validated by timestamp
        # (flags 0), or its hash (compileall under SOURCE_DATE_EPOCH)
        fresh = data[:4] == importlib.util.MAGIC_NUMBER and (
            data[4:8] != b"\0\0\0\0"
            or (int.from_bytes(data[8:12], "little") == int(st.st_mtime) & 0xFFFFFFFF
                and int.from_bytes(data[12:16], "little") == st.st_size & 0xFFFFFFFF))
        if not fresh:
            stale.append(str(source.relative_to(root)))
    assert stale == []


def test_a_spawned_worker_does_not_import_the_command_line() -> None:
    """``multiprocessing``'s spawn runs the parent's main script again in each child, as ``__mp_main__``
    (``spawn._fixup_main_from_path``): every worker the ``payevents`` command starts, and every delivery process a
    notifications worker starts, runs the command's script before its own target. The script imports only a
    small entry module; the command line (typer, click, rich: ~100 modules, 30–60 ms of CPU) is imported when the
    command runs, not in its workers."""
    from pathlib import Path

    script = Path(sys.executable).with_name("payevents")
    assert script.is_file(), f"{script}: the console script of the installed package"
    code = ("import runpy, sys; runpy.run_path(sys.argv[1], run_name='__mp_main__'); "
            "print(' '.join(sorted(m for m in sys.modules"
            " if m.split('.')[0] in ('typer', 'click', 'rich') or m == 'payevents.faces.cli')))")
    out = subprocess.run([sys.executable, "-c", code, str(script)], capture_output=True, text=True, check=True,
                         timeout=120)
    assert out.stdout.strip() == ""
    # the script still runs the command as its main
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True, timeout=120)
    assert "Usage" in done.stdout


TARGET_MODULES = """
import importlib, sys
from payevents.bench import scaleout, suites
targets = [suites.drain_worker, suites.relay_worker, suites.service_worker, scaleout.member_worker]
modules = sorted({t.__module__ for t in targets})
for name in [m for m in sys.modules if m.startswith(("payevents", "rich"))]:
    del sys.modules[name]
for name in modules:
    importlib.import_module(name)
print(" ".join(sorted(m for m in sys.modules
                      if m.split(".")[0] == "rich" or m in ("payevents.bench.events", "payevents.bench.baseline",
                                                             "payevents.bench.suites", "payevents.services.payments"))))
"""


def test_the_benchmarks_workers_import_what_an_operators_worker_imports() -> None:
    """A spawned process imports the module of its target. The processes the benchmarks start (the drain's four
    services, the end-to-end's relay and services, the scale-out's members) import the runtime and their service,
    as an operator's worker does, and nothing of the suites (the event factory and the payments service behind
    it, the console, the baselines): a drain times the workers' start, and it is an operator's worker's start."""
    out = subprocess.run([sys.executable, "-c", TARGET_MODULES], capture_output=True, text=True, check=True,
                         timeout=120)
    assert out.stdout.strip() == ""
