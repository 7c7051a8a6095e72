"""A service whose records Kafka deleted (the channel's retention) before its group read them says so: an error
line naming the partition and the offsets, ``payevents_consumer_records_lost`` and ``stats.lost`` — and it goes
on with the records still there, each applied once."""

from __future__ import annotations

import logging

import pytest
import runtime_counter as rc
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient
from prometheus_client import REGISTRY
from test_consumer_runtime import drain

from payevents.contracts import channel
from payevents.localkafka import LocalKafka
from payevents.runtime.consumer import ConsumerRuntime
from payevents.runtime.service import ServiceDef
from payevents.settings import Settings
from payevents.store import db
from payevents.transport import open_transport


def _delete_unread(broker: LocalKafka, settings: Settings) -> None:
    """Every record on the channel now is deleted, as retention deletes them."""
    topic = channel.topic_for(settings.env)
    t = open_transport(settings)
    try:
        ends = t.describe(topic).end_offsets
    finally:
        t.close()
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for future in admin.delete_records([TopicPartition(topic, p, end) for p, end in ends.items()]).values():
        future.result(timeout=30)


def test_records_deleted_before_the_service_read_them_are_reported(
        kafka_settings: Settings, kafka_broker: LocalKafka, counter: ServiceDef,
        caplog: pytest.LogCaptureFixture) -> None:
    def lost() -> float:
        return REGISTRY.get_sample_value("payevents_consumer_records_lost_total", {"service": counter.name}) or 0.0

    rc.send(kafka_settings, [rc.event_record(kafka_settings, f"PAY-A{i}")[0] for i in range(20)])
    with ConsumerRuntime(kafka_settings, counter, max_batch=50, poll_timeout=0.3) as rt:
        drain(rt)
        assert rt.stats.applied == 20
    # the service is down; 30 events arrive and retention deletes them before it comes back; then 10 more
    rc.send(kafka_settings, [rc.event_record(kafka_settings, f"PAY-B{i}")[0] for i in range(30)])
    _delete_unread(kafka_broker, kafka_settings)
    rc.send(kafka_settings, [rc.event_record(kafka_settings, f"PAY-C{i}")[0] for i in range(10)])
    before = lost()
    caplog.set_level(logging.ERROR, logger="payevents")
    with ConsumerRuntime(kafka_settings, counter, max_batch=50, poll_timeout=0.3) as rt:
        drain(rt)
        assert rt.stats.applied == 10
        assert rt.stats.lost == 30
    assert lost() - before == 30
    lines = [r for r in caplog.records if "were deleted from the channel" in r.getMessage()]
    assert sum(int(r.getMessage().split()[0]) for r in lines) == 30
    assert all(r.levelno == logging.ERROR and r.__dict__["outcome"] == "lost" for r in lines)
    rows = rc.counter_rows(db.engine_for(kafka_settings, counter.name))
    assert len(rows) == 30 and not any(r[2].startswith("PAY-B") for r in rows)
