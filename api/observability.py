"""What an operator sees of a running server: metrics (api/metrics.py), request and event logs
(api/logs.py) and health (api/routers/health.py), installed on the app as the settings ask."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import logs, metrics
from api.routers import health

_REPLAYED = (b"idempotent-replayed", b"true")


@dataclass(frozen=True)
class Observability:
    metrics: bool = True             # count into /metrics (ETSYPRO_METRICS)
    metrics_token: str | None = None  # scrapers must send it as a bearer token; unset: loopback only
    request_log: bool = False        # one log line per request (ETSYPRO_ACCESS_LOG)
    ready_lag_s: float = 30.0        # readiness fails when a follower's oldest unapplied event waited longer

    @classmethod
    def from_settings(cls, settings) -> Observability:
        return cls(settings.metrics, settings.metrics_token, settings.access_log, settings.ready_lag_seconds)


class Observed:
    """ASGI middleware: each request counted (route template, status, latency) and logged as one
    line, after the answer is sent. Plain ASGI, not BaseHTTPMiddleware: no task per request."""

    def __init__(self, app: ASGIApp, settings: Observability, pools: metrics.Pools):
        self.app, self.metered, self.logged, self.pools = app, settings.metrics, settings.request_log, pools

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status, replayed = time.perf_counter(), 500, False

        async def noting_send(message: Message) -> None:
            nonlocal status, replayed
            if message["type"] == "http.response.start":
                status = message["status"]
                replayed = _REPLAYED in message.get("headers", ())
            await send(message)

        try:
            await self.app(scope, receive, noting_send)
        finally:
            self._done(scope, status, replayed, time.perf_counter() - started)

    def _done(self, scope: Scope, status: int, replayed: bool, seconds: float) -> None:
        route = metrics.route_template(scope)
        if self.metered:
            metrics.observe_request(scope["method"], route, status, seconds)
            self.pools.refresh(time.monotonic())
        if self.logged:
            _log_request(scope, route, status, replayed, seconds)


def _log_request(scope: Scope, route: str, status: int, replayed: bool, seconds: float) -> None:
    headers = dict(scope["headers"])
    principal = scope.get("state", {}).get("principal")
    level = logging.ERROR if status >= 500 else logging.INFO
    logs.emit(logs.request_log, level, f"{scope['method']} {route} {status}", {
        "method": scope["method"], "route": route, "status": status, "duration_ms": round(seconds * 1000, 2),
        "tenant": getattr(principal, "tenant_id", None), "account": getattr(principal, "account_id", None),
        "correlation_id": _text(headers.get(b"x-correlation-id")), "command_id": _text(headers.get(b"idempotency-key")),
        "replayed": replayed or None, "client": (scope.get("client") or (None,))[0]})


def _text(value: bytes | None) -> str | None:
    return value.decode("latin-1")[:200] if value else None


def install(app, settings: Observability) -> None:
    """Health and metrics routes, the engine's counters and event log lines, and the middleware."""
    app.state.observability = settings
    engine = app.state.engine
    if logs.log_notable_events not in engine.core.on_commit:
        engine.core.on_commit.append(logs.log_notable_events)
    if settings.metrics:
        metrics.instrument(engine)
    app.include_router(health.router)
    if settings.metrics or settings.request_log:
        pools = metrics.Pools({"write": engine.core.recorder.datastore.pool,
                               "read": getattr(app.state.reads.pool, "_pool", None)})
        app.add_middleware(Observed, settings=settings, pools=pools)
