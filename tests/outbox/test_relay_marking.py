"""Relay.run marks in a marker thread: a blocked mark (payments writer holding the write lock) does not
stop sending; seqs in flight are not re-sent; memory stays bounded; stop drains the marks."""

from __future__ import annotations

import sqlite3
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from outbox_helpers import append_one, read_channel, wait_until
from prometheus_client import REGISTRY
from sqlalchemy.engine import Engine

from payevents.contracts.channel import topic_for
from payevents.runtime.outbox import pending_count
from payevents.runtime.relay import Relay
from payevents.settings import Settings
from payevents.transport.base import Transport


@contextmanager
def _writer_holds_lock(engine: Engine) -> Iterator[None]:
    """Another connection holds what the marker needs: SQLite's write lock (BEGIN IMMEDIATE), or on
    PostgreSQL an EXCLUSIVE lock on outbox_pending (reads go on, its DELETE waits)."""
    if engine.dialect.name == "sqlite":
        raw = sqlite3.connect(str(engine.url.database), isolation_level=None)
        try:
            raw.execute("BEGIN IMMEDIATE")
            yield
            raw.execute("ROLLBACK")
        finally:
            raw.close()
    else:
        with engine.connect() as conn, conn.begin():
            conn.exec_driver_sql("LOCK TABLE outbox_pending IN EXCLUSIVE MODE")
            yield


def _on_channel(transport: Transport) -> Counter[str | None]:
    return Counter(m.header("eventId") for m in read_channel(transport, topic_for("dev")))


def _published_rows(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT COUNT(*) FROM outbox_published").scalar_one())


def test_relay_keeps_sending_while_marking_is_blocked(outbox_engine: Engine, store_settings: Settings) -> None:
    ids = [append_one(outbox_engine, f"pay-lock-{i % 3}", f"lock-{i}", amount=f"{i + 1}.00").event_id
           for i in range(10)]
    before = REGISTRY.get_sample_value("payevents_publish_delay_seconds_count") or 0.0
    stop = threading.Event()
    with Relay(store_settings, engine=outbox_engine, batch_size=4) as relay:
        relay.ensure_topics()
        worker = threading.Thread(target=relay.run, args=(stop,), daemon=True)
        with _writer_holds_lock(outbox_engine):
            worker.start()
            # three passes (4 + 4 + 2) reach the channel while the first pass's mark cannot commit
            wait_until(lambda: set(ids) <= set(_on_channel(relay.transport)), 30, "sends while marks are blocked")
            assert pending_count(outbox_engine) == 10 and _published_rows(outbox_engine) == 0
            assert relay.stats.published == 0
            stop.set()  # run() must not return before the marks are committed
        worker.join(30)
        assert not worker.is_alive()
        assert pending_count(outbox_engine) == 0 and _published_rows(outbox_engine) == 10  # drained on stop
        on_channel = _on_channel(relay.transport)
        assert relay.stats.published == 10 and relay.stats.delay["count"] == 10
    assert [on_channel[i] for i in ids] == [1] * 10  # in-flight rows were never re-sent
    assert (REGISTRY.get_sample_value("payevents_publish_delay_seconds_count") or 0.0) - before == 10


def test_in_flight_events_are_bounded_while_the_marker_is_behind(outbox_engine: Engine,
                                                                 store_settings: Settings) -> None:
    ids = [append_one(outbox_engine, f"pay-bound-{i % 2}", f"bound-{i}", amount=f"{i + 1}.00").event_id
           for i in range(10)]
    stop = threading.Event()
    with Relay(store_settings, engine=outbox_engine, batch_size=2, max_inflight=4) as relay:
        relay.ensure_topics()
        worker = threading.Thread(target=relay.run, args=(stop,), kwargs={"idle_sleep": 0.001}, daemon=True)
        try:
            with _writer_holds_lock(outbox_engine):
                worker.start()
                wait_until(lambda: sum(_on_channel(relay.transport).values()) >= 4, 30, "the first 4 sends")
                stop.wait(0.3)  # the loop has had time to send more, if it would
                assert _on_channel(relay.transport) == Counter(ids[:4])  # the first 4 in seq order, no more
            wait_until(lambda: pending_count(outbox_engine) == 0, 30, "the rest once the marker caught up")
        finally:
            stop.set()
            worker.join(30)
        messages = read_channel(relay.transport, topic_for("dev"))
    assert sorted(m.header("eventId") or "" for m in messages) == sorted(ids)  # each exactly once
    for key in {m.key for m in messages}:  # per-payment order
        assert [m.header("eventId") for m in messages if m.key == key] == \
               [i for i in ids if f"pay-bound-{ids.index(i) % 2}".encode() == key]


class _GatedRelay(Relay):
    """A relay whose marks wait for ``gate``: its sends stay in flight for as long as the test wants."""

    FULL_SCAN_S = 0.2

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.gate = threading.Event()

    def _mark_published(self, conn, groups):  # type: ignore[no-untyped-def]
        self.gate.wait(30)
        super()._mark_published(conn, groups)


def test_an_event_put_back_below_the_seqs_in_flight_is_published(outbox_engine: Engine,
                                                                  store_settings: Settings) -> None:
    """The select reads the rows after the highest seq in flight; an event put back to pending by
    `outbox resend` sits below them, and is still found (by the periodic full scan) while they stay in flight."""
    from payevents.runtime import outbox

    first = append_one(outbox_engine, "pay-back-0", "back-0")
    with outbox_engine.begin() as conn:  # as if the broker had refused it
        outbox.set_aside(conn, {first.seq: "test: refused"})
    later = [append_one(outbox_engine, f"pay-back-{i}", f"back-{i}").event_id for i in range(1, 7)]
    stop = threading.Event()
    with _GatedRelay(store_settings, engine=outbox_engine, batch_size=2) as relay:
        relay.ensure_topics()
        worker = threading.Thread(target=relay.run, args=(stop,), kwargs={"idle_sleep": 0.001}, daemon=True)
        worker.start()
        try:
            wait_until(lambda: set(later) <= set(_on_channel(relay.transport)), 30, "the later events sent")
            assert outbox.resend(outbox_engine, [first.seq]) == [first.seq]  # below 6 seqs still in flight
            wait_until(lambda: first.event_id in _on_channel(relay.transport), 30, "the event put back")
            assert pending_count(outbox_engine) == 7  # nothing marked yet: every other seq is still in flight
        finally:
            relay.gate.set()
            stop.set()
            worker.join(30)
        assert pending_count(outbox_engine) == 0
        assert _on_channel(relay.transport) == Counter([first.event_id, *later])  # each once
