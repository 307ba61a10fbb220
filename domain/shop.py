"""A seller's shop: the tenant boundary for listings, facts and prices."""

from __future__ import annotations

from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.automation import flip_switch
from domain.errors import InvalidValue
from domain.meta import EventMeta
from domain.money import check_currency


class Shop(Aggregate):
    # Who stopped automated repricing in this shop (their event meta), or None while it runs.
    # A class default, because snapshots taken before the stop existed lack the attribute.
    automation_stop = None

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

    # -- emergency stop of automated repricing ---------------------------------------------
    def stop_automation(self, meta: EventMeta) -> bool:
        return flip_switch(meta, self.automation_stop is not None, self._automation_stopped)

    @event("AutomationStopped")
    def _automation_stopped(self, meta: EventMeta) -> None:
        self.automation_stop = meta

    def resume_automation(self, meta: EventMeta) -> bool:
        return flip_switch(meta, self.automation_stop is None, self._automation_resumed)

    @event("AutomationResumed")
    def _automation_resumed(self, meta: EventMeta) -> None:
        self.automation_stop = None
