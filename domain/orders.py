"""Orders as facts: one event per marketplace order (an Etsy receipt), for repeat-customer and
basket analysis. The buyer is only ever a keyed pseudonym (HMAC by the server key, per shop):
no name, address or e-mail enters the log. An order's lines are sales (domain/facts.py SalesBatch)
naming the same order id."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from eventsourcing.domain import Aggregate

from domain.errors import InvalidValue
from domain.facts import FactBatch
from domain.meta import EventMeta
from domain.money import Money

# What an order's totals may hold; each is absent when the source does not say (an order-items file).
TOTALS = ("order_value", "discount", "shipping", "shipping_discount", "sales_tax", "order_total")


@dataclass(frozen=True, slots=True)
class Order:
    order_id: str
    buyer: str | None  # a keyed pseudonym, never the buyer's name, username or e-mail
    items: int | None
    placed_at: datetime
    status: str | None
    totals: dict[str, Money]  # a subset of TOTALS


class OrderBatch(FactBatch):
    @classmethod
    def record(cls, shop_id: UUID, currency: str, orders: list[Order], meta: EventMeta) -> OrderBatch:
        if not orders:
            raise InvalidValue("orders", "must not be empty")
        for i, order in enumerate(orders):
            for name, amount in order.totals.items():
                if name not in TOTALS:
                    raise InvalidValue(f"orders[{i}].{name}", "is not an order total")
                if amount.currency != currency:
                    raise InvalidValue(f"orders[{i}].currency", f"{amount.currency} does not match the shop's {currency}")
            if order.items is not None and order.items < 1:
                raise InvalidValue(f"orders[{i}].items", "must be at least 1")
        batch, meta_at = cls(shop_id=shop_id, size=len(orders), meta=meta), cls.meta_at(meta)
        batch.record_facts(lambda batch_id, version, at, order: cls.OrderRecorded(
            batch_id, version, at, order.order_id, order.buyer, order.items, order.status, order.totals,
            meta_at(order.placed_at)), orders)  # positional: OrderRecorded's fields, after the library's three
        return batch

    class OrderRecorded(Aggregate.Event):
        order_id: str
        buyer: str | None
        items: int | None
        status: str | None
        totals: dict[str, Money]
        meta: EventMeta

        def apply(self, aggregate: OrderBatch) -> None:
            pass  # a fact: the batch keeps no state per order
