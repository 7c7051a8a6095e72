"""Idempotent creates of the HTTP API (Stripe's rule): a retry gets the first answer, the same key with
another body is a conflict.

Every ``POST`` that creates something (payments, invoices, customers) needs an ``Idempotency-Key`` header
or a client-chosen id in the body (``payment_id``, ``invoice_id``; a customer always has its
``customer_id``), which then stands for the key. The first request claims ``(scope, key)`` with a
fingerprint of its body in ``api_requests`` (its own small database, ``_api``), runs the create, and
stores the answer (status + bytes). A retry with the same body gets those bytes back (header
``Idempotent-Replayed: true``); another body is an :class:`IdempotencyConflict` (409). A create that
fails with a client error releases the key (nothing was created under it). A request that died between
claim and answer leaves a claim that a retry takes over after ``STALE_AFTER_S``; this is safe because the
creates below are themselves idempotent on ids derived from the key.

Keys are remembered for ``KEY_TTL_S`` (24 hours, Stripe's rule), so the table does not grow forever: older
answers are swept (at most once a minute per process, by the next create) and a key older than that is a new
request — which the create below answers from the thing already made under that key (the same payment or
invoice; another body is still a 409, from the store's own one-event-per-key rule).
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Final

import msgspec
from sqlalchemy.engine import Engine

from payevents.contracts import ids
from payevents.errors import IdempotencyConflict, PayeventsError
from payevents.faces.web.errors import RequestError
from payevents.settings import Settings
from payevents.store.db import Migration, connect
from payevents.store.sql import mark as sql_mark

#: a claim without an answer this old belongs to a request that died: a retry may take it over
STALE_AFTER_S: Final = 60.0
#: how long a key and its answer are remembered
KEY_TTL_S: Final = 24 * 3600.0
#: how often (seconds) a process sweeps expired keys
SWEEP_EVERY_S: Final = 60.0
_clock = time.time  # the wall clock; tests move it
_next_sweep: dict[str, float] = {}  # per database URL
MAX_KEY_LENGTH: Final = 200
_NAMESPACE: Final = uuid.UUID("5b0c7f0e-6a55-4d1e-9a59-1d2f3c4b5a69")

MIGRATIONS: Final = [
    Migration(1, "api idempotency keys", both=[
        """CREATE TABLE api_requests (
            scope VARCHAR(32) NOT NULL,
            idem_key VARCHAR(255) NOT NULL,
            fingerprint CHAR(64) NOT NULL,
            status_code INTEGER,
            response TEXT,
            claimed_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (scope, idem_key))""",
    ]),
    Migration(2, "api idempotency keys expire", both=[
        "CREATE INDEX api_requests_claimed_at ON api_requests (claimed_at)",
    ]),
]


class KeyInUse(IdempotencyConflict):
    """Another request with this key has not answered yet (retry later)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Answer:
    status_code: int
    body: bytes
    replayed: bool = False


def engine(settings: Settings) -> Engine:
    return connect(settings, "_api", MIGRATIONS)


def fingerprint(scope: str, body: Mapping[str, Any]) -> str:
    return hashlib.sha256(msgspec.json.encode({"scope": scope, "body": body}, order="sorted")).hexdigest()


def derived_id(prefix: str, scope: str, key: str) -> str:
    """A stable id for the thing created under ``key`` (a retry after a crash creates the same thing)."""
    return ids.short(prefix, uuid.uuid5(_NAMESPACE, f"{scope}:{key}"))


def resolve_key(header: str | None, client_id: str | None, scope: str) -> str:
    """The request's key: the header, else the client-chosen id; neither is a RequestError (400)."""
    if header is not None:
        if not header.strip() or len(header) > MAX_KEY_LENGTH:
            raise RequestError(f"Idempotency-Key: must be a non-empty string of at most {MAX_KEY_LENGTH} characters",
                               param="Idempotency-Key")
        return header
    if client_id:
        return f"id:{client_id}"
    raise RequestError(f"Idempotency-Key: required to create {scope} (or choose the id yourself in the body), "
                       "so that a retried request never creates twice", param="Idempotency-Key",
                       code="parameter_missing")



def run(settings: Settings, scope: str, key: str, body: Mapping[str, Any], create: Callable[[], Answer]) -> Answer:
    """Answer the create of ``body`` under ``(scope, key)`` once; replay that answer to retries."""
    fp = fingerprint(scope, body)
    eng = engine(settings)
    now = _clock()
    with eng.begin() as conn:
        m = sql_mark(conn)
        if now >= _next_sweep.get(str(eng.url), 0.0):
            _next_sweep[str(eng.url)] = now + SWEEP_EVERY_S
            conn.exec_driver_sql(f"DELETE FROM api_requests WHERE claimed_at < {m} AND response IS NOT NULL",
                                 (now - KEY_TTL_S,))
        claimed = conn.exec_driver_sql(
            f"INSERT INTO api_requests (scope, idem_key, fingerprint, status_code, response, claimed_at)"
            f" VALUES ({m}, {m}, {m}, NULL, NULL, {m}) ON CONFLICT (scope, idem_key) DO NOTHING RETURNING scope",
            (scope, key, fp, now)).first()
        if claimed is None:
            row = conn.exec_driver_sql(
                f"SELECT fingerprint, status_code, response, claimed_at FROM api_requests"
                f" WHERE scope = {m} AND idem_key = {m}", (scope, key)).one()
            if row.response is not None and now - float(row.claimed_at) >= KEY_TTL_S:
                pass  # expired, not swept yet: a new request under this key (the create answers from what exists)
            elif row.fingerprint != fp:
                raise IdempotencyConflict(f"Idempotency-Key: already used to create {scope} with another "
                                          "body; use a new key for a different request")
            elif row.response is not None:
                return Answer(int(row.status_code), row.response.encode(), replayed=True)
            elif now - float(row.claimed_at) < STALE_AFTER_S:
                raise KeyInUse("Idempotency-Key: a request with this key is still running; retry later")
            conn.exec_driver_sql(f"UPDATE api_requests SET fingerprint = {m}, status_code = NULL, response = NULL,"
                                 f" claimed_at = {m} WHERE scope = {m} AND idem_key = {m}", (fp, now, scope, key))
    try:
        answer = create()
    except PayeventsError:
        with eng.begin() as conn:  # a refused create created nothing: the key is free again
            m = sql_mark(conn)
            conn.exec_driver_sql(f"DELETE FROM api_requests WHERE scope = {m} AND idem_key = {m} AND response IS NULL",
                                 (scope, key))
        raise
    with eng.begin() as conn:
        m = sql_mark(conn)
        conn.exec_driver_sql(
            f"UPDATE api_requests SET status_code = {m}, response = {m} WHERE scope = {m} AND idem_key = {m}",
            (answer.status_code, answer.body.decode(), scope, key))
    return answer
