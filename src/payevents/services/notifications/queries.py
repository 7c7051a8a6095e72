"""Read side of notifications: the intents with their status and reasons."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from payevents.contracts.cardguard import safe_repr
from payevents.errors import ContractError, NotFound
from payevents.services.notifications.render import message_id_for
from payevents.services.notifications.store import STATUSES, engine
from payevents.settings import Settings
from payevents.store.paging import after_clause


@dataclasses.dataclass(frozen=True, slots=True)
class Notification:
    event_id: str
    payment_id: str
    customer_id: str | None
    status: str  # pending | sent | failed | skipped
    reason_code: str | None
    reason: str | None
    recipient: str | None
    subject: str | None
    message_id: str
    amount: str
    currency: str
    legacy: bool
    attempts: int
    next_attempt_at: str | None
    last_error: str | None
    created_at: str
    sent_at: str | None


_COLUMNS = ("event_id, payment_id, customer_id, status, reason_code, reason, recipient, subject, message_id,"
            " amount, currency, legacy, attempts, next_attempt_ms, last_error, created_at, sent_at")


def _row(r: Any, settings: Settings) -> Notification:
    return Notification(
        event_id=r.event_id, payment_id=r.payment_id, customer_id=r.customer_id, status=r.status,
        reason_code=r.reason_code, reason=r.reason, recipient=r.recipient, subject=r.subject,
        message_id=r.message_id or message_id_for(r.event_id, settings.mail_from), amount=r.amount,
        currency=r.currency, legacy=bool(r.legacy), attempts=int(r.attempts),
        next_attempt_at=(datetime.fromtimestamp(int(r.next_attempt_ms) / 1000, UTC).isoformat()
                         if r.status == "pending" else None),
        last_error=r.last_error, created_at=r.created_at, sent_at=r.sent_at,
    )


def list_notifications(
    settings: Settings, status: str | None = None, limit: int = 100, payment_id: str | None = None,
    *, starting_after: str | None = None,
) -> list[Notification]:
    """Newest first; optionally only one status (pending, sent, failed, skipped) or one payment;
    ``starting_after``: those after that event id in this order (keyset paging)."""
    if status is not None and status not in STATUSES:
        raise ContractError(f"status: {status!r} must be one of {', '.join(STATUSES)}")
    where, params = ["1 = 1"], {"limit": limit}
    if status is not None:
        where.append("status = :status")
        params["status"] = status  # type: ignore[assignment]
    if payment_id is not None:
        where.append("payment_id = :payment_id")
        params["payment_id"] = payment_id  # type: ignore[assignment]
    with engine(settings).connect() as conn:
        if starting_after is not None:
            clause, more = after_clause(conn, "notifications", "created_at", "event_id", descending=True,
                                        starting_after=starting_after)
            where.append(clause)
            params.update(more)
        sql = (f"SELECT {_COLUMNS} FROM notifications WHERE {' AND '.join(where)}"
               " ORDER BY created_at DESC, event_id LIMIT :limit")
        return [_row(r, settings) for r in conn.execute(sa.text(sql), params)]


def get_notification(settings: Settings, event_id: str) -> Notification:
    """The notification of one PaymentProcessed event; NotFound when there is none."""
    with engine(settings).connect() as conn:
        sql = f"SELECT {_COLUMNS} FROM notifications WHERE event_id = :id"
        r = conn.execute(sa.text(sql), {"id": event_id}).first()
    if r is None:
        raise NotFound(f"eventId: no notification for event {safe_repr(event_id)}")
    return _row(r, settings)


def summary(settings: Settings) -> dict[str, Any]:
    """Counts per status and, for skipped and failed ones, per reason code."""
    with engine(settings).connect() as conn:
        by_status = conn.execute(sa.text("SELECT status, COUNT(*) FROM notifications GROUP BY status"))
        counts: dict[str, int] = {str(st): int(n) for st, n in by_status}
        reasons = conn.execute(sa.text(
            "SELECT status, reason_code, COUNT(*) FROM notifications WHERE status IN ('skipped', 'failed')"
            " GROUP BY status, reason_code ORDER BY status, reason_code")).all()
    out: dict[str, Any] = {s: int(counts.get(s, 0)) for s in STATUSES}
    out["reasons"] = {s: {str(code): int(n) for st, code, n in reasons if st == s} for s in ("skipped", "failed")}
    return out
