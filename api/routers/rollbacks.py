from uuid import UUID

from fastapi import Response

from api.auth import requires
from api.deps import Context, Engine
from api.routing import resource_router
from api.schemas import BulkRolledBack, ListingRolledBack, answer
from commands import models

router = resource_router(prefix="/shops/{shop_id}", tags=["rollback"], dependencies=[requires("prices:write")])


@router.post("/listings/{listing_id}/rollback", response_model=ListingRolledBack, summary="Roll a listing's price back (appends a compensating change)")
async def rollback_listing(shop_id: UUID, listing_id: UUID, cmd: models.RollbackListing, ctx: Context, engine: Engine, response: Response):
    """Restores the price the listing had at a version (`to_version`) or a moment (`to_time`), or
    undoes one change (`undo_version`); `compensates` names the versions undone.

    **Changes:** appends a Listing.PriceChanged event with source `rollback`; history is never edited."""
    return await answer(response, engine.rollbacks.rollback_listing, ctx, shop_id, listing_id, cmd)


@router.post("/rollbacks", response_model=BulkRolledBack, summary="Compensate every price change matching a filter; report skipped listings")
async def bulk_rollback(shop_id: UUID, cmd: models.BulkRollback, ctx: Context, engine: Engine, response: Response):
    """Undoes every price change of the shop matching a filter (source, rule, rule version, actor,
    time window). Listings changed since by someone else are skipped and reported, never overwritten.

    **Changes:** appends one compensating Listing.PriceChanged event per listing rolled back."""
    return await answer(response, engine.rollbacks.bulk_rollback, ctx, shop_id, cmd)
