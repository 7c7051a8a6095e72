"""Logging of every payevents process: JSON lines (python-json-logger) or plain text for a terminal.

``PAYEVENTS_LOG_FORMAT`` = ``json`` | ``text`` | ``auto`` (the default: text when stderr is a terminal,
JSON lines otherwise, and always JSON into a log file). Per-event fields are *bound*, never interpolated:
call sites pass them as ``extra={"eventId": ..., "topic": ..., "partition": ..., "offset": ...,
"outcome": ...}`` and every record carries ``service`` (the worker's name, see :func:`bind_service`).
The text format appends the bound fields as ``key=value``.

No card number reaches a log: the message, the bound string fields and exception texts pass through
:func:`payevents.contracts.cardguard.mask_card_numbers` (Luhn-valid 13-19 digit runs keep their last four).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Final

from pythonjsonlogger.json import JsonFormatter

from payevents.contracts.cardguard import mask_card_numbers
from payevents.settings import log_level_env

#: the fields a record may carry bound (JSON keys as the event page spells them)
BOUND_FIELDS: Final = ("service", "worker", "eventId", "paymentId", "correlationId", "topic", "partition",
                       "offset", "outcome")
_TEXT_FORMAT: Final = "%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"
_service: str | None = None


def bind_service(name: str | None) -> None:
    """Every record of this process gets ``service=name`` (unless the call site bound another)."""
    global _service
    _service = name


def mask(text: str) -> str:
    """``text`` with card numbers masked but their last four digits."""
    if not any(c.isdigit() for c in text):
        return text
    return mask_card_numbers(text.encode("utf-8", "surrogateescape")).decode("utf-8", "surrogateescape")


class _Guard(logging.Filter):
    """Binds ``service``; renders the message once and masks card numbers in it and in bound strings."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "service", None) is None and _service is not None:
            record.service = _service
        # masking is idempotent (a masked run is no longer a digit run), so a second handler changes nothing
        record.msg = mask(record.getMessage())
        record.args = None
        for key in BOUND_FIELDS:
            value = record.__dict__.get(key)
            if isinstance(value, str):
                record.__dict__[key] = mask(value)
        return True


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(_TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        bound = " ".join(f"{k}={record.__dict__[k]}" for k in BOUND_FIELDS
                         if k != "service" and record.__dict__.get(k) is not None)
        return mask(f"{text} [{bound}]" if bound else text)

    def formatException(self, ei: Any) -> str:
        return mask(super().formatException(ei))


class JsonLineFormatter(JsonFormatter):
    def __init__(self) -> None:
        super().__init__("%(levelname)s %(name)s %(process)d %(message)s", timestamp="time",
                         rename_fields={"levelname": "level", "name": "logger", "process": "pid"},
                         json_ensure_ascii=False)

    def formatException(self, ei: Any) -> str:
        text = super().formatException(ei)
        return mask(text if isinstance(text, str) else "\n".join(text))


def log_format(requested: str | None = None, *, to_file: bool = False) -> str:
    fmt = (requested or os.environ.get("PAYEVENTS_LOG_FORMAT") or "auto").lower()
    if fmt not in ("json", "text", "auto"):
        from payevents.errors import ConfigError

        raise ConfigError(f"PAYEVENTS_LOG_FORMAT: {fmt!r} must be json, text or auto")
    if fmt == "auto":
        fmt = "json" if to_file or not sys.stderr.isatty() else "text"
    return fmt


def configure(fmt: str | None = None, *, log_file: str | None = None, level: str | None = None,
              service: str | None = None, force: bool = False) -> None:
    """Set up the root logger once per process (``force`` replaces handlers that are already there)."""
    if service is not None:
        bind_service(service)
    root = logging.getLogger()
    if root.handlers and not force:
        return
    for h in list(root.handlers):
        root.removeHandler(h)
    handler: logging.Handler = logging.FileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr)
    handler.addFilter(_Guard())
    handler.setFormatter(JsonLineFormatter() if log_format(fmt, to_file=log_file is not None) == "json"
                         else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level or log_level_env())
