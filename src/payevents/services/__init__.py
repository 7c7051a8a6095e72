"""The services. ``payments`` publishes; the four downstream services consume the channel.

Each downstream service is a package ``payevents.services.<name>`` whose ``service`` module defines
``SERVICE: ServiceDef`` (see :mod:`payevents.runtime.service`), registered under the entry point group
``payevents.services`` — the same way a third-party package registers its own services, so the runtime
imports no service by name. Public functions take a :class:`~payevents.settings.Settings` first and return
plain, JSON-serializable values.
"""

from __future__ import annotations

from payevents.runtime.registry import CONSUMER_SERVICES, ENTRY_POINT_GROUP, load_service, registered_services

__all__ = ["CONSUMER_SERVICES", "ENTRY_POINT_GROUP", "load_service", "registered_services"]
