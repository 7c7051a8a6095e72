"""Notifications (the e-mails) and their summary."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from payevents.faces.web.common import Cfg, json_response
from payevents.faces.web.errors import READ_ERRORS
from payevents.services import notifications

router = APIRouter(tags=["notifications"], responses=READ_ERRORS)


@router.get("/api/notifications")
def list_notifications(settings: Cfg, status: str | None = None, payment_id: str | None = None,
                       limit: Annotated[int, Query(ge=1, le=10000)] = 100) -> Response:
    return json_response(notifications.list_notifications(settings, status, limit, payment_id=payment_id))


@router.get("/api/notifications/summary")
def notifications_summary(settings: Cfg) -> Response:
    return json_response(notifications.summary(settings))
