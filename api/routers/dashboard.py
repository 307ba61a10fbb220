"""The dashboard: its page and assets (api/static/, no CDN), the price board in one request, the
tenant's health figures, and the live stream of events (Server-Sent Events) from the process's one
log listener (read/live.py). docs/dashboard.md tells how the page uses them.

These routes serve the dashboard, not API clients: they are left out of the OpenAPI document. Each
still declares its permission (api/auth.py), and tenancy is checked as on every route."""

from __future__ import annotations

import asyncio
import time
import weakref
from pathlib import Path
from typing import Annotated, AsyncIterator
from uuid import UUID

import uvicorn
from fastapi import FastAPI, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles

from api.auth import PUBLIC, requires
from api.deps import Context, Reads
from api.routing import resource_router
from commands.models import QueryInt
from read.board import BAND_DAYS, board
from read.live import LiveFeed, Subscriber

STATIC = Path(__file__).resolve().parent.parent / "static"
HEARTBEAT_S = 15.0  # a comment line now and then: proxies keep the stream open, dead clients show
# A stream ends after this long at most (and when the access token would expire): the page reconnects
# from its Last-Event-ID at no loss, with its current token, so a revoked session stops receiving soon.
STREAM_MAX_S = 30.0
# What the page may load: its own scripts, styles and images only; no frames, no inline script.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
                               " connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store",
}

router = resource_router(tags=["dashboard"], include_in_schema=False)
READ, ANALYTICS = requires("shops:read"), requires("analytics:read")


def install(app: FastAPI) -> None:
    """The routes, the assets under /ui, and the process's live feed (closed with the app)."""
    app.state.live = LiveFeed(app.state.engine.core.conninfo, app.state.reads.pool,
                              reveal=app.state.reads.audit.personal.reveal)  # reasons people wrote, opened
    _FEEDS.add(app.state.live)
    _end_streams_on_exit()
    app.include_router(router)
    app.mount("/ui", StaticFiles(directory=STATIC), name="ui")


_FEEDS: weakref.WeakSet[LiveFeed] = weakref.WeakSet()


def _end_streams_on_exit() -> None:
    """uvicorn lets open responses finish before it stops, and a stream would run to its end (up to
    STREAM_MAX_S): on the signal that stops the server, every stream of this process ends at once.
    uvicorn tells the app nothing of it, so its signal handler is wrapped (as sse-starlette does)."""
    original = uvicorn.Server.handle_exit
    if getattr(original, "ends_streams", False):
        return

    def handle_exit(server, sig, frame) -> None:
        for feed in list(_FEEDS):
            feed.end_streams()
        original(server, sig, frame)

    handle_exit.ends_streams = True
    uvicorn.Server.handle_exit = handle_exit


@router.get("/", dependencies=[PUBLIC])
async def page() -> FileResponse:
    return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)


@router.get("/shops/{shop_id}/board", dependencies=[ANALYTICS])
def price_board(shop_id: UUID, ctx: Context, reads: Reads) -> dict:
    """Every listing of the shop with price, guardrails, last change, competitor band and rule."""
    reads.shops.facts(ctx, shop_id)  # tenancy (also checked by requires()): others' shops are 404
    with reads.pool.connection() as conn:
        listings = board(conn, shop_id)
    return {"shop_id": str(shop_id), "band_days": BAND_DAYS, "listings": listings}


@router.get("/dashboard/health", dependencies=[ANALYTICS])
def health(request: Request, ctx: Context, reads: Reads) -> dict:
    """When the caller's shops last had an event, and the tenant's open streams in this process (the
    projections' and policy's lag: /analytics/lag). Nothing of other tenants, not even a count."""
    shops = [UUID(s) for s in ctx.shops] if ctx.shops is not None else reads.shops.shops_of(ctx.tenant_id)
    rows = reads.pool.rows("SELECT max(i.recorded_at), max(i.notification_id) FROM event_index i"
                           " WHERE i.shop_id = ANY(%s)", [shops])
    last_at, last_position = rows[0]
    return {"last_event_at": last_at.isoformat() if last_at else None, "last_position": last_position,
            "live_streams": sum(1 for s in list(request.app.state.live.subscribers) if s.tenant_id == ctx.tenant_id)}


@router.get("/events", dependencies=[READ])
async def events(request: Request, ctx: Context, reads: Reads,
                 shop_id: Annotated[UUID | None, Query(description="Only this shop's events")] = None,
                 after: Annotated[QueryInt | None, Query(ge=0, le=2**63 - 1)] = None,
                 last_event_id: Annotated[str | None, Header(max_length=20, pattern=r"^[0-9]+$")] = None) -> StreamingResponse:
    """The caller's shops' events as they commit, as Server-Sent Events whose id is the log position:
    reconnecting with Last-Event-ID (or ?after=) first replays what was missed. The stream ends after
    STREAM_MAX_S or the access token's lifetime, so a revoked session stops receiving; the page reconnects."""
    shops = ctx.shops
    if shop_id is not None:
        await run_in_threadpool(reads.shops.facts, ctx, shop_id)  # 404 for another tenant's shop
        shops = frozenset({str(shop_id)})
    resume = int(last_event_id) if last_event_id is not None else after
    feed: LiveFeed = request.app.state.live
    subscriber = feed.subscribe(ctx.tenant_id, shops)  # before reading the backlog: nothing falls between
    lifetime = min(STREAM_MAX_S, request.app.state.auth.access_token_ttl.total_seconds())
    return StreamingResponse(_stream(feed, subscriber, resume, lifetime), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


async def _stream(feed: LiveFeed, subscriber: Subscriber, resume: int | None, lifetime: float) -> AsyncIterator[bytes]:
    try:
        await run_in_threadpool(feed.wait_started)
        last = resume or 0
        if resume is not None:
            missed = await run_in_threadpool(feed.backlog, subscriber, resume)
            if missed is None:  # too much to replay: the page reloads its data instead
                yield b"event: reload\ndata: {}\n\n"
                missed = []
            for position, message in missed:
                last = position
                yield message
        else:
            last = subscriber.since
        yield b"id: %d\nevent: ready\ndata: {\"position\": %d}\n\n" % (last, last)
        ends = time.monotonic() + lifetime
        while (left := ends - time.monotonic()) > 0:
            try:
                item = await asyncio.wait_for(subscriber.queue.get(), timeout=min(HEARTBEAT_S, left))
            except asyncio.TimeoutError:
                yield b": keep-alive\n\n"
                continue
            if item is None:  # too slow a reader: dropped; it reconnects from its Last-Event-ID
                return
            position, message = item
            if position > last:
                last = position
                yield message
    finally:
        feed.unsubscribe(subscriber)
