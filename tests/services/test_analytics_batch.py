"""Analytics' batch handler has the effects of its per-event handlers: the same random event stream
(duplicates, replays, legacy events, failures, out-of-order and poison events) applied both ways gives
identical tables and figures."""

from __future__ import annotations

import dataclasses
import random
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from conftest_an import T0, consume_all, dump_tables, feed_like_runtime, legacy_envelope, lifecycle, processed, publish

from payevents.contracts.codec import DecodedEvent
from payevents.contracts.events import Amount
from payevents.errors import PoisonEvent
from payevents.services import analytics
from payevents.services.analytics.handlers import FACT_COLUMNS, PAYMENT_COLUMNS, handle_batch, merge_payments
from payevents.services.analytics.service import SERVICE
from payevents.settings import Settings
from payevents.store.db import connect

TABLES = {"analytics_events": FACT_COLUMNS, "analytics_payments": PAYMENT_COLUMNS}
VALUES = {"USD": "12.34", "EUR": "0.99", "JPY": "1500", "KWD": "1.005"}


def _poison(d: DecodedEvent) -> DecodedEvent:
    """The same event with an amount its currency cannot hold (the handlers' PoisonEvent)."""
    bad = msgspec.structs.replace(d.event.data, amount=Amount(value=Decimal("1.0001"), currency="USD"))
    event = msgspec.structs.replace(d.event, eventId=d.event.eventId + "-poison", data=bad)
    return DecodedEvent(event=event, legacy=d.legacy, extras=d.extras)


def random_stream(seed: int, payments: int = 120) -> list[DecodedEvent]:
    """Payments' lifecycles interleaved across batches, some failed, some legacy, some out of order or
    with events missing, a few poison; every seventh event re-delivered soon after, then a replay of all."""
    rng = random.Random(seed)
    pending: list[list[DecodedEvent]] = []
    for i in range(payments):
        currency = rng.choice(list(VALUES))
        at = T0 - timedelta(days=rng.randint(0, 70), minutes=rng.randint(0, 1000))
        kind = rng.random()
        if kind < 0.15:
            code = rng.choice(["card_declined", "insufficient_funds", "expired_card"])
            evs = lifecycle(f"pay_{i}", VALUES[currency], currency, at=at, fail=(code, f"gateway: {code}"))
        elif kind < 0.25:
            evs = [processed(f"pay_{i}", VALUES[currency], currency, at=at, legacy=True,
                             merchant_id=rng.choice(["MERCH-456", None]), method="CREDIT_CARD")]
        else:
            evs = lifecycle(f"pay_{i}", VALUES[currency], currency, at=at,
                            merchant_id=rng.choice(["M1", "M2", None]), method=rng.choice(["credit_card", "sepa"]))
            if rng.random() < 0.3:  # stages re-emitted with other values (new eventIds): first write wins
                other = lifecycle(f"pay_{i}", VALUES["EUR"], "EUR", at=at + timedelta(hours=1),
                                  merchant_id=rng.choice(["M3", None]), method="debit_card")
                evs = [rng.choice(pair) for pair in zip(evs, other, strict=True)] + rng.sample(other, 2)
            if rng.random() < 0.2:
                evs.reverse()  # processed before its earlier stages: first write wins per column
            if rng.random() < 0.1:
                del evs[rng.randrange(len(evs))]
        if rng.random() < 0.04:
            evs.append(_poison(evs[-1]))
        pending.append(evs)
    out: list[DecodedEvent] = []
    while pending:  # interleave payments, each one's events in its own order
        j = rng.randrange(len(pending))
        out.append(pending[j].pop(0))
        if not pending[j]:
            pending.pop(j)
        if len(out) % 7 == 0:
            out.insert(rng.randint(max(0, len(out) - 20), len(out)), out[-1])
    replay = [e for e in out if not e.event.eventId.endswith("-poison")]
    return out + replay


def _other_store(settings: Settings) -> Settings:
    return settings.replace(data_dir=settings.data_dir.parent / "batch",
                            db_schema_prefix=f"{settings.db_schema_prefix}b_")


@pytest.mark.parametrize("seed", [1, 2])
def test_batch_equals_per_event(store_settings: Settings, seed: int) -> None:
    events = random_stream(seed)
    assert any(e.legacy for e in events) and any(e.event_type == "PaymentFailed" for e in events)
    per_event, batched = store_settings, _other_store(store_settings)
    poison_a = feed_like_runtime(per_event, SERVICE, events, batch=23, use_batch=False)
    poison_b = feed_like_runtime(batched, SERVICE, events, batch=61, use_batch=True)
    assert poison_a == poison_b and poison_a  # the same events left out, and there were some

    tables = dump_tables(per_event, SERVICE, TABLES)
    assert tables == dump_tables(batched, SERVICE, TABLES)
    assert len(tables["analytics_events"]) == len({e.event_id for e in events}) - len(set(poison_a))
    d0, d1 = date(2025, 9, 1), date(2025, 12, 31)
    for by in ("day", "month"):
        assert analytics.report(per_event, d0, d1, by=by) == analytics.report(batched, d0, d1, by=by)  # type: ignore[arg-type]
    figures = analytics.metrics(batched)
    assert analytics.metrics(per_event) == figures
    assert figures["events"]["PaymentFailed"] > 0 and figures["timings"]["capture_to_processed"]["count"] > 0

    # a replay from the beginning, in batches, gives identical figures
    feed_like_runtime(batched, SERVICE, events, batch=500, use_batch=True)
    assert dump_tables(batched, SERVICE, TABLES) == tables
    assert analytics.metrics(batched) == figures


def test_batch_merges_one_row_per_payment_first_write_wins(settings: Settings) -> None:
    init, auth, cap, proc = lifecycle("p1", "10.00", "USD", merchant_id="M1")
    legacy = processed("p2", "5.00", "USD", legacy=True, merchant_id="MERCH-9", method="CREDIT_CARD")
    from payevents.services.analytics.handlers import fact_of

    rows = merge_payments([fact_of(d) for d in (proc, cap, init, auth, init, legacy)])
    assert [r[0] for r in rows] == ["p1", "p2"]
    p1 = dict(zip(PAYMENT_COLUMNS, rows[0], strict=True))
    # processed carries no merchant: the later initiated event fills it; the duplicate adds nothing
    assert (p1["currency"], p1["method_type"], p1["merchant_id"]) == ("USD", "credit_card", "M1")
    assert None not in (p1["initiated_ms"], p1["authorized_ms"], p1["captured_ms"], p1["processed_ms"])
    assert p1["failed_ms"] is None
    assert p1["captured_ms"] - p1["authorized_ms"] == 3000
    assert dict(zip(PAYMENT_COLUMNS, rows[1], strict=True))["merchant_id"] == "MERCH-9"


def test_batch_poison_raises_and_writes_nothing(settings: Settings) -> None:
    good = lifecycle("p1", "10.00", "USD")
    bad = _poison(good[-1])
    engine = connect(settings, SERVICE.name, SERVICE.migrations)
    with pytest.raises(PoisonEvent, match=r"data\.amount"), engine.begin() as conn:
        handle_batch(conn, [(d, None) for d in [*good, bad]])  # type: ignore[misc]
    assert dump_tables(settings, SERVICE, TABLES) == {"analytics_events": [], "analytics_payments": []}


def test_runtime_with_batch_handler_equals_per_event(settings: Settings) -> None:
    """Through the consumer runtime (its dedup, its batches), with and without the batch handler."""
    events = [e for e in random_stream(3, payments=60)  # legacy ones go on the channel as legacy envelopes
              if not e.event.eventId.endswith("-poison") and not e.legacy]
    per_event, batched = settings, _other_store(settings)
    for s in (per_event, batched):
        publish(s, events)
        publish(s, [legacy_envelope("PAY-L1", "99.99"), legacy_envelope("PAY-L2", "5.00", "EUR", "M-9")] * 2,
                keys=["PAY-L1", "PAY-L2"] * 2)
    a = consume_all(per_event, dataclasses.replace(SERVICE, batch_handler=None), max_batch=40)
    calls: list[int] = []

    def batch_handler(conn: Any, batch: Any) -> None:
        assert SERVICE.batch_handler is not None
        SERVICE.batch_handler(conn, batch)
        calls.append(len(batch))  # only when it did not raise (no per-event fallback)

    b = consume_all(batched, dataclasses.replace(SERVICE, batch_handler=batch_handler), max_batch=40)
    assert sum(calls) == b.applied and len(calls) > 1
    assert (a.applied, a.duplicates, a.absorbed, a.dead_lettered) == (b.applied, b.duplicates, b.absorbed,
                                                                      b.dead_lettered)
    # stages re-emitted with new eventIds are one business fact: the same content is absorbed, other content
    # (another amount, currency or code) is dead-lettered as a conflict (payevents.runtime.facts)
    assert b.duplicates > 0 and b.absorbed > 0 and b.dead_lettered > 0
    tables = dump_tables(batched, SERVICE, TABLES)
    assert dump_tables(per_event, SERVICE, TABLES) == tables
    assert len(tables["analytics_events"]) == b.applied
    assert analytics.metrics(per_event) == analytics.metrics(batched)
