"""Helpers for the analytics and notifications tests: lifecycle events built from the contract
models, and a way to feed them to a service's handlers the way the consumer runtime does
(inside one store transaction per batch)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from payevents.contracts.codec import DecodedEvent
from payevents.contracts.events import (
    Amount,
    PaymentAuthorized,
    PaymentCaptured,
    PaymentEvent,
    PaymentFailed,
    PaymentInitiated,
    PaymentMethod,
    PaymentProcessed,
)
from payevents.contracts.events import PaymentProcessedData as _PData
from payevents.contracts.events import ProcessedMetadata as _PMeta
from payevents.runtime.service import ServiceDef
from payevents.settings import Settings
from payevents.store.db import connect
from payevents.transport.base import Message

T0 = datetime(2025, 12, 11, 10, 30, tzinfo=UTC)


def _eid() -> str:
    return str(uuid.uuid4())


def processed(
    payment_id: str,
    value: str,
    currency: str = "USD",
    *,
    customer_id: str | None = "cus_johndoe",
    at: datetime = T0,
    method: str = "credit_card",
    last4: str = "4242",
    invoice_id: str | None = None,
    order_id: str | None = None,
    legacy: bool = False,
    merchant_id: str | None = None,
    event_id: str | None = None,
) -> DecodedEvent:
    """A PaymentProcessed 1.0.0 (or a normalized legacy one: no customerId etc., ``legacy=True``)."""
    data: dict[str, Any] = {
        "paymentId": payment_id,
        "amount": Amount(value=Decimal(value), currency=currency),
        "paymentMethod": PaymentMethod(type=method, last4=last4),
        "processedAt": at,
    }
    if not legacy:
        data.update(transactionId=f"txn_{payment_id}", gatewayReference=f"ch_{payment_id}")
        if customer_id is not None:
            data["customerId"] = customer_id
        if invoice_id is not None:
            data["invoiceId"] = invoice_id
        meta: dict[str, Any] = {"description": f"Payment {payment_id}"}
        if order_id is not None:
            meta["orderId"] = order_id
        data["metadata"] = _PMeta(**meta)
    elif order_id is not None:
        data["metadata"] = _PMeta(orderId=order_id)
    event = PaymentProcessed(eventId=event_id or _eid(), eventType="PaymentProcessed", timestamp=at,
                             version="1.0.0", data=_PData(**data))
    extras = {"merchantId": merchant_id} if legacy and merchant_id else {}
    return DecodedEvent(event=event, legacy=legacy, extras=extras)


def lifecycle(
    payment_id: str,
    value: str,
    currency: str = "USD",
    *,
    at: datetime = T0,
    merchant_id: str | None = "MERCH-1",
    method: str = "credit_card",
    customer_id: str = "cus_johndoe",
    auth_s: float = 2.0,
    capture_s: float = 3.0,
    processed_s: float = 0.5,
    fail: tuple[str, str] | None = None,
) -> list[DecodedEvent]:
    """A payment's events in order: initiated, authorized, captured, processed — or failed after
    authorization when ``fail=(failureCode, failureReason)``."""
    amount = Amount(value=Decimal(value), currency=currency)
    pm = PaymentMethod(type=method, last4="4242")
    merchant: dict[str, Any] = {"merchantId": merchant_id} if merchant_id else {}
    t_auth = at + timedelta(seconds=auth_s)
    t_cap = t_auth + timedelta(seconds=capture_s)
    t_proc = t_cap + timedelta(seconds=processed_s)
    from payevents.contracts.events import (
        PaymentAuthorizedData,
        PaymentCapturedData,
        PaymentFailedData,
        PaymentInitiatedData,
    )

    out: list[PaymentEvent] = [
        PaymentInitiated(eventId=_eid(), eventType="PaymentInitiated", timestamp=at, version="1.0.0",
                         data=PaymentInitiatedData(paymentId=payment_id, customerId=customer_id, amount=amount,
                                                   paymentMethod=pm, initiatedAt=at, **merchant)),
        PaymentAuthorized(eventId=_eid(), eventType="PaymentAuthorized", timestamp=t_auth, version="1.0.0",
                          data=PaymentAuthorizedData(paymentId=payment_id, customerId=customer_id, amount=amount,
                                                     paymentMethod=pm, authorizationCode="AUTH1",
                                                     gatewayReference=f"ch_{payment_id}", authorizedAt=t_auth,
                                                     **merchant)),
    ]
    if fail is not None:
        out.append(PaymentFailed(eventId=_eid(), eventType="PaymentFailed", timestamp=t_cap, version="1.0.0",
                                 data=PaymentFailedData(paymentId=payment_id, customerId=customer_id, amount=amount,
                                                        failureCode=fail[0], failureReason=fail[1],  # type: ignore[arg-type]
                                                        failedStage="authorized", failedAt=t_cap, **merchant)))
        return [DecodedEvent(event=e) for e in out]
    out.append(PaymentCaptured(eventId=_eid(), eventType="PaymentCaptured", timestamp=t_cap, version="1.0.0",
                               data=PaymentCapturedData(paymentId=payment_id, customerId=customer_id, amount=amount,
                                                        captureId="CAP1", gatewayReference=f"ch_{payment_id}",
                                                        capturedAt=t_cap, **merchant)))
    decoded = [DecodedEvent(event=e) for e in out]
    decoded.append(processed(payment_id, value, currency, customer_id=customer_id, at=t_proc, method=method))
    return decoded


def message_for(decoded: DecodedEvent, offset: int = 0) -> Message:
    """A consumed-message envelope for a handler call (the handlers only read audit headers)."""
    return Message(topic="payments.dev.events", partition=0, offset=offset,
                   key=decoded.payment_id.encode(), value=None,
                   headers=(("eventId", decoded.event_id.encode()),), timestamp_ms=0)


def feed(settings: Settings, service: ServiceDef, events: Iterable[DecodedEvent], batch: int = 50) -> int:
    """Call ``service``'s handlers like the runtime: one store transaction per batch. Returns events fed.

    Unlike the runtime this does NOT remove duplicates by eventId, so the handlers' own replay safety
    is what is tested."""
    engine = connect(settings, service.name, service.migrations)
    items: Sequence[DecodedEvent] = list(events)
    for start in range(0, len(items), batch):
        with engine.begin() as conn:
            for i, d in enumerate(items[start:start + batch]):
                service.handlers[d.event_type](conn, d, message_for(d, start + i))
    return len(items)



def feed_like_runtime(settings: Settings, service: ServiceDef, events: Sequence[DecodedEvent], batch: int = 50,
                      *, use_batch: bool) -> list[str]:
    """Apply ``events`` in batches the way the consumer runtime does after its eventId dedup, through
    ``service.batch_handler`` (``use_batch``) or the per-event handlers: one transaction per batch; when
    the batch handler raises, roll back and re-apply per event; an event whose handler raises PoisonEvent
    is left out (dead-lettered) and the batch re-applied without it. Duplicates are NOT removed.

    Returns the eventIds left out as poison, in order."""
    from payevents.errors import PoisonEvent

    engine = connect(settings, service.name, service.migrations)
    poison: list[str] = []
    for start in range(0, len(events), batch):
        items = [(d, message_for(d, start + i)) for i, d in enumerate(events[start:start + batch])
                 if d.event_type in service.handlers]
        if use_batch and items:
            assert service.batch_handler is not None
            try:
                with engine.begin() as conn:
                    service.batch_handler(conn, items)
                continue
            except PoisonEvent:
                pass  # rolled back: per event finds the culprit
        while True:
            try:
                with engine.begin() as conn:
                    for i, (d, m) in enumerate(items):
                        try:
                            service.handlers[d.event_type](conn, d, m)
                        except PoisonEvent:
                            poison.append(d.event_id)
                            del items[i]
                            raise
                break
            except PoisonEvent:
                continue
    return poison


def dump_tables(settings: Settings, service: ServiceDef, tables: Mapping[str, Sequence[str]]) -> dict[str, list[Any]]:
    """Every row of each table (only the given columns), sorted: for comparing two stores."""
    import sqlalchemy as sa

    engine = connect(settings, service.name, service.migrations)
    with engine.connect() as conn:
        return {t: sorted(tuple(r) for r in conn.execute(sa.text(f"SELECT {', '.join(cols)} FROM {t}")))
                for t, cols in tables.items()}


def consume_all(settings: Settings, service: ServiceDef, max_batch: int = 50) -> Any:
    """Run a ConsumerRuntime over the channel until it is idle; returns its stats."""
    from payevents.runtime.consumer import ConsumerRuntime

    with ConsumerRuntime(settings, service, max_batch=max_batch, poll_timeout=0.1) as rt:
        idle = 0
        for _ in range(2000):
            r = rt.step()
            idle = idle + 1 if r.consumed == 0 and not r.waiting and not r.retried else 0
            if idle >= 3:
                return rt.stats
    raise AssertionError("consumer did not become idle")

# -- a live SMTP server on loopback (aiosmtpd) -----------------------------------------------------


class SmtpSink:
    """An aiosmtpd server on a fixed free loopback port that can be stopped and started again.

    Recipients starting with ``reject`` get 550 (permanent), ``busy`` get 451 (transient)."""

    def __init__(self, port: int | None = None, **controller_kw: Any) -> None:
        import socket
        import threading

        if port is None:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
        self.port = port
        self.messages: list[Any] = []  # email.message.EmailMessage, with .rcpt_tos set
        self._lock = threading.Lock()
        self._controller: Any = None
        self._kw = controller_kw

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}?timeout=5"

    def start(self) -> SmtpSink:
        from aiosmtpd.controller import Controller

        self._controller = Controller(self, hostname="127.0.0.1", port=self.port, **self._kw)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any) -> str:
        if address.startswith("reject"):
            return "550 5.1.1 no such mailbox"
        if address.startswith("busy"):
            return "451 4.2.1 mailbox busy, try later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        import email
        import email.policy

        msg = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
        msg.rcpt_tos = list(envelope.rcpt_tos)  # type: ignore[attr-defined]
        msg.mail_from = envelope.mail_from  # type: ignore[attr-defined]
        with self._lock:
            self.messages.append(msg)
        return "250 Message accepted"

    def received(self) -> list[Any]:
        with self._lock:
            return list(self.messages)


def publish(settings: Settings, events: Sequence[DecodedEvent | bytes], keys: Sequence[str] | None = None) -> None:
    """Publish events onto payments.{env}.events through the configured transport (key = paymentId).

    ``bytes`` items are sent as they are (e.g. a legacy envelope); pass their keys in ``keys``."""
    from payevents.contracts.channel import dead_letter_topic_for, topic_for
    from payevents.contracts.codec import encode_event
    from payevents.transport import open_transport
    from payevents.transport.base import Record

    topic = topic_for(settings.env)
    records = []
    for i, e in enumerate(events):
        if isinstance(e, bytes):
            assert keys is not None
            records.append(Record(topic=topic, value=e, key=keys[i].encode()))
        else:
            records.append(Record(topic=topic, value=encode_event(e.event), key=e.payment_id.encode()))
    t = open_transport(settings)
    try:
        t.create_topics([topic, dead_letter_topic_for(settings.env)], settings.partitions)
        p = t.producer()
        try:
            p.send(records)
        finally:
            p.close()
    finally:
        t.close()


def legacy_envelope(payment_id: str, value: str, currency: str = "USD", merchant_id: str = "MERCH-456") -> bytes:
    """A PAYMENT_PROCESSED 1.0 record as the channel page's sample code publishes it."""
    import json

    return json.dumps({
        "eventType": "PAYMENT_PROCESSED",
        "timestamp": "2025-12-11T10:30:00",
        "version": "1.0",
        "payload": {
            "paymentId": payment_id, "orderId": f"ORD-{payment_id}",
            "amount": {"value": float(value), "currency": currency}, "status": "SUCCESS",
            "paymentMethod": {"type": "CREDIT_CARD", "last4": "4242", "expiryMonth": "12", "expiryYear": "2025",
                              "network": "VISA"},
            "transactionDetails": {"processorId": "stripe_123xyz", "authorizationCode": "AUTH123",
                                   "captureId": "CAP456"},
        },
        "metadata": {"correlationId": "corr-123-abc", "merchantId": merchant_id, "source": "payment_service",
                     "environment": "dev", "idempotencyKey": f"{payment_id}-2025-12-11-{value}"},
    }).encode()


@contextmanager
def driver_statements() -> Iterator[list[tuple[str, Any, bool]]]:
    """Every statement a driver runs meanwhile, in any engine of this process: (SQL, parameters, executemany)."""
    seen: list[tuple[str, Any, bool]] = []

    def before(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, executemany: bool) -> None:
        seen.append((statement, parameters, executemany))

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", before)
