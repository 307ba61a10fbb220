"""Polls a shop's competitor watches (commands/competitor_watch.py) at Etsy, within the app's call
budget: named listings in one getListingsByListingIds call, a keyword search through
findAllListingsActive (Etsy's public listing endpoints, on the API key alone; never page scraping).
Each active competitor's price in the shop's currency is recorded as an observation (source
etsy-watch), through the same command as the REST route; the shop's own Etsy listings are left out.
A watch Etsy refuses is noted on it (last_error) and the others go on."""

from __future__ import annotations

from datetime import datetime, timezone
from uuid import UUID

from commands import models
from commands.competitor_watch import CompetitorWatches
from commands.context import CommandContext
from commands.marketplace import Marketplace
from domain.marketplace import EtsyRefused
from streams.etsy_client import EtsyClient
from streams.etsy_sync import page_results, read_listing  # Etsy's answers, read strictly as the sync reads them

SOURCE = "etsy-watch"


class CompetitorWatcher:
    def __init__(self, marketplace: Marketplace, client: EtsyClient):
        self.marketplace, self.client = marketplace, client
        self.watches = CompetitorWatches(marketplace.core)

    def poll_shop(self, shop_id: UUID, own: set[int]) -> int:
        """Every watch of the shop once; `own`: the shop's Etsy listing ids. Answers the prices recorded."""
        watches = self.watches.rows(shop_id)
        if not watches:
            return 0
        ctx = self.marketplace.service_context(shop_id)
        _, currency = self.marketplace.core.shop_facts(ctx, shop_id)
        recorded = 0
        for watch in watches:
            try:
                seen = self._poll(ctx, shop_id, currency, watch, own)
            except EtsyRefused as e:  # this watch's answer could not be used: noted, the others go on
                self.watches.polled(watch["listing_id"], None, str(e))
                continue
            self.watches.polled(watch["listing_id"], seen, None)
            recorded += seen
        return recorded

    def _poll(self, ctx: CommandContext, shop_id: UUID, currency: str, watch: dict, own: set[int]) -> int:
        if watch["etsy_listing_ids"] is not None:
            page = self.client.listings_batch(list(watch["etsy_listing_ids"]))
        else:
            page = self.client.active_listings(watch["keywords"], watch["max_results"])
        found = [read_listing(x, f"results[{i}]") for i, x in enumerate(page_results(page))]
        now = datetime.now(timezone.utc)
        seen = [{"listing_id": watch["listing_id"], "competitor": f"etsy:{x['etsy_listing_id']}",
                 "price": x["price"].amount, "currency": currency, "observed_at": now, "source": SOURCE}
                for x in found if x["state"] == "active" and x["price"].currency == currency
                and x["etsy_listing_id"] not in own]
        if seen:
            self.marketplace.listings.record_observations(ctx, shop_id, models.RecordObservations(
                observations=seen, source="import", reason="competitor watch at Etsy"))
        return len(seen)
