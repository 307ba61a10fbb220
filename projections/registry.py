"""All projections the projector maintains, by name. Later issues add theirs here."""

from __future__ import annotations

from projections.base import Projection
from projections.competitor_prices import CompetitorPrices
from projections.customers import Customers
from projections.demand_daily import DemandDaily
from projections.price_board import PriceBoard
from projections.price_changes import PriceChanges
from projections.sales import Sales

ALL: tuple[Projection, ...] = (PriceBoard(), PriceChanges(), CompetitorPrices(), Sales(), DemandDaily(), Customers())


def by_name(name: str) -> Projection:
    for projection in ALL:
        if projection.name == name:
            return projection
    raise KeyError(f"no projection named {name!r}; known: {', '.join(p.name for p in ALL)}")
