"""The services. ``payments`` publishes; the four downstream services consume the channel.

Each downstream service is a package ``payevents.services.<name>`` whose ``service`` module defines
``SERVICE: ServiceDef`` (see :mod:`payevents.runtime.service`). Its public functions take a
:class:`~payevents.settings.Settings` first and return plain, JSON-serializable values.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from payevents.runtime.service import ServiceDef

CONSUMER_SERVICES: tuple[str, ...] = ("ledger", "invoices", "analytics", "notifications")


def load_service(name: str) -> ServiceDef:
    """The ServiceDef of a downstream service, e.g. ``load_service("ledger")``."""
    from payevents.errors import ConfigError

    if name not in CONSUMER_SERVICES:
        raise ConfigError(f"service: {name!r} is not one of {', '.join(CONSUMER_SERVICES)}")
    module = importlib.import_module(f"payevents.services.{name}.service")
    return module.SERVICE  # type: ignore[no-any-return]
