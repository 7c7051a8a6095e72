"""The events every suite and its baseline share: N valid PaymentProcessed records, built once per run."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from payevents.contracts.channel import (
    CONTENT_TYPE_JSON,
    H_CONTENT_TYPE,
    H_EVENT_ID,
    H_EVENT_TYPE,
    H_VERSION,
    audit_headers,
    partition_key,
    topic_for,
)
from payevents.contracts.events import (
    Amount,
    PaymentMethod,
    PaymentProcessed,
    PaymentProcessedData,
    ProcessedMetadata,
)
from payevents.contracts.ids import uuid7
from payevents.services.payments.events import event_id
from payevents.transport.base import Headers, Record

_NS = uuid.UUID("5d0b7c3e-8a43-4b39-9a55-0c0b3a1e6f11")
_T0 = datetime(2025, 12, 11, 10, 30, tzinfo=UTC)
_T0_MS = int(_T0.timestamp()) * 1000
CURRENCIES = (("USD", 2), ("EUR", 2), ("JPY", 0), ("GBP", 2))


@dataclasses.dataclass(frozen=True, slots=True)
class BenchEvent:
    key: bytes
    value: bytes
    headers: Headers


def sample_event(i: int, run: str = "bench") -> PaymentProcessed:
    """A realistic PaymentProcessed (the event page's shape); every second one names an invoice."""
    currency, digits = CURRENCIES[i % len(CURRENCIES)]
    minor = 1000 + (i * 7919) % 500_000
    value = Decimal(minor).scaleb(-digits)
    at = _T0 + timedelta(milliseconds=i)
    # ids as the platform's own writer makes them (payevents.contracts.ids): a payment id with the payment's time
    # first (uuid7, its random bits from the run and i, so a run's i-th event is the same each time it is made)
    # and the eventId our producer derives from it
    pid = f"pay_{uuid7(at_ms=_T0_MS + i, entropy=uuid.uuid5(_NS, f'{run}/{i}').bytes[:10])}"
    extra = {"invoiceId": f"INV-{run}-{i // 2:08d}"} if i % 2 == 0 else {}
    return PaymentProcessed(
        eventId=event_id(pid, "PaymentProcessed"),
        eventType="PaymentProcessed",
        timestamp=at,
        version="1.0.0",
        data=PaymentProcessedData(
            paymentId=pid,
            transactionId=f"txn_{run}_{i:08d}",
            customerId=f"cus_{i % 997:04d}",
            amount=Amount(value=value, currency=currency),
            paymentMethod=PaymentMethod(type="credit_card", last4=f"{4242 + i % 5000:04d}"[-4:]),
            gatewayReference=f"ch_sim_{i:010d}",
            processedAt=at,
            metadata=ProcessedMetadata(orderId=f"ORD-{i:08d}", description=f"Payment for Order #{i}"),
            **extra,
        ),
    )


def run_id() -> str:
    """A run's id for the bench's payment, transaction, invoice and order ids: hex digits like a real id, between
    two letters. A bare hex id of digits only (``41111111``) joined the ids' sequence numbers into a digit run the
    card guard rightly takes for a card number now and then (``pay_41111111_00001234``), and every event of that
    run was poison; digits glued to a letter on both sides are part of an id."""
    import secrets

    letters = "abcdef"
    return f"{secrets.choice(letters)}{uuid.uuid4().hex[:6]}{secrets.choice(letters)}"


def make_events(n: int, env: str = "dev", run: str | None = None) -> list[BenchEvent]:
    """N encoded PaymentProcessed events with the channel's transport and audit headers."""
    from payevents.contracts.codec import encode_event

    run = run or run_id()
    out: list[BenchEvent] = []
    for i in range(n):
        ev = sample_event(i, run)
        hdrs = {
            H_EVENT_TYPE: ev.eventType,
            H_VERSION: ev.version,
            H_EVENT_ID: ev.eventId,
            H_CONTENT_TYPE: CONTENT_TYPE_JSON,
            **audit_headers(
                correlation_id=ev.data.paymentId,
                causation_id=ev.eventId,
                source="payments",
                producer="payevents-bench",
                environment=env,
                idempotency_key=f"bench:{ev.data.paymentId}",
            ),
        }
        out.append(
            BenchEvent(
                key=partition_key(ev.data.paymentId),
                value=encode_event(ev),
                headers=tuple((k, v.encode()) for k, v in hdrs.items()),
            )
        )
    return out


def to_records(events: list[BenchEvent], env: str = "dev") -> list[Record]:
    topic = topic_for(env)
    return [Record(topic=topic, value=e.value, key=e.key, headers=e.headers) for e in events]
