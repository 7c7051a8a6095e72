"""What a worker imports at its start: the libraries only an error path or a reference renderer needs are left
to that path (jsonschema: a rejected record's precise errors; Jinja: the reference the precompiled e-mail
templates are tested against). Each is tens of milliseconds of CPU at every worker's start."""

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
print(" ".join(sorted(m for m in ("jsonschema", "jinja2") if m in sys.modules)))
"""


def test_a_worker_starts_without_the_error_path_libraries() -> None:
    out = subprocess.run([sys.executable, "-c", WORKER], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == ""


def test_the_precise_path_still_finds_jsonschema() -> None:
    """A rejected record still gets its errors with paths (the lazy import is taken)."""
    from payevents.contracts.codec import validate_document

    errors = validate_document(b'{"eventType": "PaymentProcessed", "eventVersion": "1.0.0"}')
    assert errors and all(e.path for e in errors if e.rule == "required")
