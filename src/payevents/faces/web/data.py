"""What the dashboard shows, gathered from the services' public functions, the outbox and the channel."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from payevents.contracts.channel import topic_for
from payevents.runtime import outbox

#: the event page's rule and the delay histogram's buckets, as the relay measures them
from payevents.runtime.relay import DELAY_BUCKETS, SLA_SECONDS
from payevents.runtime.service import ServiceDef
from payevents.settings import Settings

RATE_WINDOW_S = 60.0


@dataclasses.dataclass(frozen=True)
class PublishFigures:
    stored: int
    published: int
    pending: int
    rate_recent: float  # events/s over the last RATE_WINDOW_S
    rate_overall: float  # events/s from the first event's commit to the last acknowledgement
    span_s: float
    p50: float | None
    p99: float | None
    max: float | None
    breaches: int
    histogram: list[tuple[float | None, int]]  # (upper bound or None for overflow, count)


@dataclasses.dataclass(frozen=True)
class GroupLag:
    service: str
    group: str
    lag: int | None  # None: the group has not committed yet
    committed: int
    end: int
    #: records the service's consumers reported deleted from the channel before they read them (``payevents lost``)
    lost: int = 0


def payments_engine(settings: Settings) -> sa.Engine:
    from payevents.services.payments import store

    return store.engine(settings)


def histogram(delays: Sequence[float], buckets: Sequence[float] = DELAY_BUCKETS) -> list[tuple[float | None, int]]:
    """Counts per bucket (le = upper bound, inclusive), then the overflow bucket (None)."""
    counts = [0] * (len(buckets) + 1)
    for d in delays:
        for i, le in enumerate(buckets):
            if d <= le:
                counts[i] += 1
                break
        else:
            counts[-1] += 1
    return [*zip(buckets, counts[:-1], strict=True), (None, counts[-1])]


def publish_figures(settings: Settings, now: float | None = None) -> PublishFigures:
    engine = payments_engine(settings)
    now = time.time() if now is None else now
    with engine.connect() as conn:
        stored = int(conn.exec_driver_sql("SELECT COUNT(*) FROM outbox_events").scalar_one())
        first, last, published = conn.exec_driver_sql(
            "SELECT MIN(e.created_at), MAX(p.published_at), COUNT(*)"
            " FROM outbox_published p JOIN outbox_events e ON e.seq = p.seq"
        ).one()
        recent = int(
            conn.execute(
                sa.text("SELECT COUNT(*) FROM outbox_published WHERE published_at >= :since"),
                {"since": now - RATE_WINDOW_S},
            ).scalar_one()
        )
    delays = outbox.published_delays(engine)
    pct = outbox.percentiles(delays, (0.5, 0.99))
    span = float(last - first) if first is not None and last is not None else 0.0
    return PublishFigures(
        stored=stored,
        published=int(published),
        pending=outbox.pending_count(engine),
        rate_recent=recent / RATE_WINDOW_S,
        rate_overall=(int(published) / span) if span > 0 else 0.0,
        span_s=span,
        p50=pct.get(0.5),
        p99=pct.get(0.99),
        max=max(delays) if delays else None,
        breaches=sum(1 for d in delays if d > SLA_SECONDS),
        histogram=histogram(delays),
    )


@contextlib.contextmanager
def _transport(settings: Settings) -> Iterator[Any]:
    from payevents.transport import open_transport

    t = open_transport(settings)
    try:
        yield t
    finally:
        t.close()


@functools.cache
def _builtin_services() -> dict[str, ServiceDef]:
    """The built-in consumers, looked up once: each lookup reads the installed packages' metadata (~8 ms), and the
    dashboard and ``/api/outbox`` ask for the lag on every request."""
    from payevents.runtime.registry import load_service
    from payevents.services import CONSUMER_SERVICES

    return {name: load_service(name) for name in CONSUMER_SERVICES}


def _no_store_yet(url: str) -> bool:
    """A SQLite store whose file does not exist (reading it would create it)."""
    return url.startswith("sqlite") and not Path(sa.engine.make_url(url).database or "").is_file()


def lost_ranges_of(settings: Settings, service: ServiceDef) -> list[Any]:
    """The ranges ``service``'s consumers reported deleted from the channel before they read them
    (``runtime.consumer.LostRange``; none for a store that does not exist yet: nothing is created by asking)."""
    from payevents.runtime.consumer import lost_ranges
    from payevents.store import db

    if _no_store_yet(service.database_url or settings.database_url_for(service.name)):
        return []
    return lost_ranges(db.engine_for(settings, service.name, url=service.database_url), service.name)


def published_again_of(settings: Settings, lost: Any) -> tuple[int, int] | None:
    """For one ``runtime.consumer.LostRange``: (outbox events the relay had put in it, of them published again since)
    from the payments outbox (``runtime.relay.published_again``); None when there is no outbox here to ask (nothing
    is created by asking)."""
    from payevents.runtime.relay import published_again
    from payevents.store import db

    if _no_store_yet(settings.database_url_for("payments")):
        return None
    g = lost.gap
    return published_again(db.engine_for(settings, "payments"), g.topic, g.partition, g.first, g.upto - 1)


def lost_records(settings: Settings, service: ServiceDef) -> int:
    """How many records ``service``'s consumers reported lost (:func:`lost_ranges_of`)."""
    return sum(r.records for r in lost_ranges_of(settings, service))


def lag_per_service(settings: Settings, services: Sequence[str] | None = None) -> list[GroupLag]:
    """Records each service's consumer group still has to process: channel end offsets minus committed offsets.
    ``services``: installed names or ``package.module:service`` (default: the built-in consumers); any other is
    a ConfigError."""
    from payevents.runtime.registry import resolve_service

    defs = _builtin_services() if services is None else {name: resolve_service(name) for name in services}
    topic = topic_for(settings.env)
    out: list[GroupLag] = []
    with _transport(settings) as t:
        t.create_topics([topic], settings.partitions)
        ends = dict(t.describe(topic).end_offsets)
        for name, service in defs.items():
            group = service.group
            committed = t.group_offsets(group, topic)
            end_total = sum(ends.values())
            done = sum(min(committed.get(p, 0), e) for p, e in ends.items())
            out.append(
                GroupLag(
                    service=name,
                    group=group,
                    lag=(end_total - done) if committed or end_total == 0 else None,
                    committed=done,
                    end=end_total,
                    lost=lost_records(settings, service),
                )
            )
    return out


def workers(settings: Settings) -> list[Any]:
    """The workers of ``payevents run`` as their own status files report them (alive, restarts, lag, ...)."""
    from payevents.runtime.workers import read_registry

    return read_registry(settings)


def dead_letters(settings: Settings, limit: int = 200, service: str | None = None) -> list[dict[str, Any]]:
    from payevents.runtime import deadletter

    with _transport(settings) as t:
        letters = deadletter.list_dead_letters(settings, limit, service=service, transport=t)
    return [d.to_dict() for d in reversed(letters)]


#: how much of a dead letter's payload the dashboard shows
PAYLOAD_PREVIEW_CHARS = 4096


def masked_payload(letter: dict[str, Any]) -> str:
    """The record's value for people: pretty JSON when it parses, card numbers masked, cut at 4 KiB."""
    import json

    from payevents.contracts.cardguard import mask_card_text

    value = str(letter.get("value") or "")
    if letter.get("valueEncoding") == "utf-8":
        try:
            value = json.dumps(json.loads(value), indent=2, ensure_ascii=False)
        except ValueError:
            pass
    else:
        value = f"(not UTF-8; hex) {value}"
    value = mask_card_text(value)
    return value if len(value) <= PAYLOAD_PREVIEW_CHARS else value[:PAYLOAD_PREVIEW_CHARS] + "\n… (cut)"


def group_dead_letters(letters: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Dead letters grouped by the record they copy (original topic, partition, offset): one group per
    record with every service that rejected it and why, newest record first."""
    from payevents.contracts.cardguard import mask_card_text

    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    for d in letters:
        pos = (d.get("originalTopic"), d.get("originalPartition"), d.get("originalOffset"))
        if pos[2] is None:  # no original position: the letter stands alone
            pos = ("dlq", d.get("partition"), d.get("offset"))
        g = groups.get(pos)
        if g is None:
            g = groups[pos] = {
                "record": ":".join(str(p) for p in pos), "topic": pos[0], "partition": pos[1], "offset": pos[2],
                "key": mask_card_text(d["key"]) if d.get("key") else None, "eventType": d.get("eventType"),
                "eventId": d.get("eventId"), "payload": masked_payload(d), "rejections": [], "lastFailedAt": "",
            }
        reason = mask_card_text(str(d.get("reason") or ""))
        g["rejections"].append({"service": d.get("service") or "?", "reason": reason, "failedAt": d.get("failedAt"),
                                "id": dead_letter_id(d)})
        g["lastFailedAt"] = max(g["lastFailedAt"], str(d.get("failedAt") or ""))  # RFC 3339 strings sort in time
    for g in groups.values():
        g["rejections"].sort(key=lambda r: r["service"])
        g["services"] = [r["service"] for r in g["rejections"]]
    return sorted(groups.values(), key=lambda g: g["lastFailedAt"], reverse=True)


def dead_letter_id(letter: dict[str, Any]) -> str:
    """A dead letter's id: its position in the dead-letter channel."""
    return f"{letter['partition']}:{letter['offset']}"


def revenue_window(days: int) -> tuple[date, date]:
    """The first and last day (UTC) of the revenue window of ``days`` days ending today."""
    today = datetime.now(UTC).date()
    return today - timedelta(days=days - 1), today


def revenue_rows(settings: Settings, days: int = 31, by: str = "day") -> list[Any]:
    from payevents.services import analytics

    first, last = revenue_window(days)
    return analytics.report(settings, first, last, by)  # type: ignore[arg-type]


def revenue_by_currency(rows: Sequence[Any]) -> list[dict[str, Any]]:
    from payevents.services.payments.money import from_minor

    totals: dict[str, dict[str, Any]] = {}
    for r in rows:
        t = totals.setdefault(r.currency, {"currency": r.currency, "payments": 0, "amount_minor": 0, "failed": 0})
        t["payments"] += r.payments
        t["amount_minor"] += r.amount_minor
        t["failed"] += r.failed
    for t in totals.values():
        t["amount"] = str(from_minor(t["amount_minor"], t["currency"]))
    return sorted(totals.values(), key=lambda t: t["currency"])


def parse_date(value: str | None, default: date) -> date:
    return default if not value else date.fromisoformat(value)
