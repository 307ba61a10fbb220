"""A listing's stock on hand (what the stock_runway rule reads): PUT .../stock records a count."""

from __future__ import annotations

from uuid import UUID

from fastapi import Response
from pydantic import Field

from api.auth import requires
from api.deps import Context, Engine
from api.routing import resource_router
from api.schemas import Answer, answer, example
from commands.stock import CountStock, Stock

router = resource_router(prefix="/shops/{shop_id}", tags=["facts"])
WRITE = requires("facts:write")


class StockCounted(Answer):
    model_config = example({"listing_id": "0b7c5b1e-3f5a-4a53-9d43-2f0c9a1b6e21", "version": 7, "quantity": 12,
                            "restock_on": "2026-12-21", "counted_at": "2026-12-07T10:00:00+00:00"})
    listing_id: str
    version: int
    quantity: int | None = Field(description="Units on hand at the count")
    restock_on: str | None = Field(None, description="The next restock day, if any")
    counted_at: str | None = Field(None, description="When the count was recorded (business time)")


@router.put("/listings/{listing_id}/stock", response_model=StockCounted, summary="Record a listing's stock on hand",
            dependencies=[WRITE])
async def count_stock(shop_id: UUID, listing_id: UUID, cmd: CountStock, ctx: Context, engine: Engine,
                      response: Response):
    """Records the units on hand now and the next restock day. Sales recorded after the count reduce
    the stock the `stock_runway` rule sees (returns put units back).

    **Changes:** appends a `Listing.StockCounted` event (every count, even an unchanged one)."""
    return await answer(response, Stock(engine.core).count_stock, ctx, shop_id, listing_id, cmd)
