from typing import Annotated
from uuid import UUID

from fastapi import Query

from api.auth import requires
from api.deps import Context, Engine
from api.routing import resource_router
from api.schemas import ListingChanged, ListingState, PricesChanged, answer
from commands import models
from commands.models import QueryInt, QueryTime

router = resource_router(prefix="/shops/{shop_id}", tags=["prices"])


@router.get("/listings/{listing_id}", response_model=ListingState, summary="A listing now, or as of a version or a moment (by replay)",
            dependencies=[requires("shops:read")])
def get_listing(shop_id: UUID, listing_id: UUID, ctx: Context, engine: Engine,
                version: Annotated[QueryInt | None, Query(ge=1, le=2**63 - 1)] = None,
                at: Annotated[QueryTime | None, Query(description="ISO 8601 with offset")] = None) -> dict:
    return engine.listing_state(ctx, shop_id, listing_id, version=version, at=at)


@router.put("/listings/{listing_id}/price", response_model=ListingChanged, summary="Set a listing's price",
            dependencies=[requires("prices:write")])
def set_price(shop_id: UUID, listing_id: UUID, cmd: models.SetPrice, ctx: Context, engine: Engine):
    return answer(engine.set_price(ctx, shop_id, listing_id, cmd))


@router.put("/listings/{listing_id}/guardrails", response_model=ListingChanged,
            summary="Set floor, ceiling and cost", dependencies=[requires("prices:write")])
def set_guardrails(shop_id: UUID, listing_id: UUID, cmd: models.SetGuardrails, ctx: Context, engine: Engine):
    return answer(engine.set_guardrails(ctx, shop_id, listing_id, cmd))


@router.post("/price-changes", response_model=PricesChanged, summary="Change many prices at once (all or nothing)",
             dependencies=[requires("prices:write")])
def bulk_set_prices(shop_id: UUID, cmd: models.BulkSetPrices, ctx: Context, engine: Engine):
    return answer(engine.bulk_set_prices(ctx, shop_id, cmd))
