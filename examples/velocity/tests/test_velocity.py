"""The velocity check through the real runtime (ServiceHarness), on the embedded log and on Apache Kafka, and
as a worker started by ``payevents run velocity_check:service``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
import velocity_check

from payevents import (
    Amount,
    PaymentMethod,
    PaymentProcessed,
    PaymentProcessedData,
    ProcessedMetadata,
    ServiceHarness,
)
from payevents.transport.base import Record

HERE = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def processed(customer: str, minutes: float, amount: str = "25.00") -> PaymentProcessed:
    pid = f"pay_{uuid.uuid4().hex[:12]}"
    data = PaymentProcessedData(
        paymentId=pid, transactionId=f"txn_{pid}", amount=Amount(value=Decimal(amount), currency="USD"),
        paymentMethod=PaymentMethod(type="credit_card", last4="4242"), gatewayReference=f"gw_{pid}",
        processedAt=T0 + timedelta(minutes=minutes), customerId=customer,
        metadata=ProcessedMetadata(orderId=f"ORD-{pid}", description="Order"))
    return PaymentProcessed(eventId=str(uuid.uuid4()), eventType="PaymentProcessed", timestamp=data.processedAt,
                            version="1.0.0", data=data)


@pytest.fixture(params=["embedded", "kafka"])
def harness(request: pytest.FixtureRequest) -> Iterator[ServiceHarness]:
    if request.param == "embedded":
        h = ServiceHarness(velocity_check.service)
    else:
        kafka = request.getfixturevalue("kafka_broker")  # the session's Apache Kafka with a fresh channel
        from payevents.localkafka import FAST_GROUP_CONFIG

        h = ServiceHarness(velocity_check.service, broker=kafka.url, kafka_config=FAST_GROUP_CONFIG)
    with h:
        yield h


def test_a_burst_is_flagged_once_per_payment_past_the_limit(harness: ServiceHarness) -> None:
    burst = [processed("cus_burst", m) for m in (0, 1, 2, 3, 4)]  # five within ten minutes
    calm = [processed("cus_calm", m) for m in (0, 30, 60)]  # three, far apart
    later = processed("cus_burst", 40)  # the window has moved on: not flagged
    harness.publish(*burst, *calm, later)
    harness.publish(burst[4])  # delivered again: absorbed, never counted twice
    harness.run_until_idle()
    with harness.engine.connect() as conn:
        flags = velocity_check.flags(conn)
        # the payments travel on different partitions: which of the burst are flagged depends on their arrival,
        # but the burst is found whole (5 in the window) and nothing else is flagged
        assert flags and {c for c, _, _ in flags} == {"cus_burst"}
        assert max(n for *_, n in flags) == 5
        assert {p for _, p, _ in flags} <= {e.data.paymentId for e in burst}
        assert conn.execute(sa.text("SELECT COUNT(*) FROM velocity_payments")).scalar_one() == 9
    assert harness.stats.duplicates == 1 and harness.stats.dead_lettered == 0


def test_a_record_that_breaks_the_contract_is_dead_lettered_and_blocks_nothing(harness: ServiceHarness) -> None:
    bad = Record(topic=harness.topic, key=b"pay_bad", value=b'{"eventType": "PaymentProcessed", "version": "1.0.0"}',
                 headers=(("eventType", b"PaymentProcessed"),))
    harness.publish_raw([bad])
    harness.publish(processed("cus_ok", 1))
    harness.run_until_idle()
    [letter] = harness.dead_letters()
    assert "data" in letter.reason  # names the field and the rule
    assert harness.query("SELECT customer_id FROM velocity_payments") == [("cus_ok",)]


def test_payevents_run_runs_it_by_import_path(tmp_path: Path) -> None:
    """A team's service is run the same way as the built-in ones: a worker process from the CLI."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PAYEVENTS_")},
           "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
           "PAYEVENTS_ENV": "dev", "PAYEVENTS_DATA_DIR": str(tmp_path)}
    cli = str(Path(sys.executable).parent / "payevents")
    proc = subprocess.Popen([cli, "run", "--one", "velocity_check:service"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        with ServiceHarness(velocity_check.service, data_dir=tmp_path, consume=False) as h:  # only publishes
            events = [processed("cus_cli", m) for m in range(5)]
            h.publish(*events)
            db = sa.create_engine(f"sqlite:///{tmp_path / 'velocity.db'}")
            deadline = time.monotonic() + 60
            while True:
                try:
                    with db.connect() as conn:
                        if conn.execute(sa.text("SELECT COUNT(*) FROM velocity_payments")).scalar_one() == 5:
                            break
                except sa.exc.OperationalError:
                    pass  # not migrated yet
                assert proc.poll() is None, proc.communicate()[0].decode()[-2000:]
                assert time.monotonic() < deadline, "the worker did not apply the payments"
                time.sleep(0.1)
            with db.connect() as conn:
                assert max(n for *_, n in velocity_check.flags(conn)) == 5
            db.dispose()
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 0, out[-2000:]
