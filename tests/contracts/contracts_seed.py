"""The seed pages' examples, verbatim (shared/seeds/001: example payload; 000: the publishing code sample)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

SEED_EXAMPLE_TEXT = """{
"eventId": "e7f8a9b0-c1d2-3e4f-5a6b-7c8d9e0f1a2b",
"eventType": "PaymentProcessed",
"timestamp": "2025-12-11T10:30:00Z",
"version": "1.0.0",
"data": {
"paymentId": "pay_1234567890",
"transactionId": "txn_abcdef123456",
"customerId": "cus_johndoe",
"amount": {
"value": 99.99,
"currency": "USD"
},
"paymentMethod": {
"type": "credit_card",
"last4": "4242"
},
"invoiceId": "INV-2025-000123",
"gatewayReference": "ch_stripe_abc123",
"processedAt": "2025-12-11T10:30:00Z",
"metadata": {
"orderId": "ORD-12345",
"description": "Payment for Order #12345"
}
}
}"""

#: the fixed stand-in for datetime.utcnow() (a naive datetime, as utcnow() returns)
FIXED_UTCNOW = datetime(2024, 11, 11, 9, 15, 30, 123456)  # noqa: DTZ001 - naive on purpose, like utcnow()


def seed_example() -> dict[str, Any]:
    """A fresh parsed copy of the event page's example payload (floats as json.loads gives them)."""
    return json.loads(SEED_EXAMPLE_TEXT)


def channel_sample_event(now: datetime = FIXED_UTCNOW) -> dict[str, Any]:
    """``payment_event`` exactly as the channel page's code builds it, with ``now`` for datetime.utcnow()."""
    return {
        "eventType": "PAYMENT_PROCESSED",
        "timestamp": now.isoformat(),
        "version": "1.0",
        "payload": {
            "paymentId": "PAY-123-456",
            "orderId": "ORD-789",
            "amount": {"value": 99.99, "currency": "USD"},
            "status": "SUCCESS",
            "paymentMethod": {
                "type": "CREDIT_CARD",
                "last4": "4242",
                "expiryMonth": "12",
                "expiryYear": "2025",
                "network": "VISA",
            },
            "transactionDetails": {
                "processorId": "stripe_123xyz",
                "authorizationCode": "AUTH123",
                "captureId": "CAP456",
            },
        },
        "metadata": {
            "correlationId": "corr-123-abc",
            "merchantId": "MERCH-456",
            "source": "payment_service",
            "environment": "prod",
            "idempotencyKey": "PAY-123-456-2024-11-11-99.99",
        },
    }


def channel_sample_bytes(now: datetime = FIXED_UTCNOW) -> bytes:
    """What the sample's value_serializer sends: ``json.dumps(v).encode('utf-8')``."""
    return json.dumps(channel_sample_event(now)).encode("utf-8")
