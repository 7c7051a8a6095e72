"""Analytics end to end through the channel and the consumer runtime (embedded log): canonical and
legacy events and records published twice (store-level replay safety without the runtime's dedup is
tested in test_analytics.py)."""

from __future__ import annotations

from datetime import date

from conftest_an import legacy_envelope, lifecycle, publish

from payevents.runtime.consumer import ConsumerRuntime
from payevents.services import analytics
from payevents.services.analytics.service import SERVICE
from payevents.settings import Settings


def _drain(rt: ConsumerRuntime, idle_polls: int = 3) -> None:
    idle = 0
    for _ in range(500):
        r = rt.step()
        idle = idle + 1 if r.consumed == 0 and not r.waiting and not r.retried else 0
        if idle >= idle_polls:
            return
    raise AssertionError("consumer did not become idle")


def test_runtime_totals_equal_events_with_duplicates_and_replay(settings: Settings) -> None:
    events = [*lifecycle("p1", "99.99", "USD"), *lifecycle("p2", "1500", "JPY"), *lifecycle("p3", "1.005", "KWD"),
              *lifecycle("p4", "5.00", "USD", fail=("card_declined", "Do not honor"))]
    publish(settings, events)
    publish(settings, events[:6])  # the producer re-sent some records
    publish(settings, [legacy_envelope("PAY-123-456", "99.99")] * 2, keys=["PAY-123-456"] * 2)
    expected = {"USD": 9999 + 9999, "JPY": 1500, "KWD": 1005}

    with ConsumerRuntime(settings, SERVICE, max_batch=7, poll_timeout=0.2) as rt:
        _drain(rt)
        assert rt.stats.duplicates >= 7
    rows = analytics.report(settings, date(2025, 12, 1), date(2025, 12, 31))
    assert {r.currency: r.amount_minor for r in rows} == expected
    m = analytics.metrics(settings)
    assert {r["merchant_id"] for r in m["by_merchant"]} == {"MERCH-1", "MERCH-456"}
    assert m["failures"]["by_reason"][0]["reason"] == "card_declined"

