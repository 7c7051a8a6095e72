"""The HTTP API (JSON) and the dashboard (server-rendered HTML), one FastAPI app per settings.

Thin: every route (one router per area in :mod:`.routes`) parses, calls a service or runtime function with
the settings, and formats. Write endpoints need ``Authorization: Bearer <settings.api_token>``; reads are
open. Money in JSON is a decimal string (never a float).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from payevents import __version__
from payevents.contracts.channel import parse_env
from payevents.faces.web import errors
from payevents.faces.web.common import mask_access_log
from payevents.faces.web.routes import (
    analytics,
    customers,
    dashboard,
    docs,
    health,
    invoices,
    ledger,
    notifications,
    outbox,
    payments,
)
from payevents.settings import Settings, check_api_token

_HERE = Path(__file__).parent

ROUTERS = (docs, health, payments, invoices, customers, ledger, analytics, notifications, outbox, dashboard)


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

    mask_access_log()
    # /docs is served by routes.docs from local files; FastAPI's own /docs and /redoc load from a CDN
    app = FastAPI(title="payevents", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Payments lifecycle, ledger, invoices, analytics, notifications and the channel.")
    app.state.settings = settings
    app.state.templates = _templates(parse_env(settings.env).value)

    app.mount("/static", StaticFiles(directory=str(_HERE / "static")), name="static")
    app.mount("/catalog", StaticFiles(directory=str(site), html=True), name="catalog")
    app.add_middleware(errors.BodyLimit)  # innermost of the middleware: a read past the limit raises in the route
    errors.install(app)
    for module in ROUTERS:
        app.include_router(module.router)
    original_openapi = app.openapi
    app.openapi = lambda: errors.document(original_openapi())  # type: ignore[method-assign]
    return app


def _templates(env_name: str) -> Jinja2Templates:
    templates = Jinja2Templates(directory=str(_HERE / "templates"))
    templates.env.autoescape = True  # the templates end in .html.j2, which select_autoescape() leaves unescaped
    templates.env.filters["ts"] = _fmt_ts
    templates.env.filters["ms"] = _fmt_ms
    templates.env.filters["major"] = _major
    templates.env.globals["version"] = __version__
    templates.env.globals["env"] = env_name
    return templates


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


def _major(minor: int, currency: str) -> str:
    """Minor units as a decimal string in major units of ``currency`` (the currency's exponent)."""
    from payevents.services.payments.money import from_minor

    return str(from_minor(int(minor), currency))


def _fmt_ms(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    return f"{seconds * 1000:.1f} ms" if seconds < 10 else f"{seconds:.1f} s"
