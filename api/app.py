"""The FastAPI application: routers per resource over one PricingEngine."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from api import auth, observability, openapi, problems
from api.revealing import RevealSealed
from api.routers import accounts, analytics, audit, demand, facts, listings, repricing, rollbacks, rules, shops
from api.routers import imports
from api.routers import dashboard
from api.routers import experiments
from api.routers import rollback_guard
from api.routers import stock
from api.routers import marketplace
from api.routers import auth as auth_routes
from commands.engine import PricingEngine
from read.side import ReadSide


class BodyLimit:
    """Refuse bodies over `limit` bytes with 413 before parsing them (also chunked uploads).

    Not FastAPI's own `max_body_size` (0.165): it answers a body whose declared length is over the
    limit in text/plain, where every refusal here is problem+json (tests/test_hostile_input.py)."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await self._too_large(send)
        seen, too_large, answered = 0, False, False

        async def limited_receive():
            nonlocal seen, too_large
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                too_large = True
                raise _TooLarge
            return message

        async def guarded_send(message) -> None:
            # The framework catches our _TooLarge while reading the body and answers its own 400;
            # whatever the app answers to a body it could not read, the client gets the 413.
            nonlocal answered
            if not too_large:
                return await send(message)
            if message["type"] == "http.response.start" and not answered:
                answered = True
                await self._too_large(send)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _TooLarge:
            if not answered:
                await self._too_large(send)

    async def _too_large(self, send: Send) -> None:
        response = problems.problem(413, "Payload too large", f"request bodies are limited to {self.limit} bytes")
        await send({"type": "http.response.start", "status": 413, "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body})


class _TooLarge(Exception):
    pass


@asynccontextmanager
async def background_workers(app: FastAPI):
    """Start what runs next to the API (the in-process projector and repricing policy) and stop
    them on shutdown."""
    workers = [w for w in (app.state.projector, app.state.repricing) if w is not None]
    for worker in workers:
        worker.start()
    try:
        yield
    finally:
        for worker in reversed(workers):
            worker.stop()
        app.state.live.close()
        app.state.reads.close()


def create_app(engine: PricingEngine, max_body_bytes: int = 8 * 1024 * 1024,
               auth_settings: auth.AuthSettings | None = None,
               observed: observability.Observability | None = None) -> FastAPI:
    app = FastAPI(
        title="EtsyPro Pricing",
        version="0.1.0",
        description="Event-sourced pricing engine: every price it ever set is explained, reversible and provable.",
        # Every route, of every router included below or later, is authenticated and must declare
        # its permission (api/auth.py); public ones (login) are marked as such.
        dependencies=[Depends(auth.refuse_undeclared)],
        lifespan=background_workers,
        docs_url=None, redoc_url=None,  # served by api/openapi.py from local assets
    )
    app.state.engine = engine
    app.state.reads = ReadSide(engine.core.conninfo)  # its own pool: readers never borrow the writers'
    app.state.reads.audit.use_unwrap(engine.identity.vault.unwrap)  # personal data opened (commands/personal.py)
    engine.identity.seal_reasons = True  # what people write as reasons is sealed per command (erasable)
    app.state.projector = None  # api/server.py sets the in-process projector (ETSYPRO_PROJECTOR)
    app.state.repricing = None  # ... and the in-process repricing policy (ETSYPRO_REPRICING)
    auth.install(app, auth_settings)
    problems.install(app)
    openapi.install(app)
    # The busiest routes first, since routes are tried in order; no two overlap, so order changes no meaning.
    for module in (listings, facts, auth_routes, accounts, shops, rollbacks, audit, analytics, rules, repricing, demand, imports,
                   experiments, rollback_guard, stock):
        app.include_router(module.router)
    app.include_router(marketplace.router)  # a shop's Etsy connection
    app.include_router(marketplace.callbacks)
    dashboard.install(app)  # the page at /, its assets and live stream
    app.add_middleware(BodyLimit, limit=max_body_bytes)
    app.add_middleware(RevealSealed, reveal=engine.identity.vault.reveal)  # reasons and names people wrote, opened
    # Health, metrics and request logs; its middleware is added last, so it is outermost: it sees 413s too.
    observability.install(app, observed or observability.Observability())
    return app
