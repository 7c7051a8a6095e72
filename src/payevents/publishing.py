"""Publish lifecycle events from your own service, inside your own database transaction.

    from payevents import PaymentProcessed, install_outbox, publish, Relay

    install_outbox(engine)                      # once: the outbox tables in *your* database
    with engine.begin() as conn:                # your transaction
        conn.execute(...)                       # your own write (e.g. the payment row)
        publish(conn, event, idempotency_key="pay_123:complete", env="prod", source="checkout")
    Relay(settings, engine=engine).run(stop)    # puts the outbox on payments.{env}.events

The event is validated on emit (its model and JSON Schema, the card guard); the audit trail travels as
headers. The same idempotency key with the same content returns the first event (``created=False``,
nothing written); with other content it raises :class:`~payevents.errors.IdempotencyConflict`. The event
is published only if your transaction commits, exactly once as far as consumers can tell (they remove
duplicates by eventId).
"""

from __future__ import annotations

from sqlalchemy.engine import Connection, Engine

from payevents.contracts import channel
from payevents.contracts.channel import Env
from payevents.contracts.events import PaymentEvent
from payevents.runtime.outbox import OUTBOX_MIGRATIONS, AppendResult, append
from payevents.runtime.relay import Relay
from payevents.store.db import migrate

__all__ = ["AppendResult", "Relay", "install_outbox", "publish"]

#: the outbox's migrations are recorded under this name (the Relay applies them under the same one)
OUTBOX_COMPONENT = "payments"


def install_outbox(engine: Engine) -> None:
    """Create (or upgrade) the outbox tables in ``engine``'s database; safe to call at every start."""
    migrate(engine, OUTBOX_COMPONENT, OUTBOX_MIGRATIONS)


def publish(conn: Connection, event: PaymentEvent, *, idempotency_key: str, env: Env | str, source: str,
            producer: str = "payevents", correlation_id: str | None = None,
            causation_id: str | None = None) -> AppendResult:
    """Append ``event`` to the outbox in the caller's transaction (``conn`` must be in one).

    ``correlation_id`` defaults to the payment id (one conversation per payment) and ``causation_id`` to the
    event's own id (it was caused by no other event)."""
    headers = channel.audit_headers(
        correlation_id=correlation_id or event.data.paymentId,
        causation_id=causation_id or event.eventId,
        source=source,
        producer=producer,
        environment=env,
        idempotency_key=idempotency_key,
    )
    return append(conn, event, headers=headers, idempotency_key=idempotency_key, env=env)
