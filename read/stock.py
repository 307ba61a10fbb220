"""A listing's stock as the stock_runway rule sees it: the last count (Listing.StockCounted, replayed
with the viewer's tenancy checked) and what sold since (projections/velocity.py)."""

from __future__ import annotations

from uuid import UUID

from domain.listing import describe_stock
from projections.velocity import velocities
from read.aggregates import AggregateReader
from read.shops import Viewer


def stock_of(aggregates: AggregateReader, viewer: Viewer, shop_id: UUID, listing_id: UUID) -> dict:
    listing = aggregates.listing(viewer, shop_id, listing_id)  # NotFound for another shop or tenant
    with aggregates.pool.connection() as conn:
        seen = velocities(conn.cursor(), [listing_id]).get(listing_id)
    counted = seen is not None and seen.counted is not None
    return {**describe_stock(listing),
            "sold_since_count": seen.sold_since_count if counted else None,
            "on_hand": seen.stock if counted else None,
            "last_sale_on": None if seen is None or seen.last_sale_on is None else seen.last_sale_on.isoformat()}
