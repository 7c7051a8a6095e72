"""Notifications (the e-mails) and their summary."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from payevents.faces.web.common import Cfg, Limit, StartingAfter, json_response, page
from payevents.faces.web.errors import READ_ERRORS
from payevents.services import notifications

router = APIRouter(tags=["notifications"], responses=READ_ERRORS)


@router.get("/api/notifications")
def list_notifications(settings: Cfg, status: str | None = None, payment_id: str | None = None, limit: Limit = 100,
                       starting_after: StartingAfter = None) -> Response:
    """Notifications (one per PaymentProcessed event), newest first (a page)."""
    return page(lambda n, after: notifications.list_notifications(settings, status, n, payment_id=payment_id,
                                                                  starting_after=after),
                limit, starting_after, lambda m: m.event_id)


@router.get("/api/notifications/summary")
def notifications_summary(settings: Cfg) -> Response:
    return json_response(notifications.summary(settings))
