"""What the routers share: the settings of the app serving a request, JSON encoding, the bearer token on
writes, idempotent creates, card masking of responses and logs."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Sequence
from datetime import date, datetime
from typing import Annotated, Any

import msgspec
from fastapi import Depends, Header, Query, Request, Security
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from payevents.contracts.cardguard import mask_card_text
from payevents.errors import ContractError
from payevents.faces.web import idempotency
from payevents.faces.web.errors import RequestError, Unauthorized
from payevents.runtime.outbox import retry_serialization
from payevents.settings import Settings

_ENCODER = msgspec.json.Encoder(decimal_format="string")


def json_response(value: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    """Structs, dataclasses, Decimals (as strings) and datetimes (RFC 3339) as JSON."""
    return Response(_ENCODER.encode(msgspec.to_builtins(value, builtin_types=(datetime, date))),
                    status_code=status_code, media_type="application/json", headers=headers)


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


#: the settings of the app serving the request
Cfg = Annotated[Settings, Depends(get_settings)]

#: the ``Idempotency-Key`` request header of the payment commands (a retry returns the first result)
IdemKey = Annotated[str | None, Header(alias="Idempotency-Key",
                                       description="makes the request safe to retry: a retry gets the first answer")]


_BEARER = HTTPBearer(auto_error=False, description="the API token (PAYEVENTS_API_TOKEN); writes need it")


def require_token(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)] = None
) -> None:
    settings = get_settings(request)
    expected = settings.api_token.get_secret_value().strip().encode()
    token = credentials.credentials.strip().encode() if credentials is not None else b""
    if not expected or not token or not hmac.compare_digest(token, expected):
        raise Unauthorized("a valid bearer token is required for writes (Authorization: Bearer <token>)")


#: the dependency of every write endpoint
Write = Depends(require_token)


class Body(BaseModel):
    """A write's JSON body: unknown fields are refused (400 parameter_unknown), never ignored."""

    model_config = ConfigDict(extra="forbid")


#: an amount: a decimal string in major units (``"99.99"``, ``"1500"`` for JPY, ``"1.250"`` for KWD); a JSON
#: number is refused (400), so no client ever loses a digit to a binary float
Amount = Annotated[str, Field(pattern=r"^[0-9]+(\.[0-9]+)?$", max_length=40, examples=["99.99"],
                              description="decimal string in major units of the currency, e.g. \"99.99\"; "
                                          "a JSON number is refused")]


def created(settings: Settings, scope: str, key: str, body: BaseModel, create: Callable[[], Any]) -> Response:
    """An idempotent create (see :mod:`.idempotency`): the first answer, replayed to retries."""

    def first() -> idempotency.Answer:
        r = json_response(retry_serialization(create), 201)
        return idempotency.Answer(r.status_code, bytes(r.body))

    a = idempotency.run(settings, scope, key, body.model_dump(mode="json"), first)
    return Response(a.body, status_code=a.status_code, media_type="application/json",
                    headers={"Idempotent-Replayed": "true"} if a.replayed else None)


#: the paging parameters of every list
Limit = Annotated[int, Query(ge=1, le=1000, description="page size (1 to 1000)")]
StartingAfter = Annotated[str | None, Query(description="the next_cursor of the previous page (an object id): "
                                                        "the page starts after that object")]


def page(fetch: Callable[[int, str | None], Sequence[Any]], limit: int, starting_after: str | None,
         id_of: Callable[[Any], str]) -> Response:
    """One page of a list: ``{"data": [...], "has_more": bool, "next_cursor": id | null}``. ``fetch(n,
    after)`` returns at most ``n`` items after the item ``after`` in the list's order (keyset paging)."""
    try:
        items = list(fetch(limit + 1, starting_after))
    except ContractError as exc:
        if str(exc).startswith("starting_after:"):
            raise RequestError(str(exc), param="starting_after") from exc
        raise
    has_more = len(items) > limit
    items = items[:limit]
    return json_response({"data": items, "has_more": has_more,
                          "next_cursor": id_of(items[-1]) if has_more else None})


def page_of_list(items: Sequence[Any], limit: int, starting_after: str | None,
                 id_of: Callable[[Any], str]) -> Response:
    """:func:`page` over a list already in memory (lists the services return whole)."""

    def fetch(n: int, after: str | None) -> Sequence[Any]:
        start = 0
        if after is not None:
            ids = [id_of(i) for i in items]
            if after not in ids:
                raise RequestError("starting_after: no such item in this list (use the next_cursor of a page)",
                                   param="starting_after")
            start = ids.index(after) + 1
        return items[start:start + n]

    return page(fetch, limit, starting_after, id_of)


def masked(value: Any) -> Any:
    """``value`` (JSON-ready) with card numbers masked in every string."""
    if isinstance(value, str):
        return mask_card_text(value)
    if isinstance(value, list):
        return [masked(v) for v in value]
    if isinstance(value, dict):
        return {k: masked(v) for k, v in value.items()}
    return value


class MaskCardNumbers(logging.Filter):
    """Masks card numbers in a log record's arguments (uvicorn's access log: the request path and query)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(mask_card_text(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = mask_card_text(record.msg)
        return True


def mask_access_log() -> None:
    logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, MaskCardNumbers) for f in logger.filters):
        logger.addFilter(MaskCardNumbers())
