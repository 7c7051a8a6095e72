"""The services. ``payments`` publishes; the four downstream services consume the channel.

Each downstream service is a package ``payevents.services.<name>`` whose ``service`` module defines
``SERVICE: ServiceDef`` (see :mod:`payevents.runtime.service`), registered under the entry point group
``payevents.services`` — the same way a third-party package registers its own services, so the runtime
imports no service by name. Public functions take a :class:`~payevents.settings.Settings` first and return
plain, JSON-serializable values.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from payevents.runtime.service import ServiceDef

#: the built-in consumer services (``payevents run all`` runs these and the relay)
CONSUMER_SERVICES: tuple[str, ...] = ("ledger", "invoices", "analytics", "notifications")
ENTRY_POINT_GROUP = "payevents.services"


def registered_services() -> dict[str, EntryPoint]:
    """Every service installed under the ``payevents.services`` entry point group, by name."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load_service(name: str) -> ServiceDef:
    """The ServiceDef of a registered service, e.g. ``load_service("ledger")``."""
    from payevents.consuming import as_definition
    from payevents.errors import ConfigError

    found = registered_services()
    if name not in found:
        raise ConfigError(f"service: {name!r} is not one of {', '.join(sorted(found))} (installed services)")
    return as_definition(found[name].load(), f"entry point {name!r}")
