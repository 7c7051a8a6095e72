"""A consumer in its own process: SIGKILLed again and again, and stopped with SIGTERM."""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import runtime_counter as rc
import sqlalchemy as sa
from test_consumer_runtime import assert_order_per_payment, drain

from payevents.contracts.channel import topic_for
from payevents.runtime.consumer import FAULT_KILL_AFTER_STORE_COMMIT, ConsumerRuntime
from payevents.runtime.service import ServiceDef
from payevents.settings import Settings
from payevents.store import db

HERE = Path(__file__).parent
SRC = HERE.parent.parent / "src"


def worker(settings: Settings, service: ServiceDef, max_batch: int, kill_p: float = 0.0) -> subprocess.Popen[bytes]:
    """``runtime_counter:SERVICE`` in a subprocess (with its batch handler if ``service`` has one)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYEVENTS_")}
    env.update({
        "PYTHONPATH": os.pathsep.join([str(HERE), str(SRC)]),
        "PAYEVENTS_ENV": str(settings.env),
        "PAYEVENTS_BROKER": settings.broker,
        "PAYEVENTS_DATA_DIR": str(settings.data_dir),
        "PAYEVENTS_PARTITIONS": str(settings.partitions),
        "PAYEVENTS_KAFKA_CONFIG": json.dumps(dict(settings.kafka_config)),
        "PAYEVENTS_TEST_COUNTER_NAME": service.name,
        "PAYEVENTS_TEST_COUNTER_BATCH": "1" if service.batch_handler is not None else "0",
        "PAYEVENTS_LOG_LEVEL": "WARNING",
    })
    if settings.database_url:
        env["PAYEVENTS_DATABASE_URL"] = settings.database_url.get_secret_value()
        env["PAYEVENTS_DB_SCHEMA_PREFIX"] = settings.db_schema_prefix
    if kill_p:
        env[FAULT_KILL_AFTER_STORE_COMMIT] = str(kill_p)
    return subprocess.Popen(
        [sys.executable, "-m", "payevents.runtime.runner", "runtime_counter:SERVICE", str(max_batch)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


def applied_ids(settings: Settings, service: ServiceDef) -> list[str]:
    engine = db.engine_for(settings, service.name)
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text("SELECT event_id FROM counter_events")).scalars())
    except sa.exc.OperationalError:  # not migrated yet
        return []


def produce(settings: Settings, n: int, payments: int) -> list[dict[str, object]]:
    records, events = [], []
    for i in range(n):
        rec, ev = rc.event_record(settings, f"PAY-K{i % payments}", f"{(i % 97) + 1}.{i % 100:02d}")
        records.append(rec)
        events.append(ev)
    rc.send(settings, records)
    return events


@pytest.mark.slow
def test_sigkill_between_store_commit_and_offset_commit_loses_nothing_and_applies_nothing_twice(
    transport_settings: Settings, counter: ServiceDef
) -> None:
    n, max_batch = (1000, 25) if transport_settings.is_kafka else (2000, 50)
    kill_until_done(transport_settings, counter, n, max_batch)


@pytest.mark.slow
def test_sigkill_with_a_batch_handler_loses_nothing_and_applies_nothing_twice(
    settings: Settings, batch_counter: ServiceDef
) -> None:
    # small batches: the batch path is fast enough to finish 1,500 events before a kill could strike
    kill_until_done(settings, batch_counter, 1500, 20)
    assert sum(rc.batch_sizes(db.engine_for(settings, batch_counter.name))) == 1500  # all through the batch path


def kill_until_done(s: Settings, counter: ServiceDef, n: int, max_batch: int) -> None:
    """Workers SIGKILLed at random (by the hook after a store commit, and from outside) until all ``n``
    events are applied; then exactly once each, in order per payment."""
    kafka = s.is_kafka
    events = produce(s, n, payments=40)
    ids = {str(e["eventId"]) for e in events}
    rnd = random.Random()
    hook_kills = parent_kills = launches = 0
    deadline = time.monotonic() + 150
    while True:
        assert time.monotonic() < deadline, f"no convergence: {hook_kills} + {parent_kills} kills"
        before = len(ids.intersection(applied_ids(s, counter)))
        if before >= n:
            # the last run applied everything and was then killed (the hook strikes after a store commit, the
            # last one too): no new worker, which the check below would stop with SIGTERM while it still starts
            break
        # the first three runs, then half of them, are also killed from outside at a random moment after
        # they made progress (once they applied a random share of what is left: a time after the first
        # progress let a fast worker finish everything first); the hook kills right after a store commit
        # with probability p per batch
        kill_from_parent = launches < 3 or rnd.random() < 0.5
        kill_at = before + max(1, int((n - before) * rnd.uniform(0.02, 0.5)))
        proc = worker(s, counter, max_batch, kill_p=0.08 if kafka else 0.15)  # a Kafka rejoin costs ~3 s
        launches += 1
        done = False
        while proc.poll() is None:
            time.sleep(0.01)
            if time.monotonic() > deadline:
                proc.kill()
                err = proc.communicate()[1].decode()[-3000:]
                missing = ids.difference(applied_ids(s, counter))
                raise AssertionError(f"stalled after {launches} runs: {len(missing)} not applied: "
                                     f"{sorted(missing)[:5]}\n{err}")
            count = len(ids.intersection(applied_ids(s, counter)))
            if count >= n:
                done = True
                break
            if kill_from_parent and count >= kill_at:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                parent_kills += 1
                break
        if done:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=60)
            assert proc.returncode in (0, 137), err.decode()[-2000:]  # the hook may still strike at the end
            break
        if proc.returncode not in (-signal.SIGKILL,):
            _, err = proc.communicate()
            assert proc.returncode == 137, err.decode()[-2000:]
            hook_kills += 1
    print(f"kills: {hook_kills} by the hook, {parent_kills} from outside")
    assert hook_kills + parent_kills >= 3, (hook_kills, parent_kills)

    # a last member of the group drains whatever was not committed: only duplicates are left
    engine = db.engine_for(s, counter.name)
    with ConsumerRuntime(s, counter, max_batch=500, poll_timeout=0.3) as rt:
        drain(rt, idle_polls=3)
        assert rt.stats.applied == 0
    rows = [r for r in rc.counter_rows(engine) if r[1] in ids]
    per_id = collections.Counter(r[1] for r in rows)
    assert set(per_id) == ids  # 0 lost
    assert max(per_id.values()) == 1  # 0 applied twice
    assert_order_per_payment(rows)
    with engine.connect() as conn:
        seen = set(conn.execute(sa.text("SELECT event_id FROM processed_events WHERE service = :s"),
                                {"s": counter.name}).scalars())
    assert ids <= seen


def test_sigterm_finishes_the_batch_commits_offsets_and_exits_0(
    transport_settings: Settings, counter: ServiceDef
) -> None:
    s = transport_settings
    events = produce(s, 300, payments=9)
    ids = {str(e["eventId"]) for e in events}
    proc = worker(s, counter, max_batch=100)
    deadline = time.monotonic() + 60
    while len(ids.intersection(applied_ids(s, counter))) < len(ids):
        assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()[-2000:]

    # the offsets were committed on the way out: a new member of the group has nothing left to read
    with ConsumerRuntime(s, counter, poll_timeout=0.3) as rt:
        drain(rt, idle_polls=3)
        assert rt.stats.consumed == 0
        tps = [(topic_for(s.env), p) for p in range(s.partitions)]
        committed = rt.consumer.committed(tps)
    info_rows = [r for r in rc.counter_rows(db.engine_for(s, counter.name)) if r[1] in ids]
    for _seq, _eid, _pid, part, off, _amt in info_rows:
        assert (committed[(topic_for(s.env), part)] or 0) > off
