"""Read side of analytics: revenue reports and metrics, aggregated from the event facts.

Money is summed per currency in integer minor units, never across currencies, exactly beyond 64 bits
(:mod:`payevents.store.sums`).
"""

from __future__ import annotations

import dataclasses
import math
from datetime import date
from typing import Any, Literal

import sqlalchemy as sa

from payevents.errors import ContractError
from payevents.services.analytics.money import from_minor
from payevents.services.analytics.store import engine
from payevents.settings import Settings
from payevents.store.sums import combine, exact_sum

Period = Literal["day", "month"]
PROCESSED = "PaymentProcessed"
FAILED = "PaymentFailed"


@dataclasses.dataclass(frozen=True, slots=True)
class RevenueRow:
    """Revenue of one period in one currency: processed payments and their total, failures counted apart."""

    period: str  # YYYY-MM-DD or YYYY-MM (UTC)
    currency: str
    payments: int
    amount_minor: int
    amount: str  # the same total as a decimal string with the currency's exponent
    failed: int

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_range(from_date: date, to_date: date, by: str) -> None:
    if by not in ("day", "month"):
        raise ContractError(f"by: {by!r} must be 'day' or 'month'")
    if to_date < from_date:
        raise ContractError(f"to: {to_date.isoformat()} is before from: {from_date.isoformat()}")


_REVENUE = exact_sum(f"CASE WHEN event_type = '{PROCESSED}' THEN amount_minor ELSE 0 END", "amount")


def report(settings: Settings, from_date: date, to_date: date, by: Period = "day") -> list[RevenueRow]:
    """Revenue per ``by`` period and currency for processed payments between the two dates (inclusive, UTC)."""
    _check_range(from_date, to_date, by)
    column = "day" if by == "day" else "month"
    sql = sa.text(
        f"SELECT {column} AS period, currency,"
        f" SUM(CASE WHEN event_type = '{PROCESSED}' THEN 1 ELSE 0 END) AS payments,"
        f" {_REVENUE},"
        f" SUM(CASE WHEN event_type = '{FAILED}' THEN 1 ELSE 0 END) AS failed"
        f" FROM analytics_events WHERE event_type IN ('{PROCESSED}', '{FAILED}')"
        " AND day >= :d0 AND day <= :d1"
        f" GROUP BY {column}, currency ORDER BY {column}, currency"
    )
    with engine(settings).connect() as conn:
        rows = conn.execute(sql, {"d0": from_date.isoformat(), "d1": to_date.isoformat()}).all()
    return [
        RevenueRow(
            period=str(r.period),
            currency=str(r.currency),
            payments=int(r.payments),
            amount_minor=combine(r.amount_hi, r.amount_lo),
            amount=str(from_minor(combine(r.amount_hi, r.amount_lo), str(r.currency))),
            failed=int(r.failed),
        )
        for r in rows
    ]


def _money(currency: str, minor: int) -> dict[str, Any]:
    return {"currency": currency, "amount_minor": minor, "amount": str(from_minor(minor, currency))}


def _durations(values: list[int]) -> dict[str, Any]:
    if not values:
        return {"count": 0, "avg_ms": None, "p50_ms": None, "p95_ms": None, "max_ms": None}
    values = sorted(values)

    def rank(p: float) -> int:
        return values[max(0, math.ceil(p * len(values)) - 1)]

    return {
        "count": len(values),
        "avg_ms": round(sum(values) / len(values), 1),
        "p50_ms": rank(0.50),
        "p95_ms": rank(0.95),
        "max_ms": values[-1],
    }


#: the exact sum of the amounts of a group, as two columns (store.sums)
_SUM = exact_sum("e.amount_minor", "amount")


def metrics(settings: Settings, from_date: date | None = None, to_date: date | None = None) -> dict[str, Any]:
    """Payment metrics (all time, or between the two dates inclusive), JSON-serializable.

    Keys: ``events`` (count per eventType), ``processed`` (count and volume per currency),
    ``by_day`` / ``by_method`` / ``by_merchant`` (per currency), ``failures`` (total, rate, per reason)
    and ``timings`` (authorization-to-capture, capture-to-processed, in milliseconds).
    """
    where = "1 = 1"
    params: dict[str, Any] = {}
    if from_date is not None:
        where += " AND e.day >= :d0"
        params["d0"] = from_date.isoformat()
    if to_date is not None:
        where += " AND e.day <= :d1"
        params["d1"] = to_date.isoformat()
    processed = f"{where} AND e.event_type = '{PROCESSED}'"
    joined = "analytics_events e LEFT JOIN analytics_payments p ON p.payment_id = e.payment_id"
    with engine(settings).connect() as conn:

        def q(sql: str) -> list[Any]:
            return list(conn.execute(sa.text(sql), params).all())

        events = {str(r[0]): int(r[1]) for r in q(
            f"SELECT e.event_type, COUNT(*) FROM analytics_events e WHERE {where} GROUP BY e.event_type"
            " ORDER BY e.event_type")}
        per_currency = q(
            f"SELECT e.currency, COUNT(*), {_SUM} FROM analytics_events e WHERE {processed}"
            " GROUP BY e.currency ORDER BY e.currency")
        by_day = q(
            f"SELECT e.day, e.currency, COUNT(*), {_SUM} FROM analytics_events e WHERE {processed}"
            " GROUP BY e.day, e.currency ORDER BY e.day, e.currency")
        by_method = q(
            f"SELECT COALESCE(e.method_type, p.method_type, 'unknown') AS m, e.currency, COUNT(*),"
            f" {_SUM} FROM {joined} WHERE {processed} GROUP BY m, e.currency ORDER BY m, e.currency")
        by_merchant = q(
            f"SELECT COALESCE(e.merchant_id, p.merchant_id) AS m, e.currency, COUNT(*), {_SUM}"
            f" FROM {joined} WHERE {processed} GROUP BY m, e.currency ORDER BY m, e.currency")
        by_reason = q(
            f"SELECT e.failure_code, e.failed_stage, COUNT(*) FROM analytics_events e WHERE {where}"
            f" AND e.event_type = '{FAILED}' GROUP BY e.failure_code, e.failed_stage"
            " ORDER BY COUNT(*) DESC, e.failure_code, e.failed_stage")
        auth_to_capture = [int(r[0]) for r in q(
            f"SELECT p.captured_ms - p.authorized_ms FROM {joined} WHERE {where}"
            " AND e.event_type = 'PaymentCaptured' AND p.authorized_ms IS NOT NULL AND p.captured_ms IS NOT NULL")]
        capture_to_processed = [int(r[0]) for r in q(
            f"SELECT p.processed_ms - p.captured_ms FROM {joined} WHERE {processed}"
            " AND p.captured_ms IS NOT NULL AND p.processed_ms IS NOT NULL")]
    n_processed = events.get(PROCESSED, 0)
    n_failed = events.get(FAILED, 0)
    finished = n_processed + n_failed
    failure_rows: dict[str, dict[str, Any]] = {}
    for code, stage, count in by_reason:
        entry = failure_rows.setdefault(str(code), {"reason": str(code), "count": 0, "stages": {}})
        entry["count"] += int(count)
        entry["stages"][str(stage)] = int(count)
    reasons = sorted(failure_rows.values(), key=lambda e: (-e["count"], e["reason"]))
    for entry in reasons:
        entry["rate"] = round(entry["count"] / finished, 6) if finished else 0.0
    return {
        "events": events,
        "processed": [{**_money(str(c), combine(h, lo)), "payments": int(n)} for c, n, h, lo in per_currency],
        "by_day": [{"day": str(d), **_money(str(c), combine(h, lo)), "payments": int(n)}
                   for d, c, n, h, lo in by_day],
        "by_method": [
            {"method_type": str(m), **_money(str(c), combine(h, lo)), "payments": int(n)}
            for m, c, n, h, lo in by_method
        ],
        "by_merchant": [
            {"merchant_id": m, **_money(str(c), combine(h, lo)), "payments": int(n)}
            for m, c, n, h, lo in by_merchant
        ],
        "failures": {
            "total": n_failed,
            "rate": round(n_failed / finished, 6) if finished else 0.0,
            "by_reason": reasons,
        },
        "timings": {
            "authorization_to_capture": _durations(auth_to_capture),
            "capture_to_processed": _durations(capture_to_processed),
        },
    }
