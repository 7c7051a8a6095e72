"""A member's close is bounded: librdkafka's close (which serves the revocation of the member's partitions) was seen
blocked for good once, the rebalance callback waiting on an assignment the closing group never answered — and the
worker (or a test run) waiting behind it for ever."""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any

import pytest
from transport_helpers import wait_assigned

from payevents.localkafka import FAST_GROUP_CONFIG, LocalKafka
from payevents.transport import kafka
from payevents.transport.kafka import KafkaTransport


class _StuckClose:
    """The real client, but its close blocks until ``release`` is set (as librdkafka's did)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.release = threading.Event()

    def close(self) -> None:
        self.release.wait()
        self._inner.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_a_close_that_never_returns_is_left_behind_and_said(kafka_broker: LocalKafka, monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(kafka, "CLOSE_TIMEOUT_S", 0.5)
    t = KafkaTransport(kafka_broker.bootstrap, dict(FAST_GROUP_CONFIG))
    topic, group = f"t.close.{uuid.uuid4().hex[:8]}", f"g.{uuid.uuid4().hex[:8]}"
    t.create_topics([topic], 1)
    c = t.consumer(group, [topic])
    stuck = _StuckClose(c._c)  # type: ignore[attr-defined]
    c._c = stuck  # type: ignore[attr-defined]
    try:
        wait_assigned(c, 1)
        caplog.set_level(logging.ERROR, logger="payevents")
        closer = threading.Thread(target=c.close)
        closer.start()
        closer.join(30)
        assert not closer.is_alive(), "close() waited on the stuck client"
        assert any("did not close in 0.5 s" in r.getMessage() for r in caplog.records)
    finally:
        stuck.release.set()  # the client's own close goes on, on its thread
        t.close()
