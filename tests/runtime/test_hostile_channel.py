"""Hostile records on the channel, every service, both databases: each of N valid PaymentProcessed events gets one
or two fields replaced (by a value of another type, an edge of a rule — 255/256 characters, 64/65, a time at the
calendar's edge, an amount at its bound —, text in other scripts, markup) or removed. Whatever the mix, every
service consumes every record, applies or dead-letters it without a single retry (a retry here is a handler or a
store failing on a value the contract let through, holding the partition up), and all four judge each record the
same way: the channel's contract decides, not a service's store. The seed is printed; PAYEVENTS_FUZZ_SEED replays
it."""

from __future__ import annotations

import json
import os
import random
from typing import Any

from payevents.bench.events import BenchEvent, make_events
from payevents.settings import Settings

SERVICES = ("ledger", "invoices", "analytics", "notifications")
VALUES: list[Any] = [
    "", " ", "x" * 255, "x" * 256, "y" * 64, "y" * 65, "😀" * 255, "😀" * 70, "\u200b", "ﬁ", "İ", "ß", "\t\n",
    "' OR 1=1 --", "%s%n", "{{ x }}", "<b>", "\\", '"', "1e400", "NaN", 0, -1, 1.5, 10**20, True, None, [], {},
    {"a": 1}, "1970-01-01T00:00:00Z", "9998-12-31T23:59:59-23:59", "1969-12-31T23:59:59Z",
    "0001-01-01T00:00:00+01:00", "2025-02-29T00:00:00Z", "2025-12-11T10:30:00+14:00",
    "2025-12-11T10:30:00.123456789Z", "2025-12-11 10:30:00Z", "USD", "XXX", "JPY", "KWD", "CLF", 0.001, 0.01, 1,
    99999999999999, 100000000000000, 1e-9, "99.99", "credit_card", "CREDIT_CARD", "1234", "0000", "a\x00b",
]
PATHS = ["eventId", "timestamp", "version", "data.paymentId", "data.transactionId", "data.customerId",
         "data.amount.value", "data.amount.currency", "data.paymentMethod.type", "data.paymentMethod.last4",
         "data.invoiceId", "data.gatewayReference", "data.processedAt", "data.metadata.orderId",
         "data.metadata.description", "data.metadata.extra", "data.extra", "extra"]


def hostile(n: int, rnd: random.Random) -> list[BenchEvent]:
    out = []
    for event in make_events(n):
        doc = json.loads(event.value)
        for _ in range(rnd.randint(1, 2)):
            *parents, last = rnd.choice(PATHS).split(".")
            node: Any = doc
            for key in parents:
                node = node.setdefault(key, {}) if isinstance(node, dict) else None
            if isinstance(node, dict):
                if rnd.random() < 0.2:
                    node.pop(last, None)
                else:
                    node[last] = rnd.choice(VALUES)
        data = doc.get("data")
        key = data.get("paymentId") if isinstance(data, dict) else None  # the key rule is not what this tests
        out.append(BenchEvent(key=key.encode() if isinstance(key, str) else event.key,
                              value=json.dumps(doc).encode(), headers=event.headers))
    return out


def test_every_service_judges_every_hostile_record_alike_without_a_retry(store_settings: Settings) -> None:
    from payevents.bench.suites import fill_channel, seed_customers
    from payevents.runtime.consumer import ConsumerRuntime
    from payevents.runtime.deadletter import list_dead_letters
    from payevents.services import load_service

    seed = int(os.environ.get("PAYEVENTS_FUZZ_SEED") or random.SystemRandom().randrange(1, 10**6))
    n = 150
    fill_channel(store_settings, hostile(n, random.Random(seed)))
    seed_customers(store_settings)
    judged: dict[str, tuple[int, set[tuple[int, int]]]] = {}
    for service in SERVICES:
        with ConsumerRuntime(store_settings, load_service(service), poll_timeout=0.2) as rt:
            rt.backoff_initial = rt.backoff_max = 0.01
            for _ in range(200):
                rt.step()
                if rt.stats.consumed >= n:
                    break
            stats = rt.stats
            assert (stats.consumed, stats.retries) == (n, 0), f"seed {seed}: {service} {stats.as_dict()}"
            assert stats.applied + stats.dead_lettered == n, f"seed {seed}: {service} {stats.as_dict()}"
        letters = list_dead_letters(store_settings, limit=10 * n, service=service)
        judged[service] = (stats.applied, {(d.original_partition or 0, d.original_offset or 0) for d in letters})
    assert len(set(map(repr, judged.values()))) == 1, f"seed {seed}: {judged}"
    assert 0 < judged["ledger"][0] < n, f"seed {seed}: the mix should hold valid and invalid records"
