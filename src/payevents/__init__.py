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

#: everything above, importable as ``from payevents import X``
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # the same names for type checkers (``X as X``: re-exported)
    from payevents.consuming import Context as Context
    from payevents.consuming import Service as Service
    from payevents.consuming import run_service as run_service
    from payevents.contracts.codec import EventValidationError as EventValidationError
    from payevents.contracts.codec import decode_event as decode_event
    from payevents.contracts.codec import encode_event as encode_event
    from payevents.contracts.events import *  # noqa: F403  (the event models: events.__all__)
    from payevents.contracts.events import PaymentProcessedData as PaymentProcessedData
    from payevents.contracts.events import ProcessedMetadata as ProcessedMetadata
    from payevents.errors import ConfigError as ConfigError
    from payevents.errors import ContractError as ContractError
    from payevents.errors import IdempotencyConflict as IdempotencyConflict
    from payevents.errors import PayeventsError as PayeventsError
    from payevents.errors import PoisonEvent as PoisonEvent
    from payevents.errors import TransientError as TransientError
    from payevents.publishing import AppendResult as AppendResult
    from payevents.publishing import Relay as Relay
    from payevents.publishing import install_outbox as install_outbox
    from payevents.publishing import publish as publish
    from payevents.settings import Settings as Settings
    from payevents.store.db import Migration as Migration
    from payevents.testing.harness import ServiceHarness as ServiceHarness


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'payevents' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
