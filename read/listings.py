"""Listings as they are and as they were: time travel by replay, automation settings and stops."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from domain.automation import shop_state, tenant_state
from domain.errors import DomainError, NotFound
from domain.history import version_at
from domain.listing import describe_automation, describe_listing
from read.aggregates import AggregateReader
from read.shops import Viewer


class ListingReader:
    def __init__(self, aggregates: AggregateReader):
        self.aggregates = aggregates

    def state(self, viewer: Viewer, shop_id: UUID, listing_id: UUID, version: int | None = None,
              at: datetime | None = None) -> dict:
        """The listing now, at one of its versions, or as it was at a moment of recorded time."""
        if at is not None:
            if at.tzinfo is None:
                raise DomainError("at", "must include a timezone offset")
            self.aggregates.listing(viewer, shop_id, listing_id)  # tenancy before reading history
            version = version_at(self.aggregates.events(listing_id), at)
            if version == 0:
                raise NotFound("the listing did not exist at that time", field="at")
        listing = self.aggregates.listing(viewer, shop_id, listing_id, version)
        if version is not None and listing.version != version:
            raise NotFound(f"the listing has no version {version} (latest is {listing.version})", field="version")
        return describe_listing(listing)

    def automation(self, viewer: Viewer, shop_id: UUID, listing_id: UUID) -> dict:
        return describe_automation(self.aggregates.listing(viewer, shop_id, listing_id))

    def shop_automation(self, viewer: Viewer, shop_id: UUID) -> dict:
        shop = self.aggregates.shop(viewer, shop_id)
        return shop_state(shop, self.aggregates.automation_switch(shop.tenant_id))

    def tenant_automation(self, viewer: Viewer) -> dict:
        return tenant_state(viewer.tenant_id, self.aggregates.automation_switch(viewer.tenant_id))
