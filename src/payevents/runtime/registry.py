"""How the runtime finds services: the ``payevents.services`` entry point group, or an import path.

The built-in services register there exactly as a third-party package does, so the runtime imports no
service by name. A registered object is a :class:`~payevents.runtime.service.ServiceDef` or anything with a
``definition`` property returning one (a :class:`payevents.Service`).
"""

from __future__ import annotations

import importlib
from importlib.metadata import EntryPoint, entry_points

from payevents.errors import ConfigError
from payevents.runtime.service import ServiceDef

ENTRY_POINT_GROUP = "payevents.services"


def registered_services() -> dict[str, EntryPoint]:
    """Every installed service by name: payevents' own first (in the order it declares them), then the
    others by name."""
    eps = list(entry_points(group=ENTRY_POINT_GROUP))
    own = [ep for ep in eps if ep.dist is not None and ep.dist.name == "payevents"]
    others = sorted((ep for ep in eps if ep not in own), key=lambda ep: ep.name)
    return {ep.name: ep for ep in own + others}


def as_definition(obj: object, where: str) -> ServiceDef:
    """A ServiceDef from a ServiceDef or an object whose ``definition`` is one (a payevents Service)."""
    if isinstance(obj, ServiceDef):
        return obj
    definition = getattr(obj, "definition", None)
    if isinstance(definition, ServiceDef):
        return definition
    raise ConfigError(f"service: {where} is a {type(obj).__name__}, not a payevents Service")


def load_service(name: str) -> ServiceDef:
    """A registered service by name, e.g. ``load_service("ledger")``."""
    found = registered_services()
    if name not in found:
        raise ConfigError(f"service: {name!r} is not one of {', '.join(found)} (installed services)")
    return as_definition(found[name].load(), f"entry point {name!r}")


def resolve_service(spec: str) -> ServiceDef:
    """A service by its registered name (``ledger``) or import path (``package.module:ATTR``)."""
    if ":" not in spec:
        return load_service(spec)
    module_name, _, attr = spec.partition(":")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"service: cannot load {spec!r} ({exc})") from None
    definition = as_definition(obj, repr(spec))
    # its consumer group and store are named after it: under an installed service's name it would share that
    # one's group (each reading part of the partitions, so each missing the rest) and its database
    installed = registered_services().get(definition.name)
    if installed is not None and (loaded := installed.load()) is not obj and as_definition(
            loaded, installed.name) is not definition:
        raise ConfigError(f"service: {definition.name!r} of {spec} is the name of the installed service "
                          f"{installed.name} ({installed.value}), whose consumer group and store it would share;"
                          " give it a name of its own")
    return definition
