from uuid import UUID

from fastapi import Response

from api.auth import requires
from api.deps import Context, Engine
from api.routing import resource_router
from api.schemas import BatchRecorded, answer
from commands import models

router = resource_router(prefix="/shops/{shop_id}", tags=["facts"], dependencies=[requires("facts:write")])


@router.post("/observations", status_code=201, response_model=BatchRecorded,
             summary="Record competitor observations (up to 10,000 per request, all or nothing)")
async def record_observations(shop_id: UUID, cmd: models.RecordObservations, ctx: Context, engine: Engine, response: Response):
    """Records what competitors charged for the shop's listings, as observed at `observed_at`. They
    feed the competitor views and the repricing rules.

    **Changes:** appends one event per observation in a new batch, all or nothing."""
    return await answer(response, engine.listings.record_observations, ctx, shop_id, cmd)


@router.post("/sales", status_code=201, response_model=BatchRecorded,
             summary="Record sales, returns and cancellations (up to 10,000 lines, all or nothing)")
async def record_sales(shop_id: UUID, cmd: models.RecordSales, ctx: Context, engine: Engine, response: Response):
    """Records sale lines of the shop's listings; a negative quantity is a return or cancellation.
    A `transaction_id` is recorded once per shop: a repeated one is refused.

    **Changes:** appends one event per line in a new batch, all or nothing."""
    return await answer(response, engine.listings.record_sales, ctx, shop_id, cmd)
