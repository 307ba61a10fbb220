"""Projection `customers`: one row per marketplace order with its buyer's pseudonym, for
repeat-customer analysis (read/customers.py). An order delivered twice is kept once (its id is the
key); an erased buyer's pseudonym is cleared from every order on the tombstone, so the view no
longer tells which orders were one person's."""

from __future__ import annotations

from typing import Sequence

from psycopg import Cursor

from domain.orders import OrderBatch
from domain.personal import Privacy
from projections.base import LIVE, Positioned, Statements, Tables, UUIDs, columns, of_types

STATEMENTS = Statements({
    "orders": """
        INSERT INTO {shop_orders} (shop_id, order_id, buyer, placed_at, items, order_total, currency, log_position)
        SELECT * FROM unnest(%s::uuid[], %s::text[], %s::text[], %s::timestamptz[], %s::int[], %s::numeric[],
                             %s::text[], %s::bigint[])
        ON CONFLICT (shop_id, order_id) DO NOTHING""",
    "erased": "UPDATE {shop_orders} SET buyer = NULL WHERE buyer = ANY(%s::text[])",
})


class Customers:
    name = "customers"
    tables = ("shop_orders",)
    event_types = (OrderBatch.OrderRecorded, Privacy.SubjectErased)

    def apply(self, cur: Cursor, events: Sequence[Positioned], tables: Tables = LIVE) -> None:
        shop, orders = UUIDs(), []
        for pos, e in of_types(events, self.event_types):
            kind = type(e)
            if kind is OrderBatch.OrderRecorded:
                total = e.totals.get("order_total")
                orders.append((shop[e.meta.shop_id], e.order_id, e.buyer, e.meta.occurred_at, e.items,
                               None if total is None else total.amount, None if total is None else total.currency, pos))
            elif kind is Privacy.SubjectErased:  # after the orders staged so far: they may name the buyer
                self._write(cur, orders, tables)
                orders = []
                cur.execute(STATEMENTS.get("erased", tables), [[e.subject_id.hex]])
        self._write(cur, orders, tables)

    @staticmethod
    def _write(cur: Cursor, orders: list[tuple], tables: Tables) -> None:
        if orders:
            cur.execute(STATEMENTS.get("orders", tables), columns(orders))
