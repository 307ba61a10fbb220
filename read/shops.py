"""Which tenant owns a shop and what it sells in, read from the shop's opening event."""

from __future__ import annotations

from typing import Protocol
from uuid import UUID

from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic

import codec
from domain.errors import NotFound
from domain.shop import Shop
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
            opened = self._opening(shop_id)
            if opened is None:
                raise NotFound("shop not found")
            self._facts[shop_id] = (opened.tenant_id, opened.currency)
        tenant, _ = found = self._facts[shop_id]
        if tenant != ctx.tenant_id or not ctx.may_see(shop_id):
            raise NotFound("shop not found")
        return found

    def _opening(self, shop_id: UUID):
        rows = self.pool.rows("SELECT topic, state FROM pricing_events WHERE originator_id = %s AND originator_version = 1",
                              [shop_id])
        if not rows or rows[0][0] != _OPENED:
            return None
        return codec.to_domain_event(StoredEvent(shop_id, 1, rows[0][0], bytes(rows[0][1])))


_OPENED = get_topic(Shop.Opened)
