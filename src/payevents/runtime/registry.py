"""Where services are found: the ``payevents.services`` entry point group (built-in and third-party alike).

It lives in the runtime layer so that the runtime (``payevents run``) finds services without importing the
services layer; :mod:`payevents.services` re-exports these names.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

from payevents.errors import ConfigError
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

    found = registered_services()
    if name not in found:
        raise ConfigError(f"service: {name!r} is not one of {', '.join(sorted(found))} (installed services)")
    return as_definition(found[name].load(), f"entry point {name!r}")
