"""``payevents outbox republish``: the events the relay published at a range of the channel's offsets go to the
channel again — for records the channel's retention deleted before a service read them (the consumer's report
names the range; ``tests/runtime/test_records_lost.py`` follows that on Apache Kafka)."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from outbox_helpers import append_one, headers_for, processed_event, read_channel
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from payevents.contracts.channel import topic_for
from payevents.contracts.events import ProcessedMetadata
from payevents.faces.cli import app
from payevents.runtime.outbox import OUTBOX_MIGRATIONS, StoredEvent, append, events_for_payment, list_events
from payevents.runtime.relay import Relay, published_again, republish
from payevents.settings import Settings
from payevents.store.db import connect
from payevents.transport import open_transport


@pytest.fixture
def settings(store_settings: Settings) -> Settings:
    """One partition (offsets are the order of the seqs), SQLite or PostgreSQL."""
    return store_settings.replace(partitions=1)


def _publish(settings: Settings, engine: Engine) -> None:
    with Relay(settings, engine=engine) as relay:
        relay.ensure_topics()
        while relay.publish_pending():
            pass


def test_the_range_goes_to_the_channel_again_and_nothing_of_the_outbox_changes(
        settings: Settings, outbox_engine: Engine) -> None:
    for i in range(10):
        append_one(outbox_engine, f"pay-{i}", f"k{i}")
    _publish(settings, outbox_engine)
    before = [(e.seq, e.published_at, e.delay_s, e.offset) for i in range(10)
              for e in events_for_payment(outbox_engine, f"pay-{i}")]
    t = open_transport(settings)
    try:
        first = read_channel(t, topic_for("dev"))
        assert published_again(outbox_engine, topic_for("dev"), 0, 3, 9) == (7, 0)
        done = republish(settings, 0, 3, 12, engine=outbox_engine)
        assert (len(done.sent), done.refused, done.not_ours) == (7, {}, 3)  # offsets 3-9 are ours, 10-12 none's
        # what `payevents lost` shows of a range: the outbox's events in it, of them published again since
        assert published_again(outbox_engine, topic_for("dev"), 0, 3, 9) == (7, 7)
        assert published_again(outbox_engine, topic_for("dev"), 0, 0, 4) == (5, 2)
        assert published_again(outbox_engine, topic_for("dev"), 1, 0, 4) == (0, 0)
        again = read_channel(t, topic_for("dev"))
    finally:
        t.close()
    assert [m.offset for m in again] == list(range(17))
    assert [(m.key, m.value, m.headers) for m in again[10:]] == [(m.key, m.value, m.headers) for m in first[3:10]]
    # lost again, a re-sent record is found by its new offset; the first ones by their old ones still
    t = open_transport(settings)
    try:
        assert republish(settings, 0, 14, 16, engine=outbox_engine).sent == [m.seq for m in _seqs(outbox_engine, 7, 9)]
        assert republish(settings, 0, 0, 0, engine=outbox_engine).sent == [_seqs(outbox_engine, 0, 0)[0].seq]
        latest = read_channel(t, topic_for("dev"))
    finally:
        t.close()
    assert [m.value for m in latest[17:]] == [first[i].value for i in (7, 8, 9, 0)]
    # the outbox's marks and delays are the first publication's
    assert before == [(e.seq, e.published_at, e.delay_s, e.offset) for i in range(10)
                      for e in events_for_payment(outbox_engine, f"pay-{i}")]


def _seqs(engine: Engine, first: int, last: int) -> list[StoredEvent]:
    """The stored events the relay published at offsets ``first`` to ``last`` (one partition)."""
    return sorted((e for e in list_events(engine, limit=1000) if e.offset is not None and first <= e.offset <= last),
                  key=lambda e: e.seq)


def test_an_event_the_broker_now_refuses_is_named_and_the_command_fails(tmp_path: Path) -> None:
    settings = Settings(env="dev", data_dir=tmp_path / "data", partitions=1)  # type: ignore[arg-type]
    outbox_engine = connect(settings, "payments", OUTBOX_MIGRATIONS)
    append_one(outbox_engine, "pay-small", "small")
    big = processed_event("pay-big")
    big = msgspec.structs.replace(big, data=msgspec.structs.replace(
        big.data, metadata=ProcessedMetadata(description="x" * 1500, orderId="ord-1")))
    with outbox_engine.begin() as conn:
        big_seq = append(conn, big, headers=headers_for("big", "pay-big"), idempotency_key="big", env="dev").seq
    _publish(settings, outbox_engine)
    strict = settings.replace(kafka_config={"message.max.bytes": "1000"})
    done = republish(strict, 0, 0, 1, engine=outbox_engine)
    assert done.sent == [big_seq - 1] and list(done.refused) == [big_seq]
    assert "message.max.bytes" in done.refused[big_seq]

    out = CliRunner().invoke(app, ["outbox", "republish", "--partition", "0", "--from-offset", "0", "--to-offset",
                                   "1", "--env", "dev", "--data-dir", str(settings.data_dir)],
                             env={"PAYEVENTS_KAFKA_CONFIG": "message.max.bytes=1000", "PAYEVENTS_PARTITIONS": "1"})
    assert out.exit_code == 1, out.output
    assert f"outbox seq {big_seq}: not re-published:" in out.stderr
    assert out.stdout.splitlines()[-1] == "1 events re-published, 1 not"
