"""A seller's shop: the tenant boundary for listings, facts and prices."""

from __future__ import annotations

from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.errors import InvalidValue
from domain.meta import EventMeta
from domain.money import check_currency


class Shop(Aggregate):
    @event("Opened")
    def __init__(self, tenant_id: str, name: str, currency: str, marketplace: str, meta: EventMeta):
        self.tenant_id = tenant_id
        self.name = name
        self.currency = currency
        self.marketplace = marketplace

    @staticmethod
    def create_id(meta: EventMeta) -> UUID:
        # The command chooses the shop's id up front so that every event, this one included,
        # can name its shop in its metadata.
        return UUID(meta.shop_id)

    @classmethod
    def open(cls, tenant_id: str, name: str, currency: str, marketplace: str, meta: EventMeta) -> Shop:
        name = name.strip()
        if not name:
            raise InvalidValue("name", "must not be blank")
        check_currency(currency)
        return cls(tenant_id=tenant_id, name=name, currency=currency, marketplace=marketplace, meta=meta)

    @property
    def shop_id(self) -> UUID:
        return self.id
