"""payevents: the payments.{env}.events channel, its contracts, and the services that act on it.

The public API (see docs/library.md), importable from ``payevents`` itself:

- events: :class:`PaymentInitiated`, :class:`PaymentAuthorized`, :class:`PaymentCaptured`,
  :class:`PaymentProcessed`, :class:`PaymentFailed` (typed models, validated on emit and on read),
  :func:`decode_event`, :func:`encode_event`;
- publishing from your own transaction: :func:`install_outbox`, :func:`publish`, :class:`Relay`;
- consuming with your own service: :class:`Service`, :class:`Context`, :func:`run_service`;
- testing it: :class:`ServiceHarness`;
- :class:`Settings` (from ``PAYEVENTS_*``) and the errors (:class:`PoisonEvent`, :class:`IdempotencyConflict`, …).

Names are imported on first use, so ``import payevents`` stays cheap for the CLI.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "PaymentInitiated": "payevents.contracts.events",
    "PaymentAuthorized": "payevents.contracts.events",
    "PaymentCaptured": "payevents.contracts.events",
    "PaymentProcessed": "payevents.contracts.events",
    "PaymentFailed": "payevents.contracts.events",
    "PaymentEvent": "payevents.contracts.events",
    "PaymentProcessedData": "payevents.contracts.events",
    "ProcessedMetadata": "payevents.contracts.events",
    "Amount": "payevents.contracts.events",
    "PaymentMethod": "payevents.contracts.events",
    "Migration": "payevents.store.db",
    "decode_event": "payevents.contracts.codec",
    "EventValidationError": "payevents.contracts.codec",
    "encode_event": "payevents.contracts.codec",
    "install_outbox": "payevents.publishing",
    "publish": "payevents.publishing",
    "Relay": "payevents.publishing",
    "AppendResult": "payevents.publishing",
    "Service": "payevents.consuming",
    "Context": "payevents.consuming",
    "run_service": "payevents.consuming",
    "ServiceHarness": "payevents.testing.harness",
    "Settings": "payevents.settings",
    "PayeventsError": "payevents.errors",
    "ConfigError": "payevents.errors",
    "ContractError": "payevents.errors",
    "IdempotencyConflict": "payevents.errors",
    "PoisonEvent": "payevents.errors",
    "TransientError": "payevents.errors",
}

__all__ = [
    "Amount",
    "AppendResult",
    "ConfigError",
    "Context",
    "ContractError",
    "EventValidationError",
    "IdempotencyConflict",
    "Migration",
    "PayeventsError",
    "PaymentAuthorized",
    "PaymentCaptured",
    "PaymentEvent",
    "PaymentFailed",
    "PaymentInitiated",
    "PaymentMethod",
    "PaymentProcessed",
    "PaymentProcessedData",
    "PoisonEvent",
    "ProcessedMetadata",
    "Relay",
    "Service",
    "ServiceHarness",
    "Settings",
    "TransientError",
    "decode_event",
    "encode_event",
    "install_outbox",
    "publish",
    "run_service",
]

if TYPE_CHECKING:
    from payevents.consuming import Context, Service, run_service
    from payevents.contracts.codec import EventValidationError, decode_event, encode_event
    from payevents.contracts.events import (
        Amount,
        PaymentAuthorized,
        PaymentCaptured,
        PaymentEvent,
        PaymentFailed,
        PaymentInitiated,
        PaymentMethod,
        PaymentProcessed,
        PaymentProcessedData,
        ProcessedMetadata,
    )
    from payevents.errors import (
        ConfigError,
        ContractError,
        IdempotencyConflict,
        PayeventsError,
        PoisonEvent,
        TransientError,
    )
    from payevents.publishing import AppendResult, Relay, install_outbox, publish
    from payevents.settings import Settings
    from payevents.store.db import Migration
    from payevents.testing.harness import ServiceHarness


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'payevents' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
