"""The relay SIGKILLed at random points while it publishes: afterwards every event is on the channel."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest
from outbox_helpers import headers_for, processed_event, read_channel
from sqlalchemy.engine import Engine

from payevents.contracts.channel import topic_for
from payevents.runtime.audit import verify_engine
from payevents.runtime.outbox import append, pending_count, published_delays
from payevents.runtime.relay import Relay
from payevents.settings import Settings
from payevents.transport import open_transport

TOTAL = 2000
PER_TX = 25
ROUNDS = 5
RELAY_PROC = Path(__file__).with_name("relay_proc.py")


def _env(settings: Settings) -> dict[str, str]:
    env = {**os.environ, "PAYEVENTS_ENV": "dev", "PAYEVENTS_DATA_DIR": str(settings.data_dir)}
    env.pop("PAYEVENTS_DATABASE_URL", None)
    if settings.database_url:
        env["PAYEVENTS_DATABASE_URL"] = settings.database_url.get_secret_value()
        env["PAYEVENTS_DB_SCHEMA_PREFIX"] = settings.db_schema_prefix
    return env


def _wait_fast(predicate: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("the relay subprocess did not start publishing")
        time.sleep(0.001)


def _published(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT COUNT(*) FROM outbox_published").scalar_one())


@pytest.mark.slow
def test_relay_killed_mid_batch_loses_nothing(outbox_engine: Engine, store_settings: Settings) -> None:
    transport = open_transport(store_settings)
    transport.create_topics([topic_for("dev")], store_settings.partitions)
    rng = random.Random(42)
    written: dict[str, list[str]] = defaultdict(list)
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            for start in range(0, TOTAL, PER_TX):
                with outbox_engine.begin() as conn:
                    for i in range(start, start + PER_TX):
                        pid, key = f"pay-{i // 5}", f"crash-{i}"
                        ev = processed_event(pid, amount=f"{i % 97 + 1}.00")
                        append(conn, ev, headers=headers_for(key, pid), idempotency_key=key, env="dev")
                        written[pid].append(ev.eventId)
                time.sleep(0.01)
        except BaseException as exc:  # surfaced by the main thread
            errors.append(exc)

    producer = threading.Thread(target=produce)
    producer.start()
    kills = 0
    marker = store_settings.data_dir / "acked"
    for round_ in range(ROUNDS):
        marker.unlink(missing_ok=True)
        proc = subprocess.Popen([sys.executable, str(RELAY_PROC), str(marker)], env=_env(store_settings),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            if round_ % 2 == 0:
                # Between the broker's acknowledgement and the published mark: a certain re-send.
                _wait_fast(lambda p=proc: marker.exists() or p.poll() is not None)  # type: ignore[misc]
                time.sleep(rng.uniform(0.0, 0.02))
            else:
                # Anywhere, once the relay is really publishing.
                before = _published(outbox_engine)
                _wait_fast(lambda p=proc, n=before: _published(outbox_engine) > n or p.poll() is not None)  # type: ignore[misc]
                time.sleep(rng.uniform(0.0, 0.15))
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        kills += 1
    producer.join(120)
    assert not errors, errors[:3]
    assert kills == ROUNDS

    # A fresh relay finishes what the killed ones left behind.
    with Relay(store_settings, engine=outbox_engine, transport=transport, batch_size=200) as relay:
        while relay.publish_pending():
            pass
    assert pending_count(outbox_engine) == 0
    messages = read_channel(transport, topic_for("dev"))
    transport.close()

    expected = {eid for ids in written.values() for eid in ids}
    assert len(expected) == TOTAL
    on_channel = [m.header("eventId") for m in messages]
    assert set(on_channel) == expected  # no loss
    assert len(on_channel) > len(expected)  # and the kills did land mid-batch: acknowledged, then re-sent
    first_seen: dict[str, list[str]] = defaultdict(list)
    seen: set[str | None] = set()
    for m in messages:
        if m.header("eventId") not in seen:
            seen.add(m.header("eventId"))
            first_seen[(m.key or b"").decode()].append(m.header("eventId") or "")
    assert first_seen == written  # per-payment order survives the kills
    assert len(published_delays(outbox_engine)) == TOTAL  # one status row per event, however often it was sent
    assert verify_engine(outbox_engine).ok
