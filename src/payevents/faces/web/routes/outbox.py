"""The channel side: dead letters, events set aside by the relay, publish figures and lag."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from payevents.faces.web import data
from payevents.faces.web.common import Cfg, json_response
from payevents.faces.web.errors import READ_ERRORS
from payevents.runtime import outbox

router = APIRouter(tags=["channel"], responses=READ_ERRORS)


@router.get("/api/dead-letters")
def list_dead_letters(settings: Cfg, service: str | None = None,
                      limit: Annotated[int, Query(ge=1, le=10000)] = 100) -> Response:
    return json_response(data.dead_letters(settings, limit, service))


@router.get("/api/outbox/set-aside")
def list_set_aside(settings: Cfg, include_resent: bool = False) -> Response:
    """Outbox events the broker refused for good, with their reasons (re-send: payevents outbox resend)."""
    return json_response([a.to_dict() for a in outbox.list_set_aside(data.payments_engine(settings),
                                                                       include_resent=include_resent)])


@router.get("/api/channel")
def channel_figures(settings: Cfg) -> Response:
    return json_response({"publish": data.publish_figures(settings), "lag": data.lag_per_service(settings)})
