"""Your own service on ``payments.{env}.events``, with the guarantees the built-in services get.

    from payevents import Context, PaymentProcessed, Service

    velocity = Service("velocity", migrations=[...])

    @velocity.handles(PaymentProcessed)
    def on_processed(conn, event: PaymentProcessed, ctx: Context) -> None:
        conn.execute(...)          # your effects, in your database, in the batch's transaction

Handlers are keyed by event *class*, so a type checker sees what each one receives. The runtime decodes and
validates every record, normalizes the legacy envelope, enforces the channel's rules, removes duplicates by
eventId, calls the handlers inside one store transaction per batch together with the "seen" marks, then
commits offsets; a handler raises :class:`~payevents.errors.PoisonEvent` for an event it refuses (it goes
to the dead-letter channel with the reason) and any database error is retried with backoff.

Run it with ``payevents run package.module:velocity`` or :func:`run_service`; register it under the entry
point group ``payevents.services`` to run it by name, as the built-in services are.
"""

from __future__ import annotations

import dataclasses
import re
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy.engine import Connection

from payevents.contracts.codec import DecodedEvent
from payevents.contracts.events import (
    PaymentAuthorized,
    PaymentCaptured,
    PaymentFailed,
    PaymentInitiated,
    PaymentProcessed,
)
from payevents.errors import ConfigError
from payevents.runtime.registry import as_definition
from payevents.runtime.service import Handler, ServiceDef
from payevents.settings import DATABASE_URL_FORMS, Settings, database_url_problem
from payevents.store.db import Migration, migrations_problem
from payevents.transport.base import Message

E = TypeVar("E", PaymentInitiated, PaymentAuthorized, PaymentCaptured, PaymentProcessed, PaymentFailed)

_EVENT_CLASSES: dict[type[Any], str] = {
    PaymentInitiated: "PaymentInitiated",
    PaymentAuthorized: "PaymentAuthorized",
    PaymentCaptured: "PaymentCaptured",
    PaymentProcessed: "PaymentProcessed",
    PaymentFailed: "PaymentFailed",
}
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,47}$")


@dataclasses.dataclass(frozen=True, slots=True)
class Context:
    """Where an event came from: its record on the channel and what decoding found."""

    event_id: str
    payment_id: str
    #: True when normalized from the channel page's older PAYMENT_PROCESSED envelope
    legacy: bool
    #: fields the event carried beyond the model (e.g. a legacy envelope's metadata.merchantId)
    extras: dict[str, Any]
    headers: dict[str, str]
    topic: str
    partition: int
    offset: int

    @classmethod
    def of(cls, decoded: DecodedEvent, message: Message) -> Context:
        headers = {k: v.decode("utf-8", "replace") for k, v in message.headers}
        return cls(event_id=decoded.event_id, payment_id=decoded.payment_id, legacy=decoded.legacy,
                   extras=decoded.extras, headers=headers, topic=message.topic, partition=message.partition,
                   offset=message.offset)


class Service:
    """A consumer service: a name (its consumer group is ``payevents.{name}``), its migrations, its handlers.

    ``database_url`` puts its store in your database (a SQLAlchemy URL); by default it is the platform's
    (``PAYEVENTS_DATABASE_URL``: its own PostgreSQL schema, or its own SQLite file in the data dir).
    """

    def __init__(self, name: str, *, description: str = "", migrations: Sequence[Migration] = (),
                 database_url: str | None = None, downstream_action: str = "",
                 background: Callable[[Settings, threading.Event], None] | None = None) -> None:
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(f"service: {name!r} must be 1-48 characters of a-z, 0-9 and _, starting with a letter")
        if database_url is not None and (problem := database_url_problem(database_url)) is not None:
            raise ConfigError(f"service {name}: database_url: {problem} ({DATABASE_URL_FORMS})")
        if (problem := migrations_problem(list(migrations))) is not None:
            raise ConfigError(f"service {name}: {problem}")
        self.name = name
        self.description = description or name
        self.migrations = tuple(migrations)
        self.database_url = database_url
        self.downstream_action = downstream_action
        self.background = background
        self._handlers: dict[str, Handler] = {}

    def handles(self, event_class: type[E]) -> Callable[[Callable[[Connection, E, Context], None]],
                                                        Callable[[Connection, E, Context], None]]:
        """Register the decorated function for every event of ``event_class`` (one handler per class)."""
        try:
            event_type = _EVENT_CLASSES[event_class]
        except KeyError:
            raise ConfigError(f"handles: {event_class!r} is not a lifecycle event class") from None
        if event_type in self._handlers:
            raise ConfigError(f"handles: {self.name} already has a handler for {event_type}")

        def register(fn: Callable[[Connection, E, Context], None]) -> Callable[[Connection, E, Context], None]:
            def handler(conn: Connection, decoded: DecodedEvent, message: Message) -> None:
                fn(conn, decoded.event, Context.of(decoded, message))  # type: ignore[arg-type]

            handler.__name__ = getattr(fn, "__name__", "handler")
            self._handlers[event_type] = handler
            return fn

        return register

    @property
    def definition(self) -> ServiceDef:
        """What the consumer runtime runs."""
        if not self._handlers:
            raise ConfigError(f"service {self.name}: no handler registered (use @service.handles(EventClass))")
        return ServiceDef(name=self.name, description=self.description, migrations=self.migrations,
                          handlers=dict(self._handlers), downstream_action=self.downstream_action,
                          background=self.background, database_url=self.database_url)

    def __repr__(self) -> str:
        return f"Service({self.name!r}, handles={sorted(self._handlers)})"


def run_service(settings: Settings, service: Service | ServiceDef, *, stop: threading.Event | None = None,
                max_batch: int = 500, instance: int = 0) -> None:
    """Consume until ``stop`` is set (or forever): the same runtime ``payevents run`` uses. ``instance``: which
    member of the service's group this is on this host, when several run on one (a member that died is known
    by its next start, which then watches its first records for one that kills it)."""
    from payevents.runtime.consumer import ConsumerRuntime

    with ConsumerRuntime(settings, as_definition(service, repr(service)), max_batch=max_batch,
                         instance=instance) as runtime:
        runtime.run(stop or threading.Event())
