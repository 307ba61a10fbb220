"""Projection `demand_daily`: net units, revenue, returns and the paid amount per listing and UTC
calendar day of business time (a sale at 23:30 UTC counts on its own day, whatever the shop's zone).

One statement writes the ledger of counted events and the daily rollup; the rollup adds only the
ledger rows this statement actually inserted (RETURNING), so a line delivered twice is counted once.
Prices in force, competitor bands and activity are read at query time (read/demand.py) from the
views that already hold them.
"""

from __future__ import annotations

from typing import Sequence

from psycopg import Cursor

from domain.facts import SalesBatch
from projections.base import LIVE, Positioned, Staging, Statements, Tables, UUIDs, of_types

STAGE = Staging("stage_demand_lines", (
    ("log_position", "int8"), ("shop_id", "uuid"), ("listing_id", "uuid"), ("quantity", "int8"),
    ("unit_price", "numeric"), ("currency", "text"), ("sold_at", "timestamptz")))

STATEMENTS = Statements({
    "insert": """
        WITH staged AS (
            DELETE FROM pg_temp.stage_demand_lines RETURNING *
        ), once AS (  -- an event twice in one batch is still one line
            SELECT DISTINCT ON (log_position) * FROM staged
        ), new AS (
            INSERT INTO {demand_lines} (log_position, listing_id, day, quantity, amount)
            SELECT log_position, listing_id, (sold_at AT TIME ZONE 'UTC')::date, quantity, quantity * unit_price
            FROM once
            ON CONFLICT DO NOTHING
            RETURNING log_position
        )
        INSERT INTO {demand_daily} AS d (listing_id, day, shop_id, currency, units, revenue, units_sold,
            units_returned, paid_amount, lines)
        SELECT s.listing_id, (s.sold_at AT TIME ZONE 'UTC')::date, s.shop_id, s.currency,
               sum(s.quantity), sum(s.quantity * s.unit_price),
               coalesce(sum(s.quantity) FILTER (WHERE s.quantity > 0), 0),
               coalesce(-sum(s.quantity) FILTER (WHERE s.quantity < 0), 0),
               coalesce(sum(s.quantity * s.unit_price) FILTER (WHERE s.quantity > 0), 0),
               count(*)
        FROM once s JOIN new USING (log_position)
        GROUP BY 1, 2, 3, 4
        ON CONFLICT (listing_id, day) DO UPDATE SET
            units = d.units + excluded.units, revenue = d.revenue + excluded.revenue,
            units_sold = d.units_sold + excluded.units_sold,
            units_returned = d.units_returned + excluded.units_returned,
            paid_amount = d.paid_amount + excluded.paid_amount, lines = d.lines + excluded.lines""",
})


class DemandDaily:
    name = "demand_daily"
    tables = ("demand_lines", "demand_daily")
    event_types = (SalesBatch.Sold, SalesBatch.Returned)

    def apply(self, cur: Cursor, events: Sequence[Positioned], tables: Tables = LIVE) -> None:
        shop, rows = UUIDs(), []
        for pos, e in of_types(events, self.event_types):
            quantity = -e.quantity if type(e) is SalesBatch.Returned else e.quantity
            rows.append((pos, shop[e.meta.shop_id], e.listing_id, quantity, e.unit_price.amount,
                         e.unit_price.currency, e.meta.occurred_at))
        if rows:
            STAGE.load(cur, rows)
            cur.execute(STATEMENTS.get("insert", tables))
