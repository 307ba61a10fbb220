"""A listing's stock on hand (what the stock_runway rule reads): PUT .../stock records a count,
GET .../stock answers it with the units sold since and what is left."""

from __future__ import annotations

from uuid import UUID

from fastapi import Response
from pydantic import Field

from api.auth import requires
from api.deps import Context, Engine, Reads
from api.routing import resource_router
from api.schemas import Answer, answer, example
from commands.stock import CountStock
from read.stock import stock_of

router = resource_router(prefix="/shops/{shop_id}", tags=["facts"])
WRITE, READ = requires("facts:write"), requires("shops:read")


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
    return await answer(response, engine.stock.count_stock, ctx, shop_id, listing_id, cmd)


class StockNow(StockCounted):
    model_config = example({"listing_id": "0b7c5b1e-3f5a-4a53-9d43-2f0c9a1b6e21", "version": 7, "quantity": 12,
                            "restock_on": "2026-12-21", "counted_at": "2026-12-07T10:00:00+00:00",
                            "sold_since_count": 3, "on_hand": 9, "last_sale_on": "2026-12-07"})
    sold_since_count: int | None = Field(None, description="Net units sold after the count (returns put units back)")
    on_hand: int | None = Field(None, description="The count less what sold since, never below zero")
    last_sale_on: str | None = Field(None, description="The last UTC day with units sold")


@router.get("/listings/{listing_id}/stock", response_model=StockNow, summary="A listing's stock on hand",
            dependencies=[READ])
def get_stock(shop_id: UUID, listing_id: UUID, ctx: Context, reads: Reads) -> dict:
    """The last count, the units sold since (as far as the sales projection has got) and what is left:
    the stock the `stock_runway` rule reads."""
    return stock_of(reads.aggregates, ctx, shop_id, listing_id)
