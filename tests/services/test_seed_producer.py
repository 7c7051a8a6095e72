"""The channel page's own producer: its kafka-python sample, as written, against Apache Kafka; the record flows
through all four services (the legacy envelope is upcast on read)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from payevents.contracts.legacy import legacy_event_id
from payevents.runtime.consumer import ConsumerRuntime
from payevents.services import ledger
from payevents.services.analytics.service import SERVICE as ANALYTICS
from payevents.services.invoices.service import SERVICE as INVOICES
from payevents.services.ledger.service import SERVICE as LEDGER
from payevents.services.notifications.service import SERVICE as NOTIFICATIONS
from payevents.settings import Settings
from payevents.store import db

#: the channel page's "Publishing Events Using Kafka" sample, verbatim (shared/seeds/000_*.txt); the page
#: leaves ``env`` to the reader and points at localhost:9092, which the test sets to its broker
CHANNEL_PAGE_SAMPLE = """\
from kafka import KafkaProducer
import json
from datetime import datetime
# Kafka configuration
bootstrap_servers = ['localhost:9092']
topic = f'payments.{env}.events'
# Create Kafka producer
producer = KafkaProducer(
   bootstrap_servers=bootstrap_servers,
   value_serializer=lambda v: json.dumps(v).encode('utf-8')
)
# Example payment processed event
payment_event = {
   "eventType": "PAYMENT_PROCESSED",
   "timestamp": datetime.utcnow().isoformat(),
   "version": "1.0",
   "payload": {
       "paymentId": "PAY-123-456", 
       "orderId": "ORD-789",
       "amount": {
           "value": 99.99,
           "currency": "USD"
       },
       "status": "SUCCESS",
       "paymentMethod": {
           "type": "CREDIT_CARD",
           "last4": "4242",
           "expiryMonth": "12",
           "expiryYear": "2025",
           "network": "VISA"
       },
       "transactionDetails": {
           "processorId": "stripe_123xyz",
           "authorizationCode": "AUTH123",
           "captureId": "CAP456"
       }
   },
   "metadata": {
       "correlationId": "corr-123-abc",
       "merchantId": "MERCH-456", 
       "source": "payment_service",
       "environment": "prod",
       "idempotencyKey": "PAY-123-456-2024-11-11-99.99"
   }
}
# Send message - using paymentId as key for partitioning
producer.send(
   topic,
   key=payment_event['payload']['paymentId'].encode('utf-8'),
   value=payment_event
)
"""


@pytest.mark.kafka
@pytest.mark.timeout(240)
def test_the_channel_pages_kafka_python_sample_flows_through_all_four_services(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    s = kafka_settings
    runtimes = [ConsumerRuntime(s, svc, max_batch=50, poll_timeout=0.1)
                for svc in (LEDGER, INVOICES, ANALYTICS, NOTIFICATIONS)]  # creates the channel first
    try:
        script = tmp_path / "sample.py"
        script.write_text(f"env = {str(s.env)!r}\n"
                          + CHANNEL_PAGE_SAMPLE.replace("'localhost:9092'", repr(s.bootstrap_servers)))
        proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False)
        assert proc.returncode == 0, proc.stderr[-2000:]

        def marked(service: str) -> list[tuple[str, str, str]]:
            with db.engine_for(s, service).connect() as conn:
                return [tuple(r) for r in conn.execute(sa.text(
                    "SELECT event_id, event_type, outcome FROM processed_events WHERE service = :s"), {"s": service})]

        deadline = time.monotonic() + 90
        while not all(marked(rt.service.name) for rt in runtimes):
            assert time.monotonic() < deadline, "the sample's record did not reach every service"
            for rt in runtimes:
                rt.step()
    finally:
        for rt in runtimes:
            rt.close()

    for rt in runtimes:
        [(event_id, event_type, outcome)] = marked(rt.service.name)
        assert event_type == "PaymentProcessed" and outcome == "applied", rt.service.name
        assert rt.stats.dead_lettered == 0
    [entry] = ledger.journal(s, payment_id="PAY-123-456")
    assert [(ln.account, ln.side, ln.currency, ln.amount_minor) for ln in entry.lines] == [
        ("cash", "D", "USD", 9999), ("accounts_receivable", "C", "USD", 9999)]
    assert entry.event_id == event_id
    with db.engine_for(s, "analytics").connect() as conn:
        assert conn.execute(sa.text("SELECT currency, amount_minor FROM analytics_events WHERE event_id = :e"),
                            {"e": event_id}).one() == ("USD", 9999)
    with db.engine_for(s, "notifications").connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM notifications WHERE event_id = :e"),
                            {"e": event_id}).scalar_one() == 1
    assert event_id == legacy_event_id("PAY-123-456-2024-11-11-99.99")  # the upcast's derived eventId
