"""Stock on hand: a listing's stock count and next restock date, as Listing.StockCounted events.

The count is a fact the seller records (PUT .../stock); sales after it are their own facts
(SalesBatch), so the stock on hand is the count less the net units sold since, worked out where
it is read (projections/velocity.py) rather than by rewriting the count on every sale.
"""

from __future__ import annotations

from datetime import date
from uuid import UUID

from pydantic import ConfigDict, Field

from commands.context import CommandContext, Decision, Result
from commands.core import WriteCore
from commands.models import Command, Reason, Version, integer
from domain.listing import MAX_STOCK, describe_stock


class CountStock(Command):
    """The units on hand now, and the day the next delivery is expected (null: none planned)."""

    quantity: integer(ge=0, le=MAX_STOCK) = Field(description="Units on hand now; later sales count against it")
    restock_on: date | None = Field(None, description="The day the next stock arrives (UTC calendar day)")
    reason: Reason = ""
    expected_version: Version | None = None

    model_config = ConfigDict(extra="forbid", frozen=True,
                              json_schema_extra={"examples": [{"quantity": 12, "restock_on": "2026-12-21"}]})


class Stock:
    """Stock counts of listings, on the shared write core."""

    def __init__(self, core: WriteCore):
        self.core = core

    def count_stock(self, ctx: CommandContext, shop_id: UUID, listing_id: UUID, cmd: CountStock) -> Result:
        def decide() -> Decision:
            listing = self.core.listing_at(ctx, shop_id, listing_id, cmd.expected_version)
            listing.count_stock(cmd.quantity, cmd.restock_on, ctx.meta(shop_id, reason=cmd.reason))
            return Decision([listing], describe_stock(listing), strict=cmd.expected_version is not None)

        return self.core.execute(ctx, "count_stock", {"listing": str(listing_id), **cmd.model_dump(mode="json")},
                                 decide, serial=[listing_id])
