"""50 concurrent writers, random sleeps inside their transactions, commits in any order, the relay
running all along: every event reaches the channel (duplicates allowed, no loss), the chain never forks."""

from __future__ import annotations

import random
import threading
import uuid
from collections import defaultdict

import sqlalchemy as sa
from outbox_helpers import headers_for, processed_event, read_channel, wait_until
from sqlalchemy.engine import Engine

from payevents.contracts.channel import topic_for
from payevents.runtime.audit import verify_engine
from payevents.runtime.outbox import append, list_events, pending_count
from payevents.runtime.relay import Relay
from payevents.settings import Settings
from payevents.store.db import make_engine

WRITERS = 50
TXS_PER_WRITER = 3


def test_fifty_concurrent_writers_lose_nothing(outbox_engine: Engine, store_settings: Settings) -> None:
    with outbox_engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE writer_payments (id VARCHAR(64) PRIMARY KEY, writer INTEGER NOT NULL)")
    # The writers' own pool, big enough that most of them really hold a transaction at the same time.
    writers_engine = make_engine(store_settings.database_url_for("payments"), store_settings.schema_for("payments"),
                                 pool_size=20, max_overflow=0, pool_timeout=60)
    written: dict[str, list[str]] = defaultdict(list)  # payment -> eventIds in commit order
    written_lock = threading.Lock()
    errors: list[BaseException] = []
    start = threading.Barrier(WRITERS)

    def writer(n: int) -> None:
        rng = random.Random(n)
        try:
            start.wait()
            pid = f"pay-{n}-{uuid.uuid4().hex[:6]}"
            for t in range(TXS_PER_WRITER):
                if t and rng.random() < 0.5:  # some writers move on to a new payment, others add to theirs
                    pid = f"pay-{n}-{uuid.uuid4().hex[:6]}"
                ev = processed_event(pid, amount=f"{n + 1}.{t:02d}")
                with writers_engine.begin() as conn:
                    conn.execute(sa.text("INSERT INTO writer_payments (id, writer) VALUES (:id, :w)"),
                                 {"id": ev.eventId, "w": n})
                    rng_sleep(rng)
                    key = f"w{n}-t{t}"
                    append(conn, ev, headers=headers_for(key, pid), idempotency_key=key, env="dev")
                    rng_sleep(rng)
                with written_lock:
                    written[pid].append(ev.eventId)
        except BaseException as exc:  # surfaced by the main thread
            errors.append(exc)

    stop = threading.Event()
    with Relay(store_settings, engine=outbox_engine, batch_size=16) as relay:
        relay_thread = threading.Thread(target=relay.run, args=(stop, 0.002), daemon=True)
        relay_thread.start()
        try:
            threads = [threading.Thread(target=writer, args=(n,)) for n in range(WRITERS)]
            for th in threads:
                th.start()
            for th in threads:
                th.join(120)
            assert not errors, errors[:3]
            wait_until(lambda: pending_count(outbox_engine) == 0, 60, "the relay to drain the outbox")
        finally:
            stop.set()
            relay_thread.join(10)
        assert relay.stats.errors == 0
        messages = read_channel(relay.transport, topic_for("dev"))
    writers_engine.dispose()

    expected_ids = {eid for ids in written.values() for eid in ids}
    assert len(expected_ids) == WRITERS * TXS_PER_WRITER
    on_channel = [m.header("eventId") for m in messages]
    assert set(on_channel) == expected_ids  # nothing lost, nothing foreign (duplicates allowed)

    # Per payment, the first sighting of each event follows the payment's commit order.
    first_seen: dict[str, list[str]] = defaultdict(list)
    seen: set[str] = set()
    for m in messages:
        eid = m.header("eventId") or ""
        if eid not in seen:
            seen.add(eid)
            first_seen[(m.key or b"").decode()].append(eid)
    assert first_seen == written

    # One unforked chain: dense seqs, every link intact.
    stored = list_events(outbox_engine, limit=1000)
    assert [e.seq for e in stored] == list(range(1, len(expected_ids) + 1))
    report = verify_engine(outbox_engine)
    assert report.ok and report.checked == len(expected_ids), report.reason


def rng_sleep(rng: random.Random) -> None:
    threading.Event().wait(rng.uniform(0, 0.008))
