"""A shop's Etsy connection: connect (OAuth 2.0 with PKCE), the callback, disconnect, a sync now,
and what the connection is doing (grant, push queue, budget, drift report).

The Etsy app (keystring, shared secret, where Etsy is) is `app.state.etsy` (streams.etsy_client.EtsyApp)
when set (tests), else the ETSYPRO_ETSY_* settings (api/etsy.py), read at each use.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, HTTPException, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from api.auth import PUBLIC, requires
from api.etsy import EtsySettings, app_client
from api.deps import Context, Engine, Reads
from api.problems import responses_for
from api.routing import resource_router
from api.schemas import Money, Timestamp, answer
from commands.competitor_watch import CompetitorWatches, WatchCompetitors
from commands.models import QueryInt, integer
from domain.marketplace import EtsyRefused, EtsyUnavailable, GrantRefused
from read import marketplace as reads_of
from streams.etsy_client import EtsyApp
from streams.etsy_grant import token_answer
from streams.etsy_sync import EtsySync

router = resource_router(prefix="/shops/{shop_id}/marketplace/etsy", tags=["marketplace"])
UNCONFIGURED = {503: "No Etsy app is configured on this server (ETSYPRO_ETSY_KEYSTRING, ETSYPRO_ETSY_SHARED_SECRET)"}
callbacks = APIRouter()
SHOP = "0b9d6b9a-4c2b-4c55-9b7e-2f1f4b7e9a10"
LISTING = "5b0f1c4e-2d7a-4f43-9b1e-6c2d8f0a7e11"
WHEN = "2026-12-07T21:00:00+00:00"


def etsy_app(request: Request) -> EtsyApp:
    """Called in the routes' bodies, after their input is validated (an invalid request is a 422 either way)."""
    app = getattr(request.app.state, "etsy", None) or EtsySettings().app()
    if app is None:
        raise HTTPException(503, "no Etsy app is configured (ETSYPRO_ETSY_KEYSTRING and ETSYPRO_ETSY_SHARED_SECRET)")
    return app


EtsyShopId = integer(ge=1, le=2**63 - 1, description="The seller's Etsy shop id")


class ConnectEtsy(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"etsy_shop_id": 12345678}]})
    etsy_shop_id: EtsyShopId


class ConnectStarted(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "authorize_url": "https://www.etsy.com/oauth/connect?response_type=code&client_id=...&code_challenge_method=S256",
        "state": "Qm9vdHN0cmFw...", "expires_at": WHEN}]})
    authorize_url: str = Field(description="Send the seller's browser here; Etsy returns it to the callback")
    state: str
    expires_at: Timestamp


class ConnectionState(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "shop_id": SHOP, "etsy_shop_id": 12345678, "status": "connected", "reason": "", "version": 1}]})
    shop_id: str
    etsy_shop_id: int
    status: str = Field(description="connected | revoked (Etsy refused the grant: reconnect) | disconnected")
    reason: str
    version: int


class EtsyStatus(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "connection": {"etsy_shop_id": 12345678, "status": "connected", "reason": "", "access_expires_at": WHEN,
                       "updated_at": WHEN},
        "paused": False, "linked_listings": 40,
        "queue": {"waiting": 2, "due": 1, "oldest": WHEN, "most_attempts": 0},
        "sync": {"receipts_since": 1796677200, "receipts_synced_at": WHEN, "listings_synced_at": WHEN, "last_error": None},
        "budget": [{"app": "keystring", "limit_per_second": 10, "remaining_this_second": 4, "limit_per_day": 10000,
                    "remaining_today": 9120, "throttled_until": None, "seen_at": WHEN}]}]})
    connection: dict
    paused: bool = Field(description="Sync and push wait for the seller to connect (again)")
    linked_listings: int
    queue: dict
    sync: dict | None
    budget: list[dict]


class QueuedPush(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "listing_id": LISTING, "etsy_listing_id": 1234567890, "version": 7, "price": "22.50", "currency": "GBP",
        "enqueued_at": WHEN, "attempts": 1, "next_try_at": WHEN, "last_error": "Etsy unavailable (503)"}]})
    listing_id: str
    etsy_listing_id: int
    version: int
    price: Money
    currency: str
    enqueued_at: Timestamp
    attempts: int
    next_try_at: Timestamp
    last_error: str | None


class Drift(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "listing_id": LISTING, "etsy_listing_id": 1234567890, "seen_at": WHEN, "etsy_price": "19.00",
        "engine_price": "22.50", "currency": "GBP", "applied": True, "refusal": None}]})
    listing_id: str
    etsy_listing_id: int
    seen_at: Timestamp
    etsy_price: Money
    engine_price: Money
    currency: str
    applied: bool = Field(description="It became the listing's price (source marketplace); else refused by guardrails")
    refusal: str | None


class SyncDone(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "listings": 40, "registered": 3, "drifts": 1, "described": 2, "receipts": 12, "sales": 15, "unlinked": 0,
        "competitor_prices": 24}]})
    listings: int
    registered: int = Field(description="Etsy listings new to the engine, registered as listings")
    drifts: int = Field(description="Prices Etsy shows that the engine did not push (see /drifts)")
    described: int = Field(description="Listings whose title or state changed at Etsy (Listing.Described)")
    receipts: int
    sales: int
    unlinked: int = Field(description="Transactions of listings the engine does not know")
    competitor_prices: int = Field(description="Prices the shop's competitor watches recorded (observations, source etsy-watch)")


class Watch(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "listing_id": LISTING, "shop_id": SHOP, "etsy_listing_ids": None, "keywords": "speckled stoneware mug",
        "max_results": 20, "created_at": WHEN, "polled_at": WHEN, "last_seen": 17, "last_error": None}]})
    listing_id: UUID
    shop_id: UUID
    etsy_listing_ids: list[int] | None
    keywords: str | None
    max_results: int
    created_at: datetime
    polled_at: datetime | None = Field(description="The last poll (each sync polls every watch of the shop)")
    last_seen: int | None = Field(description="Competitor prices the last poll recorded")
    last_error: str | None = Field(description="Why Etsy's answer to the last poll could not be used")


@router.post("/connect", response_model=ConnectStarted, summary="Start connecting the shop to Etsy (OAuth 2.0 + PKCE)",
             dependencies=[requires("prices:write")], responses=responses_for([503], UNCONFIGURED))
def connect(shop_id: UUID, cmd: ConnectEtsy, ctx: Context, engine: Engine, request: Request) -> dict:
    """Answers the URL of Etsy's consent page. The PKCE verifier and the state stay on the server
    (single use, 10 minutes); Etsy sends the seller back to the callback, which finishes the connection.

    **Changes:** nothing yet: the EtsyConnection.Connected event is appended by the callback."""
    app = etsy_app(request)
    return engine.marketplace.start_connect(ctx, shop_id, cmd.etsy_shop_id, app.keystring, app.redirect_uri,
                                                app.authorize_url)


@router.post("/disconnect", response_model=ConnectionState, summary="Disconnect the shop from Etsy",
             dependencies=[requires("prices:write")])
async def disconnect(shop_id: UUID, ctx: Context, engine: Engine, response: Response) -> dict:
    """Forgets the tokens; sync and push stop for the shop until it connects again.

    **Changes:** appends EtsyConnection.Disconnected (nothing when already disconnected)."""
    return await answer(response, engine.marketplace.disconnect, ctx, shop_id)


@router.get("", response_model=EtsyStatus, summary="The Etsy connection: grant, push queue, budget, sync",
            dependencies=[requires("shops:read")])
def status(shop_id: UUID, reads: Reads) -> dict:
    """The grant's status (a revoked grant pauses sync and push), the push queue's size, the rate
    budget as Etsy's headers last told it, and the sync's cursors."""
    return reads_of.status(reads.pool, shop_id)


@router.get("/queue", response_model=list[QueuedPush], summary="Prices waiting to go to Etsy",
            dependencies=[requires("shops:read")])
def queue(shop_id: UUID, reads: Reads, limit: Annotated[QueryInt, Query(ge=1, le=1000)] = 100) -> list[dict]:
    """One row per listing: its newest accepted price not yet at Etsy, next try first."""
    return reads_of.queue(reads.pool, shop_id, limit)


@router.get("/drifts", response_model=list[Drift], summary="Prices changed at Etsy outside the engine",
            dependencies=[requires("shops:read")])
def drifts(shop_id: UUID, reads: Reads, limit: Annotated[QueryInt, Query(ge=1, le=1000)] = 100) -> list[dict]:
    """Each price the sync saw at Etsy that the engine had not pushed, newest first: whether it
    became the listing's price (a Listing.PriceChanged with source marketplace) or the guardrails refused it."""
    return reads_of.drifts(reads.pool, shop_id, limit)


@router.post("/sync", response_model=SyncDone, summary="Sync listings and receipts from Etsy now",
             dependencies=[requires("prices:write")],
             responses=responses_for([409, 502, 503], {409: "Etsy refused the shop's grant: the seller must connect again",
                                                       502: "Etsy refused a call or answered what cannot be used",
                                                       **UNCONFIGURED}))
def sync(shop_id: UUID, engine: Engine, ctx: Context, request: Request) -> dict:
    """Reads the shop's active listings (registering new ones, recording drift) and the receipts
    modified since the last sync (sales and returns, each transaction once).

    **Changes:** Listing.Registered, Listing.Described, SalesBatch.Sold/Returned, Listing.PriceChanged (source marketplace)."""
    marketplace = engine.marketplace
    marketplace.connection(ctx, shop_id)  # the caller's shop, connected
    client = app_client(etsy_app(request))
    try:
        return asdict(EtsySync(marketplace, client, engine.core.conninfo).sync_shop(shop_id))
    except GrantRefused as e:
        raise HTTPException(409, f"Etsy refused the shop's grant: connect again ({e.answer[:300]})") from None
    except (EtsyRefused, EtsyUnavailable) as e:
        raise HTTPException(502, f"Etsy's answer could not be used: {e}") from None
    finally:
        client.close()


@callbacks.get("/marketplace/etsy/callback", dependencies=[PUBLIC], include_in_schema=False)
async def callback(request: Request, engine: Engine, response: Response,
                   code: Annotated[str, Query(max_length=2000)], state: Annotated[str, Query(max_length=200)]) -> dict:
    """Where Etsy sends the seller's browser back: the state (single use) names the started connect."""
    client = app_client(etsy_app(request))
    try:
        exchange = lambda code, verifier, redirect_uri: token_answer(client.exchange_code(code, verifier, redirect_uri))  # noqa: E731
        return await answer(response, engine.marketplace.finish_connect, state, code, exchange, client.shop_owner)
    finally:
        client.close()


@router.put("/watches/{listing_id}", response_model=Watch, dependencies=[requires("prices:write")],
            summary="Watch a listing's competitors at Etsy: named listings, or a keyword search")
def watch(shop_id: UUID, listing_id: UUID, cmd: WatchCompetitors, ctx: Context, engine: Engine) -> dict:
    """Each sync (scheduled, `etsypro etsy sync` or `POST .../sync`) polls the watch within the app's
    call budget through Etsy's public listing endpoints (getListingsByListingIds or findAllListingsActive,
    never page scraping) and records each active competitor's price in the shop's currency as an
    observation, leaving out the shop's own Etsy listings. Replaces the listing's watch.

    **Changes:** nothing in the log now; each poll appends ObservationBatch.CompetitorPriceObserved (source etsy-watch)."""
    return CompetitorWatches(engine.core).watch(ctx, shop_id, listing_id, cmd)


@router.get("/watches/{listing_id}", response_model=Watch, dependencies=[requires("shops:read")],
            summary="A listing's competitor watch and its last poll")
def watch_of(shop_id: UUID, listing_id: UUID, ctx: Context, engine: Engine) -> dict:
    return CompetitorWatches(engine.core).watch_of(ctx, shop_id, listing_id)


@router.get("/watches", response_model=list[Watch], dependencies=[requires("shops:read")],
            summary="The shop's competitor watches")
def watches(shop_id: UUID, ctx: Context, engine: Engine) -> list[dict]:
    return CompetitorWatches(engine.core).watches_of(ctx, shop_id)


@router.delete("/watches/{listing_id}", response_model=Watch, dependencies=[requires("prices:write")],
               summary="Stop watching a listing's competitors (answers the watch as it was)")
def unwatch(shop_id: UUID, listing_id: UUID, ctx: Context, engine: Engine) -> dict:
    return CompetitorWatches(engine.core).unwatch(ctx, shop_id, listing_id)
