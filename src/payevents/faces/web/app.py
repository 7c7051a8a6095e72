"""The HTTP API (JSON) and the dashboard (server-rendered HTML), one FastAPI app per settings.

Thin: every route parses, calls a service or runtime function with the settings, and formats. Write
endpoints need ``Authorization: Bearer <settings.api_token>``; reads are open. Money in JSON is a
decimal string (never a float).
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import msgspec
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, Field

from payevents import __version__
from payevents.contracts.cardguard import mask_card_text
from payevents.contracts.channel import parse_env
from payevents.errors import (
    ConfigError,
    ContractError,
    IdempotencyConflict,
    IllegalTransition,
    NotFound,
    PayeventsError,
    TransientError,
)
from payevents.faces.web import charts, data, idempotency
from payevents.runtime import outbox
from payevents.runtime.outbox import retry_serialization
from payevents.settings import Settings, check_api_token

log = logging.getLogger("payevents.web")
_HERE = Path(__file__).parent
_ENCODER = msgspec.json.Encoder(decimal_format="string")


def json_response(value: Any, status_code: int = 200) -> Response:
    """Structs, dataclasses, Decimals (as strings) and datetimes (RFC 3339) as JSON."""
    return Response(_ENCODER.encode(msgspec.to_builtins(value, builtin_types=(datetime, date))),
                    status_code=status_code, media_type="application/json")


#: the ``Idempotency-Key`` request header of the payment commands (a retry returns the first result)
IdemKey = Annotated[str | None, Header(alias="Idempotency-Key")]


# -- request bodies --------------------------------------------------------------------------------------


class CreatePayment(BaseModel):
    customer_id: str
    amount: str = Field(description="decimal string, e.g. '99.99' (never a float)")
    currency: str
    description: str
    method_type: str = "credit_card"
    last4: str = "4242"
    invoice_id: str | None = None
    order_id: str | None = None
    merchant_id: str | None = None
    payment_id: str | None = None


class AuthorizePayment(BaseModel):
    decline: str | None = Field(default=None, description="ask the simulated gateway to decline with this code")


class FailPayment(BaseModel):
    code: str
    reason: str


class CreateInvoice(BaseModel):
    customer_id: str
    amount_due: str
    currency: str
    due_date: date
    invoice_id: str | None = None
    description: str | None = None


class AddCustomer(BaseModel):
    customer_id: str
    name: str
    email: str | None = None
    locale: str = "en_US"


def _masked(value: Any) -> Any:
    """``value`` (JSON-ready) with card numbers masked in every string."""
    if isinstance(value, str):
        return mask_card_text(value)
    if isinstance(value, list):
        return [_masked(v) for v in value]
    if isinstance(value, dict):
        return {k: _masked(v) for k, v in value.items()}
    return value


class _MaskCardNumbers(logging.Filter):
    """Masks card numbers in a log record's arguments (uvicorn's access log: the request path and query)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(mask_card_text(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = mask_card_text(record.msg)
        return True


def _mask_access_log() -> None:
    logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, _MaskCardNumbers) for f in logger.filters):
        logger.addFilter(_MaskCardNumbers())


def _amount(value: str | int | float) -> str:
    if isinstance(value, float):  # pydantic may hand us a JSON number as float: refuse, never round
        raise ContractError("amount: send a decimal string (e.g. \"99.99\"), not a JSON float")
    return str(value)


# -- the app ---------------------------------------------------------------------------------------------


def create_app(settings: Settings, *, catalog_dir: Path | None = None) -> FastAPI:
    """The API + dashboard for ``settings``. The catalog site is built into ``catalog_dir`` (a temporary
    directory by default) when the app starts and served at ``/catalog``."""
    from payevents.faces.catalog import build_site

    check_api_token(settings)  # outside dev: no start with the dev default or a short token
    owned_catalog = catalog_dir is None
    site = Path(tempfile.mkdtemp(prefix="payevents-catalog-")) if catalog_dir is None else catalog_dir
    build_site(site, settings)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if owned_catalog:
                shutil.rmtree(site, ignore_errors=True)

    _mask_access_log()
    app = FastAPI(title="payevents", version=__version__, lifespan=lifespan,
                  description="Payments lifecycle, ledger, invoices, analytics, notifications and the channel.")
    app.state.settings = settings
    env_name = parse_env(settings.env).value
    templates = Jinja2Templates(directory=str(_HERE / "templates"))
    templates.env.autoescape = True  # the templates end in .html.j2, which select_autoescape() leaves unescaped
    templates.env.filters["ts"] = _fmt_ts
    templates.env.filters["ms"] = _fmt_ms
    templates.env.globals["version"] = __version__
    templates.env.globals["env"] = env_name
    revenue_chart = charts.RevenueChart()

    app.mount("/static", StaticFiles(directory=str(_HERE / "static")), name="static")
    app.mount("/catalog", StaticFiles(directory=str(site), html=True), name="catalog")

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_request: Request, exc: RequestValidationError) -> Response:
        # FastAPI's default echoes each bad value ("input"): a card number sent in a field would come back
        errors = [{k: v for k, v in e.items() if k != "input"} for e in exc.errors()]
        return JSONResponse({"detail": _masked(jsonable_encoder(errors))}, status_code=422)

    @app.exception_handler(PayeventsError)
    async def _payevents_error(_request: Request, exc: PayeventsError) -> Response:
        status = 400
        if isinstance(exc, NotFound):
            status = 404
        elif isinstance(exc, IdempotencyConflict | IllegalTransition):
            status = 409
        elif isinstance(exc, ContractError | ConfigError):
            status = 422
        elif isinstance(exc, TransientError):  # e.g. a serialization failure retried in vain: retry later
            return JSONResponse({"error": type(exc).__name__, "detail": mask_card_text(str(exc))}, status_code=503,
                                headers={"Retry-After": "1"})
        # the services never echo card data; masking here too keeps any future message from doing it
        return json_response({"error": type(exc).__name__, "detail": mask_card_text(str(exc))}, status)

    def require_token(authorization: Annotated[str | None, Header()] = None) -> None:
        scheme, _, token = (authorization or "").partition(" ")
        expected = settings.api_token.strip().encode()
        if not expected or scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected):
            raise HTTPException(status_code=401, detail="a valid bearer token is required for writes",
                                headers={"WWW-Authenticate": 'Bearer realm="payevents"'})

    Write = Depends(require_token)

    # -- health and metrics ---------------------------------------------------------------------------

    @app.get("/api/health")
    def health() -> Response:
        checks: dict[str, str] = {}
        ok = True
        try:
            with data.payments_engine(settings).connect() as conn:
                conn.exec_driver_sql("SELECT 1")
            checks["payments-store"] = "ok"
        except Exception as exc:
            ok, checks["payments-store"] = False, f"error: {type(exc).__name__}"
        # every worker that registered in this data dir must be alive (a stopped one is degraded too)
        views = data.workers(settings)
        for v in views:
            if v.healthy:
                checks[f"worker:{v.label}"] = "ok" if v.ready else "ok (no partitions assigned)"
            elif v.alive:  # up, but waiting for its database or broker, or its store does not answer
                ok = False
                checks[f"worker:{v.label}"] = f"degraded: {v.state}" + ("" if v.store_ok is not False
                                                                       else ", store unreachable") + (
                    f" ({v.detail})" if v.detail else "")
            else:
                ok = False
                exit_ = f", exit code {v.exitcode}" if v.exitcode is not None else ""
                checks[f"worker:{v.label}"] = f"down: {v.state}{exit_}"
        if not views:
            checks["workers"] = "none registered (payevents run all starts them)"
        return json_response({"status": "ok" if ok else "degraded", "env": env_name,
                              "broker": "kafka" if settings.is_kafka else "embedded", "version": __version__,
                              "checks": checks, "workers": [v.to_dict() for v in views]}, 200 if ok else 503)

    @app.get("/api/workers")
    def workers_status() -> Response:
        return json_response([v.to_dict() for v in data.workers(settings)])

    @app.get("/metrics")
    def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    # -- payments -------------------------------------------------------------------------------------

    from payevents.services import analytics, invoices, ledger, notifications, payments

    def created(scope: str, key: str, body: BaseModel, create: Callable[[], Any]) -> Response:
        """An idempotent create (see :mod:`.idempotency`): the first answer, replayed to retries."""

        def first() -> idempotency.Answer:
            r = json_response(retry_serialization(create), 201)
            return idempotency.Answer(r.status_code, bytes(r.body))

        a = idempotency.run(settings, scope, key, body.model_dump(mode="json"), first)
        return Response(a.body, status_code=a.status_code, media_type="application/json",
                        headers={"Idempotent-Replayed": "true"} if a.replayed else None)

    @app.post("/api/payments", status_code=201, dependencies=[Write])
    def create_payment(body: CreatePayment, idempotency_key: IdemKey = None) -> Response:
        key = idempotency.resolve_key(idempotency_key, body.payment_id, "payments")
        return created("payments", key, body, lambda: payments.create(
            settings, customer_id=body.customer_id, amount=_amount(body.amount), currency=body.currency,
            description=body.description, method_type=body.method_type, last4=body.last4,
            invoice_id=body.invoice_id, order_id=body.order_id, merchant_id=body.merchant_id,
            payment_id=body.payment_id, idempotency_key=key))

    @app.post("/api/payments/{payment_id}/authorize", dependencies=[Write])
    def authorize_payment(payment_id: str, body: AuthorizePayment | None = None,
                          idempotency_key: IdemKey = None) -> Response:
        decline = body.decline if body else None
        return json_response(retry_serialization(lambda: payments.authorize(
            settings, payment_id, idempotency_key=idempotency_key, decline=decline)))

    @app.post("/api/payments/{payment_id}/capture", dependencies=[Write])
    def capture_payment(payment_id: str, idempotency_key: IdemKey = None) -> Response:
        return json_response(retry_serialization(lambda: payments.capture(
            settings, payment_id, idempotency_key=idempotency_key)))

    @app.post("/api/payments/{payment_id}/complete", dependencies=[Write])
    def complete_payment(payment_id: str, idempotency_key: IdemKey = None) -> Response:
        return json_response(retry_serialization(lambda: payments.complete(
            settings, payment_id, idempotency_key=idempotency_key)))

    @app.post("/api/payments/{payment_id}/fail", dependencies=[Write])
    def fail_payment(payment_id: str, body: FailPayment, idempotency_key: IdemKey = None) -> Response:
        return json_response(retry_serialization(lambda: payments.fail(
            settings, payment_id, code=body.code, reason=body.reason, idempotency_key=idempotency_key)))

    @app.get("/api/payments")
    def list_payments(state: str | None = None, customer_id: str | None = None,
                      limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Response:
        return json_response(payments.list_payments(settings, state=state, customer_id=customer_id, limit=limit))

    @app.get("/api/payments/{payment_id}")
    def show_payment(payment_id: str) -> Response:
        return json_response(payments.show(settings, payment_id))

    @app.get("/api/payments/{payment_id}/timeline")
    def payment_timeline(payment_id: str) -> Response:
        payments.show(settings, payment_id)  # 404 for an unknown payment
        return json_response(payments.timeline(settings, payment_id))

    # -- invoices and customers -----------------------------------------------------------------------

    @app.post("/api/invoices", status_code=201, dependencies=[Write])
    def create_invoice(body: CreateInvoice, idempotency_key: IdemKey = None) -> Response:
        key = idempotency.resolve_key(idempotency_key, body.invoice_id, "invoices")
        # no id chosen: one derived from the key, so a retry after a crash finds the same invoice
        invoice_id = body.invoice_id or idempotency.derived_id("INV-", "invoices", key)
        return created("invoices", key, body, lambda: invoices.create(
            settings, customer_id=body.customer_id, amount_due=_amount(body.amount_due), currency=body.currency,
            due_date=body.due_date, invoice_id=invoice_id, description=body.description))

    @app.get("/api/invoices")
    def list_invoices(status: str | None = None, customer_id: str | None = None,
                      limit: Annotated[int, Query(ge=1, le=10000)] = 1000) -> Response:
        return json_response(invoices.list_invoices(settings, status=status, customer_id=customer_id, limit=limit))

    @app.get("/api/invoices/unapplied")
    def unapplied_payments() -> Response:
        return json_response(invoices.unapplied(settings))

    @app.get("/api/invoices/{invoice_id}")
    def show_invoice(invoice_id: str) -> Response:
        return json_response(invoices.show(settings, invoice_id))

    @app.post("/api/customers", status_code=201, dependencies=[Write])
    def add_customer(body: AddCustomer, idempotency_key: IdemKey = None) -> Response:
        key = idempotency.resolve_key(idempotency_key, body.customer_id, "customers")
        return created("customers", key, body, lambda: notifications.add_customer(
            settings, body.customer_id, body.name, body.email, body.locale))

    @app.get("/api/customers")
    def list_customers(limit: Annotated[int | None, Query(ge=1)] = None) -> Response:
        return json_response(notifications.list_customers(settings, limit))

    @app.get("/api/customers/{customer_id}")
    def show_customer(customer_id: str) -> Response:
        return json_response(notifications.get_customer(settings, customer_id))

    # -- ledger, analytics, notifications, dead letters ------------------------------------------------

    @app.get("/api/ledger/journal")
    def journal(payment_id: str | None = None, limit: Annotated[int, Query(ge=1, le=10000)] = 100) -> Response:
        return json_response(ledger.journal(settings, payment_id=payment_id, limit=limit))

    @app.get("/api/ledger/trial-balance")
    def trial_balance() -> Response:
        return json_response(ledger.balances(settings))

    @app.get("/api/analytics/report")
    def revenue_report(from_: Annotated[date | None, Query(alias="from")] = None,
                       to: date | None = None, by: str = "day") -> Response:
        to = to or datetime.now(UTC).date()
        from_ = from_ or to - timedelta(days=30)
        return json_response(analytics.report(settings, from_, to, by))  # type: ignore[arg-type]

    @app.get("/api/analytics/metrics")
    def analytics_metrics(
        from_: Annotated[date | None, Query(alias="from")] = None, to: date | None = None
    ) -> Response:
        return json_response(analytics.metrics(settings, from_, to))

    @app.get("/api/notifications")
    def list_notifications(status: str | None = None, payment_id: str | None = None,
                           limit: Annotated[int, Query(ge=1, le=10000)] = 100) -> Response:
        return json_response(notifications.list_notifications(settings, status, limit, payment_id=payment_id))

    @app.get("/api/notifications/summary")
    def notifications_summary() -> Response:
        return json_response(notifications.summary(settings))

    @app.get("/api/dead-letters")
    def list_dead_letters(service: str | None = None, limit: Annotated[int, Query(ge=1, le=10000)] = 100) -> Response:
        return json_response(data.dead_letters(settings, limit, service))

    @app.get("/api/outbox/set-aside")
    def list_set_aside(include_resent: bool = False) -> Response:
        """Outbox events the broker refused for good, with their reasons (re-send: payevents outbox resend)."""
        return json_response([a.to_dict() for a in outbox.list_set_aside(data.payments_engine(settings),
                                                                           include_resent=include_resent)])

    @app.get("/api/channel")
    def channel_figures() -> Response:
        return json_response({"publish": data.publish_figures(settings), "lag": data.lag_per_service(settings)})

    # -- dashboard pages ------------------------------------------------------------------------------

    def page(name: str) -> Callable[..., HTMLResponse]:
        def render(request: Request, **ctx: Any) -> HTMLResponse:
            return templates.TemplateResponse(request, name, {"nav": name, **ctx})

        return render

    @app.get("/", response_class=HTMLResponse)
    def overview(request: Request) -> HTMLResponse:
        pub = data.publish_figures(settings)
        rows = data.revenue_rows(settings)
        trial = ledger.balances(settings)
        by_status: dict[str, int] = {}
        for inv in invoices.list_invoices(settings, limit=100_000):
            by_status[inv.status] = by_status.get(inv.status, 0) + 1
        counts: dict[str, int] = {}
        for p in payments.list_payments(settings, limit=100_000):
            counts[p.state] = counts.get(p.state, 0) + 1
        return page("overview.html.j2")(
            request,
            pub=pub,
            sla=data.SLA_SECONDS,
            histogram_svg=charts.delay_histogram_svg(pub.histogram, data.SLA_SECONDS),
            lag=data.lag_per_service(settings),
            revenue=data.revenue_by_currency(rows),
            has_revenue=any(r.payments for r in rows),
            trial=trial,
            invoices_by_status=by_status,
            payment_states=counts,
            mail=notifications.summary(settings),
            dead_letters=len(data.dead_letters(settings, 10_000)),
            workers=data.workers(settings),
            now=time.time(),
        )

    @app.get("/charts/revenue.svg")
    def revenue_svg(days: Annotated[int, Query(ge=1, le=3660)] = 31, by: str = "day") -> Response:
        rows = data.revenue_rows(settings, days, by)
        svg = revenue_chart.svg(rows, f"Revenue per {by} and currency, last {days} days")
        return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "no-store"})

    @app.get("/charts/publish-delay.svg")
    def delay_svg() -> Response:
        pub = data.publish_figures(settings)
        return Response(charts.delay_histogram_svg(pub.histogram, data.SLA_SECONDS), media_type="image/svg+xml")

    @app.get("/payments", response_class=HTMLResponse)
    def payments_page(request: Request, state: str | None = None) -> HTMLResponse:
        return page("payments.html.j2")(request, payments=payments.list_payments(settings, state=state, limit=200),
                                        state=state)

    @app.get("/payments/{payment_id}", response_class=HTMLResponse)
    def timeline_page(request: Request, payment_id: str) -> HTMLResponse:
        from payevents.contracts import channel

        p = payments.show(settings, payment_id)
        return page("timeline.html.j2")(request, p=p, events=payments.timeline(settings, payment_id),
                                        audit_headers=channel.AUDIT_HEADERS,
                                        journal=ledger.journal(settings, payment_id=payment_id),
                                        mails=notifications.list_notifications(settings, None, 20,
                                                                              payment_id=payment_id))

    @app.get("/ledger", response_class=HTMLResponse)
    def ledger_page(request: Request) -> HTMLResponse:
        return page("ledger.html.j2")(request, trial=ledger.balances(settings),
                                      entries=list(reversed(ledger.journal(settings, limit=200))))

    @app.get("/invoices", response_class=HTMLResponse)
    def invoices_page(request: Request, status: str | None = None) -> HTMLResponse:
        return page("invoices.html.j2")(request, invoices=invoices.list_invoices(settings, status=status),
                                        unapplied=invoices.unapplied(settings), status=status)

    @app.get("/revenue", response_class=HTMLResponse)
    def revenue_page(
        request: Request, days: Annotated[int, Query(ge=1, le=3660)] = 31, by: str = "day"
    ) -> HTMLResponse:
        rows = data.revenue_rows(settings, days, by)
        return page("revenue.html.j2")(request, rows=rows, totals=data.revenue_by_currency(rows), days=days, by=by,
                                       has_revenue=any(r.payments for r in rows),
                                       metrics=analytics.metrics(settings))

    @app.get("/notifications", response_class=HTMLResponse)
    def notifications_page(request: Request, status: str | None = None) -> HTMLResponse:
        return page("notifications.html.j2")(request, mails=notifications.list_notifications(settings, status, 500),
                                             summary=notifications.summary(settings), status=status)

    @app.get("/dead-letters", response_class=HTMLResponse)
    def dead_letters_page(request: Request) -> HTMLResponse:
        return page("deadletters.html.j2")(request, letters=data.dead_letters(settings, 500),
                                           set_aside=outbox.list_set_aside(data.payments_engine(settings)))

    @app.get("/catalog", include_in_schema=False)
    def catalog_root() -> RedirectResponse:
        return RedirectResponse("/catalog/")

    return app


def _fmt_ts(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, int | float):
        value = datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        return value.replace("T", " ")[:23]
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"
    return str(value)


def _fmt_ms(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    return f"{seconds * 1000:.1f} ms" if seconds < 10 else f"{seconds:.1f} s"
