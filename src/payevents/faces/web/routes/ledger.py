"""The ledger: journal and trial balance."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from payevents.faces.web.common import Cfg, json_response
from payevents.faces.web.errors import READ_ERRORS
from payevents.services import ledger

router = APIRouter(tags=["ledger"], responses=READ_ERRORS)


@router.get("/api/ledger/journal")
def journal(settings: Cfg, payment_id: str | None = None,
            limit: Annotated[int, Query(ge=1, le=10000)] = 100) -> Response:
    return json_response(ledger.journal(settings, payment_id=payment_id, limit=limit))


@router.get("/api/ledger/trial-balance")
def trial_balance(settings: Cfg) -> Response:
    return json_response(ledger.balances(settings))
