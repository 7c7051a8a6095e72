"""The contracts: the channel and its events as code (pure, no I/O).

Public API::

    decode_event(raw) -> DecodedEvent        encode_event(event) -> bytes
    validate_document(obj_or_bytes) -> list[FieldError]
    to_builtins(event) -> dict               new_event_id() -> str     now_utc() -> datetime
    currency(code) / to_minor / from_minor / quantize / check_amount      (money)
    upcast_legacy(raw) -> DecodedEvent       legacy_event_id(idempotency_key) -> str
    schema_path / load_schema / list_schemas                               (published JSON Schemas)
    example_event(event_type) -> event model
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from payevents.contracts import events as _events
from payevents.contracts.codec import (
    DecodedEvent,
    EventValidationError,
    FieldError,
    decode_event,
    encode_event,
    to_builtins,
    validate_document,
)
from payevents.contracts.events import *  # noqa: F403  (the event models: events.__all__)
from payevents.contracts.events import CANONICAL_REQUIRED
from payevents.contracts.examples import example_event, example_json
from payevents.contracts.legacy import (
    LEGACY_EVENT_NAMESPACE,
    LEGACY_EVENT_TYPE,
    LEGACY_VERSION,
    legacy_event_id,
)
from payevents.contracts.money import (
    CURRENCIES,
    Currency,
    check_amount,
    currency,
    from_minor,
    is_currency,
    quantize,
    to_minor,
)
from payevents.contracts.schema import list_schemas, load_schema, schema_path


def new_event_id() -> str:
    """A new eventId: a random UUID (uuid4) as a string."""
    return str(uuid.uuid4())


def now_utc() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def upcast_legacy(raw: bytes) -> DecodedEvent:
    """Decode a legacy PAYMENT_PROCESSED 1.0 envelope into PaymentProcessed 1.0.0 (``legacy=True``)."""
    decoded = decode_event(raw)
    if not decoded.legacy:
        raise EventValidationError(
            [FieldError("eventType", "legacy", f"eventType: {decoded.event_type!r} is not the legacy envelope")]
        )
    return decoded


__all__ = [
    "CANONICAL_REQUIRED",
    "CURRENCIES",
    "LEGACY_EVENT_NAMESPACE",
    "LEGACY_EVENT_TYPE",
    "LEGACY_VERSION",
    "Currency",
    "DecodedEvent",
    "EventValidationError",
    "FieldError",
    "check_amount",
    "currency",
    "decode_event",
    "encode_event",
    "example_event",
    "example_json",
    "from_minor",
    "is_currency",
    "legacy_event_id",
    "list_schemas",
    "load_schema",
    "new_event_id",
    "now_utc",
    "quantize",
    "schema_path",
    "to_builtins",
    "to_minor",
    "upcast_legacy",
    "validate_document",
]
#: the event models and their registry, as ``payevents.contracts.events`` exports them
__all__ += [name for name in _events.__all__ if name not in ("UnsetType", "msgspec")]
