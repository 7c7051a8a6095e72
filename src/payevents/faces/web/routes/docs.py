"""Interactive API docs that work offline: Swagger UI from the package's own static files (no CDN)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse

router = APIRouter(include_in_schema=False)

#: Swagger UI (swagger-ui-dist, Apache-2.0) vendored under static/swagger-ui
ASSETS = "/static/swagger-ui"


@router.get("/docs", response_class=HTMLResponse)
def swagger_ui(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url=request.app.openapi_url, title=f"{request.app.title} API",
        swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js", swagger_css_url=f"{ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
        # validatorUrl None: no badge fetched from the public validator
        swagger_ui_parameters={"validatorUrl": None, "persistAuthorization": True},
    )
