"""Probes and metrics for operators: `/health/live`, `/health/ready` (public, no data) and
`/metrics` (a metrics token or loopback clients). Not in the OpenAPI document: they are the
deployment's interface, not the API's."""

from __future__ import annotations

from fastapi import Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from api import metrics, problems
from api.auth import PUBLIC, client_address
from api.routing import resource_router
from migrations import available
from read.health import readiness

router = resource_router(tags=["operations"], include_in_schema=False, dependencies=[PUBLIC])
MIGRATIONS = tuple(m.version for m in available())  # the schema this code expects


@router.get("/health/live", summary="The process answers")
async def live() -> dict:
    return {"status": "live"}


@router.get("/health/ready", summary="The database answers, its schema is current and every follower keeps up")
def ready(request: Request):
    state = readiness(request.app.state.engine.core.conninfo, MIGRATIONS, request.app.state.observability.ready_lag_s)
    if not state.ready:
        reasons = state.reasons()
        return problems.problem(503, "Not ready", "; ".join(reasons), reasons=reasons)
    return {"status": "ready"}


@router.get("/metrics", summary="Prometheus metrics (a metrics token, or loopback clients only)")
def scrape(request: Request):
    settings = request.app.state.observability
    if not settings.metrics:
        return problems.problem(404, "Not found", "metrics are off on this server (ETSYPRO_METRICS)")
    if not metrics.MetricsAccess(settings.metrics_token).allows(client_address(request),
                                                               request.headers.get("authorization")):
        if settings.metrics_token:
            return problems.problem(401, "Unauthorized", "metrics need the metrics token as a bearer credential",
                                    "Authorization")
        return problems.problem(403, "Forbidden", "metrics are for loopback clients only (or set ETSYPRO_METRICS_TOKEN)")
    return Response(metrics.exposition(request.app.state.engine.core.conninfo), media_type=CONTENT_TYPE_LATEST)
