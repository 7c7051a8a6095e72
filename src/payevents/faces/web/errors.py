"""One error object for every API error, and the status each class of error gets.

``{"error": {"type": ..., "code": ..., "message": ..., "param": ...}}``

- 400 invalid_request_error: the request does not fit the documented schema (a parameter missing,
  an unknown field in a write's body, a value of the wrong JSON type or format, a JSON number as an amount,
  a cursor that is not ours, a body that is not JSON);
- 401 authentication_error: a write without a valid bearer token;
- 404 invalid_request_error / resource_missing: no such resource (or path); 405 method_not_allowed;
- 413 invalid_request_error / body_too_large: a request body over :data:`MAX_BODY_BYTES` (refused before
  it is read: by its ``Content-Length``, or once that much of a chunked body came in);
- 409 idempotency_error (key reused with another body, or still running) or payment_state_invalid;
- 422 invalid_request_error / parameter_invalid: a well-formed value breaks a business rule (unknown
  currency, amount not > 0, too many decimals or over the maximum, a card number in free text);
- 503 api_error / service_unavailable: a store or broker fault outlived the retries, or a database, broker or
  disk cannot be used now (down, unreachable, full): ``Retry-After``, the message says which;
- 500 api_error / internal_error: a bug; the message says nothing more.

Every message is masked for card numbers (all but the last four digits).
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any, Literal

import sqlalchemy as sa
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from payevents.contracts.cardguard import NUL_MESSAGE, mask_card_text, shown_nul
from payevents.errors import (
    ConfigError,
    ContractError,
    IdempotencyConflict,
    IllegalTransition,
    NotFound,
    PayeventsError,
    TransientError,
)

log = logging.getLogger("payevents.web")

ErrorType = Literal["invalid_request_error", "authentication_error", "idempotency_error", "api_error"]


class ErrorDetail(BaseModel):
    type: ErrorType = Field(description="the class of error")
    code: str = Field(description="what exactly went wrong, stable for programs to branch on",
                      examples=["parameter_invalid"])
    message: str = Field(description="for people; card numbers masked")
    param: str | None = Field(default=None, description="the offending parameter (a body field, query parameter "
                                                        "or header), when there is one", examples=["amount"])


class ErrorResponse(BaseModel):
    """The body of every error response."""

    error: ErrorDetail


class RequestError(ContractError):
    """A request that does not fit the documented schema (400)."""

    def __init__(self, message: str, *, param: str | None = None, code: str = "parameter_invalid") -> None:
        super().__init__(message)
        self.param = param
        self.code = code


class Unauthorized(PayeventsError):
    """No valid bearer token on a write (401)."""


#: the responses every API operation documents, and the writes' extra ones
def _doc(description: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description}


READ_ERRORS: dict[int | str, dict[str, Any]] = {
    400: _doc("invalid_request_error: a parameter missing, unknown or of the wrong type or format"),
    404: _doc("invalid_request_error / resource_missing: no such resource"),
    422: _doc("invalid_request_error / parameter_invalid: a value breaks a rule"),
    503: _doc("api_error / service_unavailable: store or broker unavailable; retry after Retry-After"),
}
WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    **READ_ERRORS,
    401: _doc("authentication_error / token_invalid: a valid bearer token is required for writes"),
    409: _doc("idempotency_error (Idempotency-Key reused with another body, or still running) or "
              "invalid_request_error / payment_state_invalid"),
}

#: the body fields that hold an amount (``common.Amount``)
AMOUNT_FIELDS = frozenset({"amount", "amount_due"})
_PARAM = re.compile(r"^([A-Za-z_][\w.\[\]-]*): ")
_LOCATIONS = {"body", "query", "path", "header", "cookie"}


def error_response(status: int, type_: str, code: str, message: str, param: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"type": type_, "code": code, "message": mask_card_text(message),
                      "param": mask_card_text(param) if param else None}}
    return JSONResponse(body, status_code=status, headers=headers)


def param_of(message: str) -> str | None:
    """The parameter a service error names: its messages start with ``field: ...``."""
    m = _PARAM.match(message)
    return m.group(1).rsplit(".", 1)[-1] if m else None


def _validation(exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    first = errors[0] if errors else {"type": "value_error", "loc": (), "msg": "invalid request"}
    loc = [str(p) for p in first.get("loc", ()) if str(p) not in _LOCATIONS]
    param = ".".join(loc) or None
    kind = str(first.get("type", ""))
    if kind == "json_invalid":  # the body is not JSON: where the reader stopped, not a parameter
        where = f" at char {loc[0]}" if loc else ""  # counted from 0, as the json module counts
        ctx: Any = first.get("ctx") or {}
        code, param = "body_invalid", None
        message = f"body: not valid JSON ({ctx.get('error') or first.get('msg', '')}{where})"
    elif kind == "missing":
        code, message = "parameter_missing", f"{param}: required"
    elif kind == "extra_forbidden":
        code, message = "parameter_unknown", f"{param}: unknown field; see the schema at /openapi.json"
    elif kind in ("model_attributes_type", "dict_type") and not loc:
        code, message = "body_invalid", f"the body must be a JSON object: {first.get('msg', '')}"
    elif param in AMOUNT_FIELDS:
        code, message = "parameter_invalid", (f"{param}: a decimal string in major units of the currency, e.g. "
                                              '"99.99" (a JSON number is refused)')
    else:  # never echo the value ("input"): a card number sent in a field would come back
        code, message = "parameter_invalid", f"{param}: {first.get('msg', 'invalid')}" if param else str(
            first.get("msg", "invalid"))
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more)"
    return error_response(400, "invalid_request_error", code, message, param)


def unreadable_body(cause: BaseException | None) -> str | None:
    """Why a JSON body could not be read, when the framework's reader says only "There was an error parsing the
    body": bytes that are not UTF-8, a number of more digits than an int is read from (Python's limit, 4,300), or
    another ValueError's first line (``error_response`` masks card numbers in every message). None for any other
    cause."""
    if isinstance(cause, UnicodeDecodeError):
        return f"body: not UTF-8 (invalid byte at position {cause.start}: {cause.reason})"
    if isinstance(cause, ValueError) and "integer string conversion" in str(cause):
        return f"body: a JSON number has more than {sys.get_int_max_str_digits():,} digits"
    if isinstance(cause, ValueError):
        return f"body: not readable as JSON ({str(cause).splitlines()[0] if str(cause) else type(cause).__name__})"
    return None


def unavailable(message: str) -> JSONResponse:
    """The 503 of a fault that passes (a store or broker down, a conflict retried in vain): retry after a second."""
    return error_response(503, "api_error", "service_unavailable", message, headers={"Retry-After": "1"})


def payevents_error(exc: PayeventsError) -> JSONResponse:
    message = str(exc)
    if isinstance(exc, Unauthorized):
        return error_response(401, "authentication_error", "token_invalid", message,
                              headers={"WWW-Authenticate": 'Bearer realm="payevents"'})
    if isinstance(exc, RequestError):
        return error_response(400, "invalid_request_error", exc.code, message, exc.param)
    if isinstance(exc, NotFound):
        return error_response(404, "invalid_request_error", "resource_missing", message, param_of(message))
    if isinstance(exc, IdempotencyConflict):
        from payevents.faces.web.idempotency import KeyInUse

        code = "idempotency_key_in_use" if isinstance(exc, KeyInUse) else "idempotency_key_reused"
        return error_response(409, "idempotency_error", code, message, "Idempotency-Key")
    if isinstance(exc, IllegalTransition):
        return error_response(409, "invalid_request_error", "payment_state_invalid", message)
    if isinstance(exc, TransientError):  # e.g. a serialization failure retried in vain: retry later
        return unavailable(message)
    if isinstance(exc, ContractError | ConfigError):
        return error_response(422, "invalid_request_error", "parameter_invalid", message, param_of(message))
    return error_response(400, "invalid_request_error", "request_invalid", message, param_of(message))


_NOT_PAGES = ("/api/", "/openapi", "/metrics", "/static/", "/charts/", "/catalog/")


def _for_people(request: Request, response: JSONResponse) -> Response:
    """A dashboard page's error as an HTML page (the same status, code and message); the API's as JSON."""
    path = request.url.path
    if path.startswith(_NOT_PAGES) or request.method != "GET":
        return response
    import json

    err = json.loads(bytes(response.body))["error"]
    page: Response = request.app.state.templates.TemplateResponse(
        request, "error.html.j2", {"nav": None, "status": response.status_code, "code": err["code"],
                                   "message": err["message"]}, status_code=response.status_code)
    if "retry-after" in response.headers:
        page.headers["Retry-After"] = response.headers["retry-after"]
    return page


def nul_in(request: Request) -> str | None:
    """The part of the request's URL that holds a NUL (``%00``): ``path``, or the query parameter's name. No store
    can look one up (PostgreSQL refuses it in any text), so such a request is refused before any route runs."""
    if "\x00" in request.scope.get("path", ""):  # decoded: %00 is a NUL here
        return "path"
    for name, value in request.query_params.multi_items():
        if "\x00" in name or "\x00" in value:
            return shown_nul(name)
    return None


#: the largest request body read (a payment, invoice or customer is a few hundred bytes; the longest fields
#: allowed add up to some kilobytes): every route reads the body before anything else, the token check included
MAX_BODY_BYTES = 1024 * 1024


def body_too_large(size: int | None) -> JSONResponse:
    given = f"{size:,} bytes" if size is not None else "longer than allowed"
    return error_response(413, "invalid_request_error", "body_too_large",
                          f"request body: {given}; at most {MAX_BODY_BYTES:,} bytes", "body")


class _BodyOverLimit(HTTPException):  # FastAPI's: its body read passes these on unchanged
    def __init__(self) -> None:
        super().__init__(413, "request body over the limit")


class BodyLimit:
    """ASGI middleware: a request whose ``Content-Length`` is over :data:`MAX_BODY_BYTES` is answered 413
    without reading it; a body without one (chunked) is counted as it is read, and the read that passes the
    limit raises a 413 instead of returning it (FastAPI hands an HTTPException from the body read on as it is)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > MAX_BODY_BYTES:
                await body_too_large(int(value))(scope, receive, send)
                return
        read = 0

        async def limited() -> Any:
            nonlocal read
            message = await receive()
            if message["type"] == "http.request":
                read += len(message.get("body", b""))
                if read > MAX_BODY_BYTES:
                    raise _BodyOverLimit
            return message

        await self.app(scope, limited, send)


def install(app: FastAPI) -> None:
    """The handlers that turn every error into the one error object (an HTML page on the dashboard)."""

    @app.middleware("http")
    async def _refuse_nul(request: Request, call_next: Any) -> Response:
        where = nul_in(request)
        if where is not None:
            return _for_people(request, error_response(400, "invalid_request_error", "parameter_invalid",
                                                       f"{where}: {NUL_MESSAGE}", where))
        response: Response = await call_next(request)
        return response

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(request: Request, exc: RequestValidationError) -> Response:
        return _for_people(request, _validation(exc))

    @app.exception_handler(PayeventsError)
    async def _payevents_error(request: Request, exc: PayeventsError) -> Response:
        return _for_people(request, payevents_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            return _for_people(request, error_response(404, "invalid_request_error", "resource_missing",
                                                       "no such path"))
        if isinstance(exc, _BodyOverLimit):
            return body_too_large(None)
        if exc.status_code == 405:
            return error_response(405, "invalid_request_error", "method_not_allowed", "method not allowed here",
                                  headers=dict(exc.headers or {}))
        if exc.status_code == 400 and (unread := unreadable_body(exc.__cause__)) is not None:
            return _for_people(request, error_response(400, "invalid_request_error", "body_invalid", unread))
        return error_response(exc.status_code, "invalid_request_error", "request_invalid", str(exc.detail),
                              headers=dict(exc.headers or {}))

    async def _store_fault(request: Request, exc: Exception) -> Response:
        # A database or broker that cannot be reached now (or a full disk): not a bug, and it passes. The
        # classification is the runtime's (runner.unreachable); the client learns which, not the details.
        from payevents.runtime.runner import unreachable

        reason = unreachable(exc)
        if reason is None:
            return await _bug(request, exc)
        log.warning("API %s %s: %s", request.method, request.url.path, mask_card_text(reason))
        return _for_people(request, unavailable(f"{reason.split(':', 1)[0]}; retry later"))

    # handled here, not by the catch-all below (Starlette re-raises what reaches that one, logging it again)
    app.add_exception_handler(sa.exc.SQLAlchemyError, _store_fault)
    app.add_exception_handler(OSError, _store_fault)  # ConnectionError, TimeoutError; other OSErrors: a 500

    @app.exception_handler(Exception)
    async def _bug(_request: Request, exc: Exception) -> Response:
        log.exception("unhandled error in the API", exc_info=exc)
        return error_response(500, "api_error", "internal_error", "internal error")


def document(schema: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI document with FastAPI's own 422 validation body replaced by the error object."""
    for path in schema.get("paths", {}).values():
        for op in path.values():
            responses = op.get("responses", {})
            r422 = responses.get("422")
            if r422 and "HTTPValidationError" in str(r422):
                responses["422"] = {"description": READ_ERRORS[422]["description"],
                                    "content": {"application/json": {"schema": {
                                        "$ref": "#/components/schemas/ErrorResponse"}}}}
    schemas = schema.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    return schema
