"""Consumer groups on Apache Kafka's own protocols: members of one service join, leave (SIGTERM) and are
killed (SIGKILL) while events flow, and no event is lost or applied twice across the rebalances.

Run with the classic protocol and cooperative-sticky assignment (payevents' default), and with the KIP-848
consumer protocol (``group.protocol=consumer``: the broker assigns partitions), which librdkafka and the
pinned Apache Kafka 4.1 both support.
"""

from __future__ import annotations

import collections
import dataclasses
import signal
import subprocess
import time

import pytest
import runtime_counter as rc
from test_consumer_crash import applied_ids, produce, worker
from test_consumer_runtime import assert_order_per_payment, drain

from payevents.runtime.consumer import ConsumerRuntime
from payevents.runtime.service import ServiceDef
from payevents.settings import Settings
from payevents.store import db

PROTOCOLS = {
    "classic-cooperative-sticky": {"partition.assignment.strategy": "cooperative-sticky"},
    "kip848-consumer": {"group.protocol": "consumer"},
}


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
def test_members_join_leave_and_die_without_losing_or_doubling_an_event(
    kafka_settings: Settings, counter: ServiceDef, protocol: str
) -> None:
    s = dataclasses.replace(kafka_settings, kafka_config={**kafka_settings.kafka_config, **PROTOCOLS[protocol]})
    members: dict[str, subprocess.Popen[bytes]] = {}
    produced: set[str] = set()
    log: list[str] = []

    def wave(change: str, n: int = 250) -> None:
        """Change the group's membership, then produce ``n`` events and wait until every one so far is applied."""
        started = time.monotonic()
        produced.update(str(e["eventId"]) for e in produce(s, n, payments=30))
        deadline = started + 120
        while len(produced.intersection(applied_ids(s, counter))) < len(produced):
            for name, proc in members.items():
                assert proc.poll() is None or name.startswith("gone"), proc.communicate()[1].decode()[-2000:]
            assert time.monotonic() < deadline, f"{protocol}: stalled after '{change}'"
            time.sleep(0.1)
        log.append(f"{change}: {len(produced)} applied after {time.monotonic() - started:.1f}s")

    def start(name: str) -> None:
        members[name] = worker(s, counter, max_batch=20)

    def leave(name: str, sig: signal.Signals) -> None:
        proc = members.pop(name)
        proc.send_signal(sig)
        proc.communicate(timeout=60)
        assert proc.returncode == (0 if sig == signal.SIGTERM else -signal.SIGKILL)
        members[f"gone-{name}"] = proc

    try:
        start("a")
        wave("a alone")
        start("b")
        wave("b joined")
        start("c")
        wave("c joined (three members)")
        leave("a", signal.SIGTERM)
        wave("a left (SIGTERM)")
        leave("b", signal.SIGKILL)
        wave("b killed (SIGKILL)")
        start("d")
        wave("d joined")
    finally:
        for proc in members.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.communicate(timeout=60)
    print(f"\n[{protocol}] " + "; ".join(log))

    with ConsumerRuntime(s, counter, max_batch=500, poll_timeout=0.3) as rt:  # whatever was not committed
        drain(rt, idle_polls=3)
        assert rt.stats.applied == 0
    rows = [r for r in rc.counter_rows(db.engine_for(s, counter.name)) if r[1] in produced]
    per_id = collections.Counter(r[1] for r in rows)
    assert set(per_id) == produced  # nothing lost
    assert max(per_id.values()) == 1  # nothing applied twice
    assert_order_per_payment(rows)
