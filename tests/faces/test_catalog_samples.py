"""The channel page's publishing examples are generated code that really publishes a valid event."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from payevents.contracts.channel import AUDIT_HEADERS, partition_key, topic_for
from payevents.contracts.codec import decode_event
from payevents.faces.catalog import samples
from payevents.faces.catalog.model import SchemaSource
from payevents.settings import Settings

EXAMPLE = SchemaSource.from_contracts().example("PaymentProcessed", "1.0.0")


def run(code: str, tmp_path: Path, **env: str) -> str:
    script = tmp_path / "sample.py"
    script.write_text(code)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PAYEVENTS_")}
    proc = subprocess.run([sys.executable, str(script)], env={**environ, **env}, capture_output=True, text=True,
                          timeout=120, check=False, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_payevents_sample_takes_a_payment_through_the_outbox_and_relay(tmp_path: Path) -> None:
    from payevents.services import payments
    from payevents.store.db import dispose_engines

    assert EXAMPLE is not None
    code = samples.payevents_sample(EXAMPLE)
    data_dir = tmp_path / "data"
    out = run(code, tmp_path, PAYEVENTS_ENV="dev", PAYEVENTS_DATA_DIR=str(data_dir))
    payment_id, state = out.split()[:2]
    assert state == "processed"
    settings = Settings(env="dev", data_dir=data_dir)  # type: ignore[arg-type]
    try:
        p = payments.show(settings, payment_id)
        assert (p.customer_id, str(p.amount), p.currency, p.invoice_id) == (
            "cus_johndoe", "99.99", "USD", "INV-2025-000123")
        events = payments.timeline(settings, payment_id)
        assert [e.event_type for e in events][-1] == "PaymentProcessed"
        assert all(e.published for e in events)
        # idempotent: running the sample again makes no second payment
        out2 = run(code, tmp_path, PAYEVENTS_ENV="dev", PAYEVENTS_DATA_DIR=str(data_dir))
        assert out2.split()[0] == payment_id
        assert len(payments.list_payments(settings)) == 1
    finally:
        dispose_engines()


def test_kafka_sample_refuses_a_missing_env(tmp_path: Path) -> None:
    assert EXAMPLE is not None
    script = tmp_path / "k.py"
    script.write_text(samples.kafka_sample(EXAMPLE, 6))
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PAYEVENTS_")}
    proc = subprocess.run([sys.executable, str(script)], env={**environ, "PAYEVENTS_ENV": "production"},
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode != 0 and "not one of dev, sit, prod" in proc.stderr


@pytest.mark.kafka
def test_kafka_sample_publishes_a_valid_event_on_the_payments_partition(
    tmp_path: Path, kafka_settings: Settings
) -> None:
    from payevents.transport import open_transport
    from payevents.transport.murmur2 import partition_for

    assert EXAMPLE is not None
    topic = topic_for("dev")
    transport = open_transport(kafka_settings)
    try:
        transport.create_topics([topic], kafka_settings.partitions)
        before = dict(transport.describe(topic).end_offsets)
        run(samples.kafka_sample(EXAMPLE, kafka_settings.partitions), tmp_path, PAYEVENTS_ENV="dev",
            KAFKA_BOOTSTRAP_SERVERS=kafka_settings.bootstrap_servers)
        key = partition_key(str(EXAMPLE["data"]["paymentId"]))
        partition = partition_for(key, kafka_settings.partitions)
        mine = [m for m in transport.read(topic, partition, before.get(partition, 0)) if m.key == key]
    finally:
        transport.close()
    assert len(mine) == 1
    decoded = decode_event(mine[0].value or b"")
    assert decoded.event_type == "PaymentProcessed" and not decoded.legacy
    assert str(decoded.event.data.amount.value) == "99.99"
    headers = {k: v.decode() for k, v in mine[0].headers}
    assert set(AUDIT_HEADERS) <= set(headers) and headers["eventId"] == decoded.event_id
