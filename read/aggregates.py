"""Aggregates as readers see them: replayed from the event log on the read side's own pool,
decoded by the shared codec. Every lookup is confined to the viewer's shop, as the write side's."""

from __future__ import annotations

from typing import Iterable
from uuid import UUID

from eventsourcing.persistence import StoredEvent

import codec
from domain.automation import AutomationSwitch, tenant_switch_id
from domain.errors import NotFound
from domain.listing import Listing
from domain.pricing_rule import PricingRule
from domain.shop import Shop
from read.pool import ReadPool
from read.shops import ShopDirectory, Viewer


def fold(rows: Iterable[tuple]) -> dict[UUID, object]:
    """Aggregates from their stored events, rows of (id, version, topic, state) in version order."""
    aggregates: dict[UUID, object] = {}
    for aggregate_id, version, topic, state in rows:
        event = codec.to_domain_event(StoredEvent(aggregate_id, version, topic, bytes(state)))
        aggregates[aggregate_id] = event.mutate(aggregates.get(aggregate_id))
    return aggregates


class AggregateReader:
    def __init__(self, pool: ReadPool, shops: ShopDirectory):
        self.pool, self.shops = pool, shops

    def events(self, aggregate_id: UUID, after: int = 0, upto: int | None = None) -> list:
        """The aggregate's domain events with versions in (after, upto], oldest first."""
        rows = self.pool.rows(
            "SELECT originator_version, topic, state FROM pricing_events WHERE originator_id = %s"
            " AND originator_version > %s AND (%s::int8 IS NULL OR originator_version <= %s)"
            " ORDER BY originator_version", [aggregate_id, after, upto, upto])
        return [codec.to_domain_event(StoredEvent(aggregate_id, version, topic, bytes(state)))
                for version, topic, state in rows]

    def replay(self, aggregate_id: UUID, version: int | None = None):
        """The aggregate as of `version` (the latest when None); None if it has no events."""
        aggregate = None
        for event in self.events(aggregate_id, upto=version):
            aggregate = event.mutate(aggregate)
        return aggregate

    def listings(self, viewer: Viewer, shop_id: UUID, listing_ids: list[UUID]) -> dict[UUID, Listing]:
        """The shop's listings among these ids, replayed in one query (others' ids are left out)."""
        self.shops.facts(viewer, shop_id)
        found = fold(self.pool.rows(
            "SELECT e.originator_id, e.originator_version, e.topic, e.state FROM shop_listings l"
            " JOIN pricing_events e ON e.originator_id = l.listing_id"
            " WHERE l.shop_id = %s AND l.listing_id = ANY(%s::uuid[]) ORDER BY 1, 2", [shop_id, listing_ids]))
        return {i: x for i, x in found.items() if isinstance(x, Listing) and x.shop_id == shop_id}

    def in_shop(self, viewer: Viewer, shop_id: UUID, aggregate_id: UUID, kind: type, what: str,
                version: int | None = None):
        """The shop's aggregate of this kind, as of `version`; NotFound for any other kind, shop or
        tenant alike, so that others' ids tell nothing."""
        self.shops.facts(viewer, shop_id)
        aggregate = self.replay(aggregate_id, version)
        if not isinstance(aggregate, kind) or aggregate.shop_id != shop_id:
            raise NotFound(f"{what} not found")
        return aggregate

    def listing(self, viewer: Viewer, shop_id: UUID, listing_id: UUID, version: int | None = None) -> Listing:
        return self.in_shop(viewer, shop_id, listing_id, Listing, "listing", version)

    def listing_ids(self, shop_id: UUID, after: UUID | None = None, limit: int | None = None) -> list[UUID]:
        """The shop's listings in id order (shop_listings, written with their registration)."""
        rows = self.pool.rows("SELECT listing_id FROM shop_listings WHERE shop_id = %s"
                              " AND (%s::uuid IS NULL OR listing_id > %s) ORDER BY listing_id LIMIT %s",
                              [shop_id, after, after, limit])
        return [listing_id for listing_id, in rows]

    def rule(self, viewer: Viewer, shop_id: UUID, rule_id: UUID, version: int | None = None) -> PricingRule:
        rule = self.in_shop(viewer, shop_id, rule_id, PricingRule, "rule", version)
        if version is not None and rule.version != version:
            raise NotFound(f"the rule has no version {version} (latest is {rule.version})", field="version")
        return rule

    def rule_version(self, viewer: Viewer, shop_id: UUID, rule_id: UUID, rule_version: int) -> PricingRule:
        """The rule as it was at one of its own versions (v1 = Defined, vN = the Nth revision) — the
        numbering price changes name — rather than at an aggregate version (which retiring also moves)."""
        self.shops.facts(viewer, shop_id)
        rule = None
        for event in self.events(rule_id):
            rule = event.mutate(rule)
            number = getattr(event, "rule_version", 1 if isinstance(event, PricingRule.Defined) else None)
            if number == rule_version:
                break
        else:
            rule = None
        if not isinstance(rule, PricingRule) or rule.shop_id != shop_id:
            raise NotFound(f"the rule has no version {rule_version}", field="rule_version")
        return rule

    def shop(self, viewer: Viewer, shop_id: UUID) -> Shop:
        self.shops.facts(viewer, shop_id)
        return self.replay(shop_id)

    def automation_switch(self, tenant_id: str) -> AutomationSwitch | None:
        return self.replay(tenant_switch_id(tenant_id))
