"""The dashboard's server-rendered pages and charts."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from payevents.errors import NotFound
from payevents.faces.web import charts, data
from payevents.faces.web.common import Cfg
from payevents.runtime import outbox
from payevents.services import analytics, invoices, ledger, notifications, payments

router = APIRouter(include_in_schema=False)


def render(request: Request, name: str, **ctx: Any) -> HTMLResponse:
    response: HTMLResponse = request.app.state.templates.TemplateResponse(request, name, {"nav": name, **ctx})
    return response


@router.get("/", response_class=HTMLResponse)
def overview(request: Request, settings: Cfg) -> HTMLResponse:
    pub = data.publish_figures(settings)
    rows = data.revenue_rows(settings)
    trial = ledger.balances(settings)
    by_status: dict[str, int] = {}
    for inv in invoices.list_invoices(settings, limit=100_000):
        by_status[inv.status] = by_status.get(inv.status, 0) + 1
    counts: dict[str, int] = {}
    for p in payments.list_payments(settings, limit=100_000):
        counts[p.state] = counts.get(p.state, 0) + 1
    return render(
        request, "overview.html.j2",
        pub=pub,
        rate_window=data.RATE_WINDOW_S,
        sla=data.SLA_SECONDS,
        histogram_svg=charts.delay_histogram_svg(pub.histogram, data.SLA_SECONDS),
        lag=data.lag_per_service(settings),
        revenue=data.revenue_by_currency(rows),
        has_revenue=any(r.payments for r in rows),
        trial=trial,
        invoices_by_status=by_status,
        payment_states=counts,
        mail=notifications.summary(settings),
        dead_letters=len(data.group_dead_letters(data.dead_letters(settings, 10_000))),
        workers=data.workers(settings),
        now=time.time(),
    )


@router.get("/charts/revenue.svg")
def revenue_svg(settings: Cfg, days: Annotated[int, Query(ge=1, le=3660)] = 31,
                by: str = "day") -> Response:
    first, last = data.revenue_window(days)
    svg = charts.revenue_svg(data.revenue_rows(settings, days, by), first, last, by)
    return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "no-store"})


@router.get("/charts/publish-delay.svg")
def delay_svg(settings: Cfg) -> Response:
    pub = data.publish_figures(settings)
    return Response(charts.delay_histogram_svg(pub.histogram, data.SLA_SECONDS), media_type="image/svg+xml")


@router.get("/payments", response_class=HTMLResponse)
def payments_page(request: Request, settings: Cfg, state: str | None = None) -> HTMLResponse:
    return render(request, "payments.html.j2", payments=payments.list_payments(settings, state=state, limit=200),
                  state=state)


@router.get("/payments/{payment_id}", response_class=HTMLResponse)
def timeline_page(request: Request, settings: Cfg, payment_id: str) -> HTMLResponse:
    from payevents.contracts import channel

    journal = ledger.journal(settings, payment_id=payment_id)
    mails = notifications.list_notifications(settings, None, 20, payment_id=payment_id)
    try:
        p = payments.show(settings, payment_id)
    except NotFound:
        if not journal and not mails:
            raise
        p = None  # a legacy (or another producer's) payment: only the consumers know it
    return render(request, "timeline.html.j2", p=p, payment_id=payment_id,
                  events=payments.timeline(settings, payment_id) if p is not None else [],
                  audit_headers=channel.AUDIT_HEADERS, journal=journal, mails=mails)


@router.get("/ledger", response_class=HTMLResponse)
def ledger_page(request: Request, settings: Cfg, limit: Annotated[int, Query(ge=1, le=1000)] = 50,
                starting_after: str | None = None) -> HTMLResponse:
    """The trial balance, then the journal newest first, ``limit`` entries a page (keyset: ``starting_after``)."""
    entries = ledger.journal(settings, limit=limit + 1, newest_first=True, starting_after=starting_after)
    return render(request, "ledger.html.j2", trial=ledger.balances(settings), entries=entries[:limit], limit=limit,
                  starting_after=starting_after,
                  next_cursor=entries[limit - 1].entry_id if len(entries) > limit else None)


@router.get("/invoices", response_class=HTMLResponse)
def invoices_page(request: Request, settings: Cfg, status: str | None = None) -> HTMLResponse:
    return render(request, "invoices.html.j2", invoices=invoices.list_invoices(settings, status=status),
                  unapplied=invoices.unapplied(settings), status=status)


@router.get("/revenue", response_class=HTMLResponse)
def revenue_page(request: Request, settings: Cfg, days: Annotated[int, Query(ge=1, le=3660)] = 31,
                 by: str = "day") -> HTMLResponse:
    rows = data.revenue_rows(settings, days, by)
    return render(request, "revenue.html.j2", rows=rows, totals=data.revenue_by_currency(rows), days=days, by=by,
                  has_revenue=any(r.payments for r in rows), metrics=analytics.metrics(settings))


@router.get("/notifications", response_class=HTMLResponse)
def notifications_page(request: Request, settings: Cfg, status: str | None = None) -> HTMLResponse:
    return render(request, "notifications.html.j2", mails=notifications.list_notifications(settings, status, 500),
                  summary=notifications.summary(settings), status=status)


@router.get("/dead-letters", response_class=HTMLResponse)
def dead_letters_page(request: Request, settings: Cfg) -> HTMLResponse:
    return render(request, "deadletters.html.j2", groups=data.group_dead_letters(data.dead_letters(settings, 2000)),
                  set_aside=outbox.list_set_aside(data.payments_engine(settings)))


@router.get("/catalog")
def catalog_root() -> RedirectResponse:
    return RedirectResponse("/catalog/")
