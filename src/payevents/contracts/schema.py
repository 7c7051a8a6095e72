"""The published JSON Schema files (draft 2020-12), shipped under ``contracts/schemas/``.

One file per event type and version (``PaymentProcessed-1.0.0.json``) plus the legacy envelope of the
channel page (``PAYMENT_PROCESSED-1.0.legacy.json``, read-only). Loaded with importlib.resources.
"""

from __future__ import annotations

import dataclasses
import json
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any, Final

from payevents.contracts.events import EVENT_MODELS
from payevents.contracts.legacy import LEGACY_EVENT_TYPE, LEGACY_VERSION
from payevents.errors import ContractError

_LEGACY_FILE: Final = f"{LEGACY_EVENT_TYPE}-{LEGACY_VERSION}.legacy.json"


@dataclasses.dataclass(frozen=True, slots=True)
class SchemaInfo:
    """One published schema: event type, version, whether it is the legacy (read-only) envelope, file name."""

    event_type: str
    version: str
    legacy: bool
    filename: str
    description: str


def _dir() -> Traversable:
    return resources.files("payevents.contracts").joinpath("schemas")


def _filename(event_type: str, version: str) -> str:
    if (event_type, version) == (LEGACY_EVENT_TYPE, LEGACY_VERSION):
        return _LEGACY_FILE
    if (event_type, version) in EVENT_MODELS:
        return f"{event_type}-{version}.json"
    known = ", ".join(f"{t} {v}" for t, v in [*EVENT_MODELS, (LEGACY_EVENT_TYPE, LEGACY_VERSION)])
    raise ContractError(f"schema: no schema for {event_type!r} version {version!r} (known: {known})")


def versions_of(event_type: str) -> list[str]:
    """Published versions of ``event_type``, oldest first."""
    found = [v for t, v in EVENT_MODELS if t == event_type]
    if event_type == LEGACY_EVENT_TYPE:
        found.append(LEGACY_VERSION)
    return sorted(found, key=lambda v: tuple(int(p) for p in v.split(".")))


def resolve(event_type: str, version: str | None = None) -> tuple[str, str]:
    """``(event_type, version)``; the latest published version when ``version`` is None."""
    if version is None:
        found = versions_of(event_type)
        if not found:
            known = ", ".join(sorted({t for t, _ in EVENT_MODELS} | {LEGACY_EVENT_TYPE}))
            raise ContractError(f"eventType: {event_type!r} is not a known event type (known: {known})")
        version = found[-1]
    _filename(event_type, version)
    return event_type, version


def schema_path(event_type: str, version: str | None = None) -> Traversable:
    """The shipped schema file of ``event_type`` (latest version when ``version`` is None)."""
    event_type, version = resolve(event_type, version)
    return _dir().joinpath(_filename(event_type, version))


@cache
def _load(event_type: str, version: str) -> dict[str, Any]:
    return json.loads(_dir().joinpath(_filename(event_type, version)).read_text("utf-8"))


def load_schema(event_type: str, version: str | None = None) -> dict[str, Any]:
    """The JSON Schema of ``event_type`` as a dict (a fresh copy; latest version when ``version`` is None)."""
    return json.loads(json.dumps(_load(*resolve(event_type, version))))


def schema_text(event_type: str, version: str | None = None) -> str:
    """The published schema file's text, exactly as shipped."""
    return schema_path(event_type, version).read_text("utf-8")


def list_schemas() -> list[SchemaInfo]:
    """Every published schema: the canonical events, then the legacy envelope."""
    out = []
    for event_type, version in [*EVENT_MODELS, (LEGACY_EVENT_TYPE, LEGACY_VERSION)]:
        doc = _load(event_type, version)
        out.append(
            SchemaInfo(
                event_type=event_type,
                version=version,
                legacy=event_type == LEGACY_EVENT_TYPE,
                filename=_filename(event_type, version),
                description=str(doc.get("description", "")),
            )
        )
    return out


def count_properties(schema: dict[str, Any]) -> int:
    """Properties at every depth, counted the way the catalog page counts them (PaymentProcessed: 20)."""
    total = 0
    props = schema.get("properties", {})
    for sub in props.values():
        total += 1 + count_properties(sub)
    items = schema.get("items")
    if isinstance(items, dict):
        total += count_properties(items)
    return total


__all__ = [
    "LEGACY_EVENT_TYPE",
    "LEGACY_VERSION",
    "SchemaInfo",
    "count_properties",
    "list_schemas",
    "load_schema",
    "resolve",
    "schema_path",
    "schema_text",
    "versions_of",
]
