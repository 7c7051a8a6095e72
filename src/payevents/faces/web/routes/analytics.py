"""Analytics: the revenue report and the payment metrics."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from payevents.faces.web.common import Cfg, json_response
from payevents.faces.web.errors import READ_ERRORS
from payevents.services import analytics

router = APIRouter(tags=["analytics"], responses=READ_ERRORS)


@router.get("/api/analytics/report")
def revenue_report(settings: Cfg, from_: Annotated[date | None, Query(alias="from")] = None,
                   to: date | None = None, by: str = "day") -> Response:
    to = to or datetime.now(UTC).date()
    from_ = from_ or to - timedelta(days=30)
    return json_response(analytics.report(settings, from_, to, by))  # type: ignore[arg-type]


@router.get("/api/analytics/metrics")
def analytics_metrics(settings: Cfg, from_: Annotated[date | None, Query(alias="from")] = None,
                      to: date | None = None) -> Response:
    return json_response(analytics.metrics(settings, from_, to))
