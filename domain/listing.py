"""A listing on a marketplace and its price: the aggregate that decides every price change."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.errors import InvalidValue, InvariantViolated
from domain.meta import EventMeta, Source
from domain.money import Money

STATUSES = ("active", "inactive", "draft", "sold_out")


@dataclass(frozen=True, slots=True)
class Guardrails:
    """Bounds that every price of the listing must respect. None means unbounded."""

    floor: Money | None = None
    ceiling: Money | None = None
    cost: Money | None = None

    def check(self, currency: str) -> None:
        for name in ("floor", "ceiling", "cost"):
            value = getattr(self, name)
            if value is not None and value.currency != currency:
                raise InvalidValue(name, f"currency {value.currency} does not match the listing's {currency}")
        if self.floor and self.ceiling and self.floor.amount > self.ceiling.amount:
            raise InvariantViolated("floor", f"floor {self.floor} is above ceiling {self.ceiling}")

    def admit(self, price: Money, field: str = "price") -> None:
        if self.floor and price.amount < self.floor.amount:
            raise InvariantViolated(field, f"{price} is below the floor {self.floor}")
        if self.ceiling and price.amount > self.ceiling.amount:
            raise InvariantViolated(field, f"{price} is above the ceiling {self.ceiling}")


class Listing(Aggregate):
    @event("Registered")
    def __init__(
        self,
        shop_id: UUID,
        external_id: str,
        sku: str,
        title: str,
        status: str,
        price: Money,
        guardrails: Guardrails,
        meta: EventMeta,
    ):
        self.shop_id = shop_id
        self.external_id = external_id
        self.sku = sku
        self.title = title
        self.status = status
        self.price = price
        self.guardrails = guardrails
        self.last_price_change = 0  # version of the event that last set the price

    @classmethod
    def register(
        cls, shop_id: UUID, external_id: str, sku: str, title: str, status: str,
        price: Money, guardrails: Guardrails, meta: EventMeta,
    ) -> Listing:
        if status not in STATUSES:
            raise InvalidValue("status", f"must be one of {', '.join(STATUSES)}")
        guardrails.check(price.currency)
        guardrails.admit(price)
        return cls(shop_id=shop_id, external_id=external_id, sku=sku, title=title, status=status,
                   price=price, guardrails=guardrails, meta=meta)

    @property
    def currency(self) -> str:
        return self.price.currency

    # -- price -----------------------------------------------------------------------------
    def change_price(self, price: Money, meta: EventMeta, rule: str | None = None) -> bool:
        """Set a new price within the guardrails. Returns False when the price is unchanged."""
        self.price.same_currency(price, "price")
        self.guardrails.admit(price)
        if price == self.price:
            return False
        self._price_changed(price=price, previous=self.price, meta=meta, rule=rule, compensates=[])
        return True

    def restore_price(self, price: Money, compensates: list[int], meta: EventMeta) -> bool:
        """Compensate earlier price changes (named by version) by restoring an earlier price."""
        if meta.source != Source.ROLLBACK.value:
            raise InvalidValue("source", "a compensation must have source 'rollback'")
        self.guardrails.admit(price)
        if price == self.price:
            return False
        self._price_changed(price=price, previous=self.price, meta=meta, rule=None,
                            compensates=sorted(compensates))
        return True

    @event("PriceChanged")
    def _price_changed(self, price: Money, previous: Money, meta: EventMeta, rule: str | None,
                       compensates: list[int]) -> None:
        self.price = price
        # The library applies the event before it bumps the version: this event's version is +1.
        self.last_price_change = self.version + 1

    # -- guardrails ------------------------------------------------------------------------
    def set_guardrails(self, guardrails: Guardrails, meta: EventMeta) -> bool:
        guardrails.check(self.currency)
        if guardrails.floor and self.price.amount < guardrails.floor.amount:
            raise InvariantViolated("floor", f"floor {guardrails.floor} is above the current price {self.price}")
        if guardrails.ceiling and self.price.amount > guardrails.ceiling.amount:
            raise InvariantViolated("ceiling", f"ceiling {guardrails.ceiling} is below the current price {self.price}")
        if guardrails == self.guardrails:
            return False
        self._guardrails_set(guardrails=guardrails, meta=meta)
        return True

    @event("GuardrailsSet")
    def _guardrails_set(self, guardrails: Guardrails, meta: EventMeta) -> None:
        self.guardrails = guardrails
