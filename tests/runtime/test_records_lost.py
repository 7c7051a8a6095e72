"""A service whose records Kafka deleted (the channel's retention) before its group read them says so: an error
line naming the partition and the offsets, ``payevents_consumer_records_lost`` and ``stats.lost`` — and it goes
on with the records still there, each applied once."""

from __future__ import annotations

import logging
import sqlite3
import time

import pytest
import runtime_counter as rc
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient
from prometheus_client import REGISTRY
from sqlalchemy import event
from test_consumer_runtime import drain
from typer.testing import CliRunner

from payevents.contracts import channel
from payevents.contracts.codec import decode_event
from payevents.faces.cli import app
from payevents.faces.web.data import published_again_of
from payevents.localkafka import LocalKafka
from payevents.runtime.consumer import ConsumerRuntime, lost_ranges
from payevents.runtime.outbox import OUTBOX_MIGRATIONS, append
from payevents.runtime.relay import Relay
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


def test_records_lost_to_retention_are_published_again_from_the_outbox(
        kafka_settings: Settings, kafka_broker: LocalKafka, counter: ServiceDef,
        caplog: pytest.LogCaptureFixture) -> None:
    """The line that reports the loss names the command, and the command brings back exactly what the relay had
    published there: every event applied once, none twice (the ones a group had read already are duplicates)."""
    engine = db.engine_for(kafka_settings, "payments")
    db.migrate(engine, "payments", OUTBOX_MIGRATIONS)

    def publish(prefix: str, n: int) -> list[str]:
        ids = []
        with engine.begin() as conn:
            for i in range(n):
                event = decode_event(rc.encode(rc.event_dict(f"PAY-{prefix}{i}"))).event
                append(conn, event, idempotency_key=f"{prefix}{i}", env="dev", headers=channel.audit_headers(
                    correlation_id=f"PAY-{prefix}{i}", causation_id=f"cmd-{prefix}{i}", source="payments",
                    producer="payevents/test", environment="dev", idempotency_key=f"{prefix}{i}"))
                ids.append(event.eventId)
        with Relay(kafka_settings, engine=engine) as relay:
            relay.ensure_topics()
            while relay.publish_pending():
                pass
        return ids

    first = publish("A", 8)
    with ConsumerRuntime(kafka_settings, counter, max_batch=50, poll_timeout=0.3) as rt:
        drain(rt)
        assert rt.stats.applied == 8
    lost = publish("B", 12)
    _delete_unread(kafka_broker, kafka_settings)
    last = publish("C", 5)
    caplog.set_level(logging.ERROR, logger="payevents")
    with ConsumerRuntime(kafka_settings, counter, max_batch=50, poll_timeout=0.3) as rt:
        drain(rt)
        assert (rt.stats.applied, rt.stats.lost) == (5, 12)
    commands = [r.getMessage().rsplit("payevents ", 1)[1].rstrip(")").split() for r in caplog.records
                if "were deleted from the channel" in r.getMessage()]
    assert commands and all(c[:2] == ["outbox", "republish"] for c in commands)
    store = db.engine_for(kafka_settings, counter.name)
    recorded = lost_ranges(store, counter.name)  # kept in the service's store, not only said
    assert sum(r.records for r in recorded) == 12
    assert sorted(r.republish.split()[1:] for r in recorded) == sorted(commands)
    # `payevents lost` says how many of each range's outbox events were published again: none yet
    assert [published_again_of(kafka_settings, r) for r in recorded] == [(r.records, 0) for r in recorded]

    cli = CliRunner()
    opts = ["--env", "dev", "--data-dir", str(kafka_settings.data_dir), "--broker", str(kafka_settings.broker)]
    republished = 0
    for command in commands:
        out = cli.invoke(app, [*command, *opts])
        assert out.exit_code == 0, out.output
        republished += int(out.stdout.splitlines()[-1].split()[0])
    assert republished == 12  # the lost ones, not the 8 read before nor the 5 after
    assert [published_again_of(kafka_settings, r) for r in recorded] == [(r.records, r.records) for r in recorded]
    with ConsumerRuntime(kafka_settings, counter, max_batch=50, poll_timeout=0.3) as rt:
        drain(rt)
        # a gap the group had not read past yet (no record after it before) is seen again at this start
        assert rt.stats.applied == 12 and rt.stats.lost <= 12
    applied = [r[1] for r in rc.counter_rows(store)]
    assert sorted(applied) == sorted(first + lost + last)  # each once
    assert lost_ranges(store, counter.name) == recorded  # the record of what happened, once per range
    with ConsumerRuntime(kafka_settings, counter, max_batch=50, poll_timeout=0.3) as rt:
        drain(rt)
        assert (rt.stats.consumed, rt.stats.lost) == (0, 0)  # read past every gap now

    # a range the outbox never published to is said, and nothing is sent
    out = cli.invoke(app, ["outbox", "republish", "--partition", "0", "--from-offset", "900000", "--to-offset",
                           "900009", *opts])
    assert out.exit_code == 0, out.output
    assert "10 of the 10 offsets were not published by this outbox" in out.stderr
    assert out.stdout.splitlines()[-1] == "0 events re-published"
    out = cli.invoke(app, ["outbox", "republish", "--partition", "0", "--from-offset", "9", "--to-offset", "3", *opts])
    assert out.exit_code == 2 and "--to-offset" in out.output and "before --from-offset 9" in out.output


def test_a_batch_after_a_gap_waits_until_the_gap_is_on_record(
        kafka_settings: Settings, kafka_broker: LocalKafka, counter: ServiceDef) -> None:
    """The store refuses the loss's record for a moment (a locked database): the records after the gap are not
    applied (their offsets would pass it) until it is stored; then both, the range once."""
    one = "PAY-ONE"  # one key: every record on one partition
    rc.send(kafka_settings, [rc.event_record(kafka_settings, one)[0]])
    with ConsumerRuntime(kafka_settings, counter, max_batch=50, poll_timeout=0.3) as rt:
        drain(rt)
    rc.send(kafka_settings, [rc.event_record(kafka_settings, one)[0] for _ in range(4)])
    _delete_unread(kafka_broker, kafka_settings)
    rc.send(kafka_settings, [rc.event_record(kafka_settings, one)[0] for _ in range(3)])
    refusals = []

    def locked(conn: object, cursor: object, statement: str, *args: object) -> None:
        if "consumer_lost" in statement and "INSERT" in statement and len(refusals) < 2:
            refusals.append(statement)
            raise sqlite3.OperationalError("database is locked")

    with ConsumerRuntime(kafka_settings, counter, max_batch=50, poll_timeout=0.3) as rt:
        event.listen(rt.engine, "before_cursor_execute", locked)
        try:
            first = rt.step()
            while first.consumed == 0 and not first.retried:
                first = rt.step()
            assert first.retried and "recording records lost" in (first.fault or "")
            assert rt.stats.applied == 0 and lost_ranges(rt.engine, counter.name) == []
            # the records come back once the backoffs are over and the gap is stored: waited for (a loaded CI
            # host took longer than three idle polls to fetch them again after the second backoff's seek and pause)
            deadline = time.monotonic() + 30
            while rt.stats.applied < 3 and time.monotonic() < deadline:
                rt.step()
            drain(rt)
        finally:
            event.remove(rt.engine, "before_cursor_execute", locked)
        assert rt.stats.applied == 3 and len(refusals) == 2
    [recorded] = lost_ranges(db.engine_for(kafka_settings, counter.name), counter.name)
    assert (recorded.gap.first, recorded.records) == (1, 4)
