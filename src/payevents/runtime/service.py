"""How a downstream service plugs into the consumer runtime.

A service is a name (its consumer group is ``payevents.{service}``, its database its own), its
migrations, and handlers by eventType. The runtime (:mod:`payevents.runtime.consumer`) decodes,
validates, normalizes legacy events, removes duplicates by eventId, applies "one business fact, one
effect" (:mod:`payevents.runtime.facts`: a second event for the same paymentId and eventType is absorbed or
dead-lettered, never handed to the handler), and calls the handler inside the batch's store transaction;
the handler only writes through the connection it is given.

A handler raises :class:`~payevents.errors.PoisonEvent` for an event it finds impossible (it goes to
the dead-letter channel); any database error is treated as transient (rollback, retry the batch).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy.engine import Connection

from payevents.contracts.codec import DecodedEvent
from payevents.settings import Settings
from payevents.store.db import Migration
from payevents.transport.base import Message

Handler = Callable[[Connection, DecodedEvent, Message], None]
#: Applies all new (not yet seen) events of one batch that have a handler, in offset order, inside the
#: batch's store transaction — e.g. with executemany. Its effects must equal calling ``handlers`` one event
#: at a time in the same order. The built-in ledger and invoices have one path: their per-event handler is
#: the batch handler with a batch of one, so this holds by construction.
BatchHandler = Callable[[Connection, Sequence[tuple[DecodedEvent, Message]]], None]


@dataclasses.dataclass(frozen=True)
class ServiceDef:
    name: str
    description: str
    migrations: Sequence[Migration]
    #: canonical eventType -> handler (legacy events arrive normalized, ``event.legacy`` is True)
    handlers: Mapping[str, Handler]
    #: the event page's words for what the service does (shown in the catalog)
    downstream_action: str = ""
    #: optional long-running companion started next to the consumer (e.g. the e-mail delivery worker);
    #: called as ``background(settings, stop)`` in its own thread, returns once ``stop`` is set
    background: Callable[[Settings, threading.Event], None] | None = None
    #: optional fast path for a whole batch. If it raises PoisonEvent (or any non-transient error), the
    #: runtime rolls back and re-applies that batch one event at a time through ``handlers``, which finds
    #: and dead-letters the culprit; so the per-event handlers stay the reference semantics.
    batch_handler: BatchHandler | None = None
    #: the service's store in a database of its own choosing (a SQLAlchemy URL); None: the platform's
    database_url: str | None = None
    #: one business fact, one effect (:mod:`payevents.runtime.facts`): a second event for the same
    #: (paymentId, eventType) is absorbed (same content) or dead-lettered (other content) before any handler
    #: runs. On for every service; only a test double that counts raw deliveries turns it off.
    one_effect_per_fact: bool = True
    #: the facts the service applied before the rule existed, read from its own tables (paymentId, eventType,
    #: first eventId, content — see :func:`payevents.runtime.facts.content_from`), oldest first; recorded once
    #: when the runtime first starts on an existing database
    fact_history: Callable[[Connection], Iterable[tuple[str, str, str, dict[str, Any]]]] | None = None
    #: every effect of the service's handlers is a row written with :func:`payevents.runtime.bulk.copy_rows` that a
    #: unique key of its table guards, and they take no locks: a handler that decided on a read which missed the rows
    #: of the batch just before would write a row the key refuses. Then, on PostgreSQL, the runtime reads a batch
    #: while the batch before is still committing (:mod:`payevents.runtime.writebehind`, ``ahead``), and applies it
    #: again should the key refuse it; a statement such a batch cannot run ahead turns it off for the process.
    insert_only: bool = False
    #: what the service needs of the settings (an SMTP URL it can use, …), checked before its worker starts and
    #: by :class:`~payevents.runtime.consumer.ConsumerRuntime`: raises ConfigError naming the setting and the rule
    check: Callable[[Settings], None] | None = None

    @property
    def group(self) -> str:
        return f"payevents.{self.name}"
