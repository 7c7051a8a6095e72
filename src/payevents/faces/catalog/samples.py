"""The channel page's publishing examples, generated from the current schema's example event."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from payevents.contracts import channel

_INDENT = "    "
#: example values replaced by live expressions in the generated code
_LIVE_KEYS = {"eventId": "event_id", "timestamp": "now"}
_TIME_SUFFIXES = ("At",)


def _literal(value: Any, level: int, key: str | None = None) -> str:
    if key in _LIVE_KEYS and level == 1:
        return _LIVE_KEYS[key]
    if key is not None and key.endswith(_TIME_SUFFIXES) and isinstance(value, str | datetime):
        return "now"
    if key == "paymentId" and level == 2:
        return "payment_id"
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        pad = _INDENT * (level + 1)
        items = [f"{pad}{k!r}: {_literal(v, level + 1, str(k))}," for k, v in value.items()]
        return "{\n" + "\n".join(items) + "\n" + _INDENT * level + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_literal(v, level + 1) for v in value) + "]"
    if isinstance(value, Decimal):
        return f'Decimal("{value}")'
    if isinstance(value, float):  # never expected: contracts parse amounts as Decimal
        return f'Decimal("{value!r}")'
    if isinstance(value, datetime | date):
        return repr(value.isoformat())
    return repr(value)


def kafka_sample(event: Mapping[str, Any], partitions: int) -> str:
    """Python that publishes ``event`` (with a fresh id and time) using only confluent-kafka and msgspec."""
    event_type = str(event.get("eventType", "PaymentProcessed"))
    version = str(event.get("version", "1.0.0"))
    payment_id = str(event.get("data", {}).get("paymentId", "pay_1234567890"))
    options = ", ".join(repr(e.value) for e in channel.Env)
    h = channel
    return f'''"""Publish one {event_type} {version} to {channel.ADDRESS_TEMPLATE} with a plain Kafka client."""
import os
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import msgspec
from confluent_kafka import Producer

# The channel's env parameter: {", ".join(e.value for e in channel.Env)}. It has no default.
env = os.environ.get("PAYEVENTS_ENV", "")
if env not in ({options}):
    raise SystemExit(f"env: {{env!r}} is not one of {", ".join(e.value for e in channel.Env)}")
topic = f"payments.{{env}}.events"  # {partitions} partitions

producer = Producer({{
    "bootstrap.servers": os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "localhost:9092"),
    "enable.idempotence": True,  # broker-side de-duplication of producer retries
    "acks": "all",
    "partitioner": "murmur2_random",  # the Java client's partitioner: one paymentId, one partition
}})

payment_id = {payment_id!r}
# One event per idempotency key: a retry derives the same eventId, and consumers apply it once.
idempotency_key = f"{{payment_id}}:{event_type}"
event_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"payevents:{{idempotency_key}}"))
now = datetime.now(UTC).isoformat()  # RFC 3339 with offset

event = {_literal(dict(event), 0)}

headers = {{
    "{h.H_EVENT_TYPE}": "{event_type}",
    "{h.H_VERSION}": "{version}",
    "{h.H_EVENT_ID}": event_id,
    "{h.H_CONTENT_TYPE}": "{h.CONTENT_TYPE_JSON}",
    # audit trail
    "{h.H_CORRELATION_ID}": payment_id,
    "{h.H_CAUSATION_ID}": event_id,
    "{h.H_SOURCE}": "payments",
    "{h.H_PRODUCER}": "example-producer/1.0",
    "{h.H_ENVIRONMENT}": env,
    "{h.H_IDEMPOTENCY_KEY}": idempotency_key,
}}

# Amounts are JSON numbers written digit for digit (Decimal, never float).
value = msgspec.json.Encoder(decimal_format="number").encode(event)
# Key rule: key = data.paymentId, so one payment's events are processed in order.
producer.produce(topic, key=payment_id.encode("utf-8"), value=value, headers=list(headers.items()))
if producer.flush(10) != 0:
    raise SystemExit("not acknowledged by the broker within 10 s")
'''


def payevents_sample(event: Mapping[str, Any]) -> str:
    """Python that takes a payment through its lifecycle with payevents' Payments service, using the
    example event's data; the completion writes PaymentProcessed to the outbox and the relay publishes it."""
    data = dict(event.get("data", {}))
    amount = data.get("amount", {})
    method = data.get("paymentMethod", {})
    meta = data.get("metadata", {}) or {}
    order = meta.get("orderId") or "ORD-12345"
    args = {
        "customer_id": data.get("customerId", "cus_johndoe"),
        "amount": str(amount.get("value", "99.99")),
        "currency": amount.get("currency", "USD"),
        "description": meta.get("description", "Payment for Order #12345"),
        "method_type": method.get("type", "credit_card"),
        "last4": method.get("last4", "4242"),
    }
    if data.get("invoiceId"):
        args["invoice_id"] = data["invoiceId"]
    if meta.get("orderId"):
        args["order_id"] = meta["orderId"]
    lines = "\n".join(f"    {k}={v!r}," for k, v in args.items())
    return f'''"""Take a payment through its lifecycle with payevents: each step records the payment and its event
in one transaction (the outbox); the relay publishes them to payments.{{env}}.events, keyed by paymentId."""
from payevents.runtime.relay import Relay
from payevents.services import payments
from payevents.settings import Settings

# PAYEVENTS_ENV=dev|sit|prod (required: the channel has no default env),
# PAYEVENTS_BROKER=embedded (default) or kafka://host:port, PAYEVENTS_DATABASE_URL for PostgreSQL.
settings = Settings.from_env()

key = "checkout-{order}"  # a retried command with the same key returns the first result, emits nothing
p = payments.create(
    settings,
{lines}
    idempotency_key=f"{{key}}:create",
)  # -> PaymentInitiated
payments.authorize(settings, p.payment_id, idempotency_key=f"{{key}}:authorize")  # -> PaymentAuthorized
payments.capture(settings, p.payment_id, idempotency_key=f"{{key}}:capture")  # -> PaymentCaptured
p = payments.complete(settings, p.payment_id, idempotency_key=f"{{key}}:complete")  # -> PaymentProcessed

# A deployment runs `payevents relay` all the time; here one pass publishes what is pending.
with Relay(settings) as relay:
    relay.ensure_topics()
    relay.publish_pending()
print(p.payment_id, p.state, [e.event_type for e in p.events])
'''
