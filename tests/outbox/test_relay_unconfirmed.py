"""A delivery the broker acknowledges without an offset is not a delivery (Apache Kafka only).

librdkafka reports a record "delivered" with no error and no offset when the broker answers its produce request
with DUPLICATE_SEQUENCE_NUMBER ("I already have this batch"). A partition just created (a topic deleted and made
again under the same name) answered so for a batch it did NOT hold, after accepting the next batch of the same
producer first: a 999,600-byte record was acknowledged and was on no partition in 3 of 35 rounds of delete,
create, send on the local broker (2026-12-03). A dead letter or a test's send took it as sent; the relay's mark
failed on its NOT NULL offset and the pass was sent again without the producer being recreated. The fault is
injected here (the broker's race does not come on demand): the producer reports one record delivered without an
offset and never stores it."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from outbox_helpers import append_one, read_channel

from payevents.contracts.channel import topic_for
from payevents.errors import TransientError
from payevents.runtime import outbox
from payevents.runtime.outbox import OUTBOX_MIGRATIONS, pending_count
from payevents.runtime.relay import Relay
from payevents.settings import Settings
from payevents.store.db import connect
from payevents.transport import kafka as kafka_transport


class _Offsetless:
    """What librdkafka hands the delivery callback for a duplicate-sequence answer: a message with no offset."""

    def __init__(self, topic: str, partition: int) -> None:
        self._topic, self._partition = topic, partition

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> None:
        return None

    def error(self) -> None:
        return None


def _producer_losing(event_id: str, times: int) -> type:
    """A librdkafka producer that, ``times`` times, "delivers" the record of ``event_id`` without storing it."""
    left = [times]

    class Losing(kafka_transport.CkProducer):  # type: ignore[misc,name-defined]
        def produce(self, topic: str, value: bytes | None = None, *args: Any, **kwargs: Any) -> None:
            headers = dict(kwargs.get("headers") or [])
            callback = kwargs.get("on_delivery")
            if left[0] > 0 and headers.get("eventId") == event_id.encode() and callback is not None:
                left[0] -= 1
                callback(None, _Offsetless(topic, kwargs.get("partition", 0)))
                return
            super().produce(topic, value, *args, **kwargs)

    return Losing


@pytest.mark.kafka
def test_a_record_acknowledged_without_an_offset_is_sent_again_not_marked_published(
        kafka_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = connect(kafka_settings, "payments", OUTBOX_MIGRATIONS)
    tag = uuid.uuid4().hex[:8]
    first = append_one(engine, f"pay-{tag}", f"a-{tag}").event_id
    second = append_one(engine, f"pay-{tag}", f"b-{tag}").event_id  # the same payment, behind it
    monkeypatch.setattr(kafka_transport, "CkProducer", _producer_losing(first, times=1))
    with Relay(kafka_settings, engine=engine) as relay:
        relay.ensure_topics()
        with pytest.raises(TransientError, match="offset"):
            relay.publish_pending()
        assert pending_count(engine) == 2  # nothing marked: the pass is sent again
        for _ in range(10):
            relay.publish_pending()
            if pending_count(engine) == 0:
                break
        assert pending_count(engine) == 0
        channel = read_channel(relay.transport, topic_for("dev"))
    stored = {e.event_id: e for e in (outbox.get_event(engine, first), outbox.get_event(engine, second)) if e}
    assert set(stored) == {first, second}
    for event_id, event in stored.items():  # each mark names the record that holds it
        assert event.published and event.offset is not None and event.partition is not None
        [at] = [m for m in channel if (m.partition, m.offset) == (event.partition, event.offset)]
        assert at.header("eventId") == event_id
    # the payment's records on its partition end with the pair in order (the pass re-sent both)
    ids = [m.header("eventId") for m in channel]
    assert ids[-2:] == [first, second]
