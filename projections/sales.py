"""Projection `sales`: one fact row per sale or return line, and hourly units/revenue rollups per
listing and per shop. A return (or cancellation) counts negative units and revenue, so rollups
are net; the returned units and amounts are also kept separately.

One statement writes the facts and both rollups; the rollups add only the facts this statement
actually inserted (RETURNING), so a line delivered twice is counted once.
"""

from __future__ import annotations

from typing import Sequence

from psycopg import Cursor

from domain.facts import SalesBatch
from projections.base import LIVE, Positioned, Staging, Statements, Tables, UUIDs, of_types

STAGE = Staging("stage_sales", (
    ("log_position", "int8"), ("shop_id", "uuid"), ("listing_id", "uuid"), ("kind", "text"), ("quantity", "int8"),
    ("unit_price", "numeric"), ("currency", "text"), ("order_id", "text"), ("transaction_id", "text"),
    ("sold_at", "timestamptz"), ("recorded_at", "timestamptz"), ("batch_id", "uuid"), ("source", "text"),
    ("actor_id", "text")))

_ROLLUP_COLUMNS = """
            sum(quantity), sum(revenue),
            coalesce(sum(quantity) FILTER (WHERE quantity > 0), 0),
            coalesce(-sum(quantity) FILTER (WHERE quantity < 0), 0),
            coalesce(-sum(revenue) FILTER (WHERE quantity < 0), 0),
            count(*)"""

_ROLLUP_UPDATE = """
            units = r.units + excluded.units, revenue = r.revenue + excluded.revenue,
            units_sold = r.units_sold + excluded.units_sold,
            units_returned = r.units_returned + excluded.units_returned,
            revenue_returned = r.revenue_returned + excluded.revenue_returned,
            lines = r.lines + excluded.lines"""

STATEMENTS = Statements({
    "insert": f"""
        WITH staged AS (
            DELETE FROM pg_temp.stage_sales RETURNING *
        ), new AS (
            INSERT INTO {{sales}} (log_position, shop_id, listing_id, kind, quantity, unit_price, revenue, currency,
                order_id, transaction_id, sold_at, recorded_at, batch_id, source, actor_id)
            SELECT log_position, shop_id, listing_id, kind, quantity, unit_price, quantity * unit_price, currency,
                   order_id, transaction_id, sold_at, recorded_at, batch_id, source, actor_id
            FROM staged
            ON CONFLICT DO NOTHING
            RETURNING shop_id, listing_id, sold_at, currency, quantity, revenue
        ), by_listing AS (
            INSERT INTO {{sales_by_listing_hour}} AS r (listing_id, bucket, shop_id, currency, units, revenue,
                units_sold, units_returned, revenue_returned, lines)
            SELECT listing_id, analytics.bucket('1 hour', sold_at), shop_id, currency, {_ROLLUP_COLUMNS}
            FROM new GROUP BY 1, 2, 3, 4
            ON CONFLICT (listing_id, bucket) DO UPDATE SET {_ROLLUP_UPDATE}
        )
        INSERT INTO {{sales_by_shop_hour}} AS r (shop_id, bucket, currency, units, revenue, units_sold,
            units_returned, revenue_returned, lines)
        SELECT shop_id, analytics.bucket('1 hour', sold_at), currency, {_ROLLUP_COLUMNS}
        FROM new GROUP BY 1, 2, 3
        ON CONFLICT (shop_id, bucket) DO UPDATE SET {_ROLLUP_UPDATE}""",
})


class Sales:
    name = "sales"
    tables = ("sales", "sales_by_listing_hour", "sales_by_shop_hour")
    event_types = (SalesBatch.Sold, SalesBatch.Returned)

    def apply(self, cur: Cursor, events: Sequence[Positioned], tables: Tables = LIVE) -> None:
        shop, rows = UUIDs(), []
        for pos, e in of_types(events, self.event_types):
            returned = type(e) is SalesBatch.Returned
            rows.append((pos, shop[e.meta.shop_id], e.listing_id, "return" if returned else "sale",
                         -e.quantity if returned else e.quantity, e.unit_price.amount, e.unit_price.currency,
                         e.order_id, e.transaction_id, e.meta.occurred_at, e.timestamp, e.originator_id,
                         e.meta.source, e.meta.actor_id))
        if rows:
            STAGE.load(cur, rows)
            cur.execute(STATEMENTS.get("insert", tables))
