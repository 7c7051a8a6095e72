"""Decode + validate incoming bytes, validate + encode outgoing events.

INTERFACE (stable, used by runtime and services) — the contracts work fills in the details:

* ``decode_event(raw: bytes) -> DecodedEvent`` — canonical events of every known type/version and the
  legacy envelope (normalized, ``legacy=True``). Raises :class:`EventValidationError` naming JSON
  paths and rules. Unknown extra fields are tolerated on read.
* ``encode_event(event) -> bytes`` — strict: validates (no unknown fields, canonical-required fields
  present, money rules, card guard) and encodes; amounts as JSON numbers, losslessly.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from payevents.contracts.events import PaymentEvent
from payevents.errors import PayeventsError


@dataclasses.dataclass(frozen=True, slots=True)
class FieldError:
    path: str  # JSON path like "data.amount.currency" ("" for the document itself)
    rule: str  # e.g. "iso4217", "required", "pattern", "card-number"
    message: str  # full sentence naming the path, the rule and (except card data) the bad value

    def __str__(self) -> str:
        return self.message


class EventValidationError(PayeventsError):
    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors))


@dataclasses.dataclass(frozen=True, slots=True)
class DecodedEvent:
    event: PaymentEvent
    #: True when normalized from the channel page's older envelope (PAYMENT_PROCESSED 1.0)
    legacy: bool = False
    #: what the event carried beyond the model that services may use (e.g. legacy metadata.merchantId)
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def event_type(self) -> str:
        return self.event.eventType

    @property
    def event_id(self) -> str:
        return self.event.eventId

    @property
    def version(self) -> str:
        return self.event.version

    @property
    def payment_id(self) -> str:
        return self.event.data.paymentId
