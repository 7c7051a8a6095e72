"""Health, workers and metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from payevents import __version__
from payevents.contracts.channel import parse_env
from payevents.faces.web import data
from payevents.faces.web.common import Cfg, json_response
from payevents.faces.web.errors import READ_ERRORS

router = APIRouter(tags=["health"], responses=READ_ERRORS)


@router.get("/api/health")
def health(settings: Cfg) -> Response:
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
    return json_response({"status": "ok" if ok else "degraded", "env": parse_env(settings.env).value,
                          "broker": "kafka" if settings.is_kafka else "embedded", "version": __version__,
                          "checks": checks, "workers": [v.to_dict() for v in views]}, 200 if ok else 503)


@router.get("/api/workers")
def workers_status(settings: Cfg) -> Response:
    return json_response([v.to_dict() for v in data.workers(settings)])


@router.get("/metrics")
def metrics() -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
