"""The ledger: journal and trial balance."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from payevents.faces.web.common import Cfg, Limit, StartingAfter, json_response, page
from payevents.faces.web.errors import READ_ERRORS
from payevents.services import ledger

router = APIRouter(tags=["ledger"], responses=READ_ERRORS)


@router.get("/api/ledger/journal")
def journal(settings: Cfg, payment_id: str | None = None, limit: Limit = 100,
            starting_after: StartingAfter = None) -> Response:
    """Journal entries with their lines, newest first (a page). Amounts: ``amount`` in major units of the
    line's ``currency`` (and ``amount_minor``)."""
    return page(lambda n, after: ledger.journal(settings, payment_id=payment_id, limit=n, newest_first=True,
                                                starting_after=after),
                limit, starting_after, lambda e: e.entry_id)


@router.get("/api/ledger/trial-balance")
def trial_balance(settings: Cfg) -> Response:
    return json_response(ledger.balances(settings))
