"""Shared helpers of the outbox tests: valid lifecycle events, audit headers, one-shot appends."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy.engine import Engine

from payevents.contracts.channel import audit_headers
from payevents.contracts.events import (
    Amount,
    PaymentMethod,
    PaymentProcessed,
    PaymentProcessedData,
    ProcessedMetadata,
)
from payevents.runtime.outbox import AppendResult, append
from payevents.runtime.relay import Relay
from payevents.transport.base import Message, Transport


def processed_event(payment_id: str, amount: str = "125.50", currency: str = "USD",
                    event_id: str | None = None) -> PaymentProcessed:
    """A canonical PaymentProcessed 1.0.0 (every field the event page requires)."""
    now = datetime.now(UTC)
    return PaymentProcessed(
        eventId=event_id or str(uuid.uuid4()),
        eventType="PaymentProcessed",
        timestamp=now,
        version="1.0.0",
        data=PaymentProcessedData(
            paymentId=payment_id,
            amount=Amount(value=Decimal(amount), currency=currency),
            paymentMethod=PaymentMethod(type="card", last4="4242"),
            processedAt=datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
            transactionId=f"txn-{payment_id}",
            customerId="cust-1",
            gatewayReference=f"gw-{payment_id}",
            metadata=ProcessedMetadata(description="Order payment", orderId="ord-1"),
        ),
    )


def headers_for(key: str, payment_id: str) -> dict[str, str]:
    return audit_headers(correlation_id=payment_id, causation_id=f"cmd-{key}", source="payments",
                         producer="payevents/test", environment="dev", idempotency_key=key)


def append_one(engine: Engine, payment_id: str, key: str, **kw: str) -> AppendResult:
    with engine.begin() as conn:
        return append(conn, processed_event(payment_id, **kw), headers=headers_for(key, payment_id),
                      idempotency_key=key, env="dev")


def read_channel(transport: Transport, topic: str) -> list[Message]:
    """Every record of ``topic``, partition by partition, from offset 0 to the end."""
    out: list[Message] = []
    info = transport.describe(topic)
    for partition in range(info.partitions):
        offset = 0
        while True:
            batch = transport.read(topic, partition, offset, 1000)
            if not batch:
                break
            out.extend(batch)
            offset = batch[-1].offset + 1
    return out


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


@contextmanager
def relay_running(relay: Relay, join_s: float = 10) -> Iterator[threading.Thread]:
    """``relay.run`` in a thread of its own for the block; then stopped and joined (for up to ``join_s``)."""
    stop = threading.Event()
    worker = threading.Thread(target=relay.run, args=(stop,), daemon=True)
    worker.start()
    try:
        yield worker
    finally:
        stop.set()
        worker.join(join_s)
