"""Shops and their rules as readers look them up: the lookup tables the commands write with their
events (migrations/0510), so a shop or rule is found the moment its command has answered."""

from __future__ import annotations

from typing import Protocol
from uuid import UUID

from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic

import codec
from domain.errors import NotFound
from domain.listing import Listing
from domain.pricing_rule import PricingRule, describe_rule
from read.pool import ReadPool


class Viewer(Protocol):
    """Who reads (the API's request context): a tenant, and the shops it may see (None: all of them)."""

    tenant_id: str
    shops: frozenset[str] | None

    def may_see(self, shop_id) -> bool: ...


class ShopDirectory:
    """Tenancy for readers: a shop's (tenant, currency), fixed at its opening, so cached for good."""

    def __init__(self, pool: ReadPool):
        self.pool = pool
        self._facts: dict[UUID, tuple[str, str]] = {}

    def facts(self, ctx: Viewer, shop_id: UUID) -> tuple[str, str]:
        """(tenant, currency) of a shop the context may see; NotFound for others' shops and unknown ids."""
        if shop_id not in self._facts:
            rows = self.pool.rows("SELECT tenant_id, currency FROM shop_directory WHERE shop_id = %s", [shop_id])
            if not rows:
                raise NotFound("shop not found")
            self._facts[shop_id] = rows[0]
        tenant, _ = found = self._facts[shop_id]
        if tenant != ctx.tenant_id or not ctx.may_see(shop_id):
            raise NotFound("shop not found")
        return found

    def shops_of(self, tenant_id: str) -> list[UUID]:
        rows = self.pool.rows("SELECT shop_id FROM shop_directory WHERE tenant_id = %s ORDER BY shop_id", [tenant_id])
        return [shop_id for shop_id, in rows]

    def has_listing(self, shop_id: UUID, listing_id: UUID) -> bool:
        """Whether the listing was registered in this shop: its first event names the shop."""
        return bool(self.pool.rows(
            "SELECT 1 FROM pricing_events e JOIN event_index i ON i.notification_id = e.notification_id"
            " WHERE e.originator_id = %s AND e.originator_version = 1 AND e.topic = %s AND i.shop_id = %s",
            [listing_id, _LISTING_REGISTERED, shop_id]))

    def rules_of(self, ctx: Viewer, shop_id: UUID) -> list[dict]:
        """The shop's rules, retired last, each replayed from its events (all read in one query)."""
        self.facts(ctx, shop_id)
        rows = self.pool.rows(
            "SELECT e.originator_id, e.originator_version, e.topic, e.state FROM shop_rules r"
            " JOIN pricing_events e ON e.originator_id = r.rule_id WHERE r.shop_id = %s"
            " ORDER BY e.originator_id, e.originator_version", [shop_id])
        rules: dict[UUID, PricingRule] = {}
        for rule_id, version, topic, state in rows:
            event = codec.to_domain_event(StoredEvent(rule_id, version, topic, bytes(state)))
            rules[rule_id] = event.mutate(rules.get(rule_id))
        return [describe_rule(r) for r in sorted(rules.values(), key=lambda r: (r.retired, r.name.lower(), str(r.id)))]


_LISTING_REGISTERED = get_topic(Listing.Registered)
