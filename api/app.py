"""The FastAPI application: routers per resource over one PricingEngine."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from api import problems
from api.routers import facts, listings, rollbacks, shops
from commands.engine import PricingEngine


class BodyLimit:
    """Refuse bodies over `limit` bytes with 413 before parsing them (also chunked uploads)."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await self._too_large(send)
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _TooLarge:
            await self._too_large(send)

    async def _too_large(self, send: Send) -> None:
        response = problems.problem(413, "Payload too large", f"request bodies are limited to {self.limit} bytes")
        await send({"type": "http.response.start", "status": 413, "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body})


class _TooLarge(Exception):
    pass


def create_app(engine: PricingEngine, max_body_bytes: int = 8 * 1024 * 1024) -> FastAPI:
    app = FastAPI(
        title="EtsyPro Pricing",
        version="0.1.0",
        description="Event-sourced pricing engine: every price it ever set is explained, reversible and provable.",
    )
    app.state.engine = engine
    problems.install(app)
    for module in (shops, listings, facts, rollbacks):
        app.include_router(module.router)
    app.add_middleware(BodyLimit, limit=max_body_bytes)
    return app
