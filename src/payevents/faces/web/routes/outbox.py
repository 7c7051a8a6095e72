"""The channel side: dead letters, events set aside by the relay, publish figures and lag."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from payevents.faces.web import data
from payevents.faces.web.common import Cfg, Limit, StartingAfter, json_response, page_of_list
from payevents.faces.web.errors import READ_ERRORS
from payevents.runtime import outbox

#: how many of the newest dead letters the list pages through
DEAD_LETTERS_READ = 10_000

router = APIRouter(tags=["channel"], responses=READ_ERRORS)


@router.get("/api/dead-letters")
def list_dead_letters(settings: Cfg, service: str | None = None, limit: Limit = 100,
                      starting_after: StartingAfter = None) -> Response:
    """Dead letters, newest first (a page; of the newest 10,000). Id: ``partition:offset`` in the dead-letter
    channel."""
    return page_of_list(data.dead_letters(settings, DEAD_LETTERS_READ, service), limit, starting_after,
                        data.dead_letter_id)


@router.get("/api/outbox/set-aside")
def list_set_aside(settings: Cfg, include_resent: bool = False, limit: Limit = 100,
                   starting_after: StartingAfter = None) -> Response:
    """Outbox events the broker refused for good, with their reasons (re-send: payevents outbox resend); a page,
    id: the outbox seq."""
    rows = [a.to_dict() for a in outbox.list_set_aside(data.payments_engine(settings), include_resent=include_resent)]
    return page_of_list(rows, limit, starting_after, lambda a: str(a["seq"]))


@router.get("/api/channel")
def channel_figures(settings: Cfg) -> Response:
    return json_response({"publish": data.publish_figures(settings), "lag": data.lag_per_service(settings)})
