"""Projection `competitor_prices`: one fact row per competitor observation, and the hourly price
histogram per listing that the bands (analytics.competitor_bands) are computed from.

One statement does both: the histogram counts only the facts that this statement actually
inserted (RETURNING), so an observation delivered twice is counted once.
"""

from __future__ import annotations

from typing import Sequence

from psycopg import Cursor

from domain.facts import ObservationBatch
from projections.base import LIVE, Positioned, Staging, Statements, Tables, UUIDs, of_types

STAGE = Staging("stage_competitor_observations", (
    ("log_position", "int8"), ("shop_id", "uuid"), ("listing_id", "uuid"), ("competitor", "text"),
    ("price", "numeric"), ("currency", "text"), ("source", "text"), ("observed_at", "timestamptz"),
    ("recorded_at", "timestamptz"), ("batch_id", "uuid"), ("actor_id", "text")))

STATEMENTS = Statements({
    "insert": """
        WITH staged AS (
            DELETE FROM pg_temp.stage_competitor_observations RETURNING *
        ), new AS (
            INSERT INTO {competitor_observations} (log_position, shop_id, listing_id, competitor, price, currency,
                source, observed_at, recorded_at, batch_id, actor_id)
            SELECT * FROM staged
            ON CONFLICT DO NOTHING
            RETURNING listing_id, observed_at, price, shop_id, currency
        )
        INSERT INTO {competitor_price_histogram} AS h (listing_id, bucket, price, shop_id, currency, observations)
        SELECT listing_id, analytics.bucket('1 hour', observed_at), price, shop_id, currency, count(*)
        FROM new GROUP BY 1, 2, 3, 4, 5
        ON CONFLICT (listing_id, bucket, price) DO UPDATE SET observations = h.observations + excluded.observations""",
})


class CompetitorPrices:
    name = "competitor_prices"
    tables = ("competitor_observations", "competitor_price_histogram")
    event_types = (ObservationBatch.CompetitorPriceObserved,)

    def apply(self, cur: Cursor, events: Sequence[Positioned], tables: Tables = LIVE) -> None:
        shop = UUIDs()
        rows = [(pos, shop[e.meta.shop_id], e.listing_id, e.competitor, e.price.amount, e.price.currency, e.source,
                 e.meta.occurred_at, e.timestamp, e.originator_id, e.meta.actor_id)
                for pos, e in of_types(events, self.event_types)]
        if rows:
            STAGE.load(cur, rows)
            cur.execute(STATEMENTS.get("insert", tables))
