from typing import Annotated
from uuid import UUID

from fastapi import Query, Response

from api.auth import requires
from api.deps import Context, Engine, Reads
from api.routing import resource_router
from api.schemas import ListingChanged, ListingState, PricesChanged, answer
from commands import models
from commands.models import QueryInt, QueryTime

router = resource_router(prefix="/shops/{shop_id}", tags=["prices"])


@router.get("/listings/{listing_id}", response_model=ListingState, summary="A listing now, or as of a version or a moment (by replay)",
            dependencies=[requires("shops:read")])
def get_listing(shop_id: UUID, listing_id: UUID, ctx: Context, reads: Reads,
                version: Annotated[QueryInt | None, Query(ge=1, le=2**63 - 1)] = None,
                at: Annotated[QueryTime | None, Query(description="ISO 8601 with offset")] = None) -> dict:
    """The listing's price, guardrails and identity now; with `version` or `at`, as it was then,
    replayed from its events (never a stored copy)."""
    return reads.listings.state(ctx, shop_id, listing_id, version=version, at=at)


@router.put("/listings/{listing_id}/price", response_model=ListingChanged, summary="Set a listing's price",
            dependencies=[requires("prices:write")])
async def set_price(shop_id: UUID, listing_id: UUID, cmd: models.SetPrice, ctx: Context, engine: Engine, response: Response):
    """Gives the listing a new price, within its floor and ceiling (422 naming `price` otherwise).
    With `expected_version`, refused with 409 (carrying `current_version`) if the listing moved on.

    **Changes:** appends a Listing.PriceChanged event with who, why and the source, unless the price is
    already this one (`changed: false`, nothing written). Retry safely with an `Idempotency-Key`."""
    return await answer(response, engine.listings.set_price, ctx, shop_id, listing_id, cmd)


@router.put("/listings/{listing_id}/guardrails", response_model=ListingChanged,
            summary="Set floor, ceiling and cost", dependencies=[requires("prices:write")])
async def set_guardrails(shop_id: UUID, listing_id: UUID, cmd: models.SetGuardrails, ctx: Context, engine: Engine, response: Response):
    """Sets the floor, ceiling and cost every later price (manual or automated) is held to; the
    current price must lie within them.

    **Changes:** appends a Listing.GuardrailsSet event (nothing when they are already these)."""
    return await answer(response, engine.listings.set_guardrails, ctx, shop_id, listing_id, cmd)


@router.post("/price-changes", response_model=PricesChanged, summary="Change many prices at once (all or nothing)",
             dependencies=[requires("prices:write")])
async def bulk_set_prices(shop_id: UUID, cmd: models.BulkSetPrices, ctx: Context, engine: Engine, response: Response):
    """Sets the prices of many listings of the shop in one command: if any listing refuses its
    price, none changes and the problem names the item (`changes[3].price`).

    **Changes:** appends one Listing.PriceChanged event per listing whose price differs, in one transaction."""
    return await answer(response, engine.listings.bulk_set_prices, ctx, shop_id, cmd)
