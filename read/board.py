"""The dashboard's price board: every listing of a shop in one query, each with its price and
guardrails (analytics.current_prices), the change that set that price (who, why, rule:
analytics.price_changes), its competitors' band over the last days (analytics.competitor_bands)
and its rule (the repricing policy's index, streams.repricing_listings)."""

from __future__ import annotations

from uuid import UUID

from psycopg import Connection
from psycopg.rows import dict_row

BAND_DAYS = 7
# One bucket wide enough to hold the whole window: the band over the last BAND_DAYS days.
_ONE_BUCKET = "36500 days"

_BOARD = f"""
WITH band AS (
    SELECT listing_id, min(min_price) AS band_min, min(median) AS band_median, max(max_price) AS band_max,
           sum(observations)::bigint AS band_observations
    FROM analytics.competitor_bands('{_ONE_BUCKET}'::interval, %(shop)s, NULL, now() - interval '{BAND_DAYS} days', NULL)
    GROUP BY listing_id
)
SELECT p.listing_id, p.external_id, p.sku, p.title, p.status, p.price, p.currency, p.floor, p.ceiling, p.cost,
       p.version, p.price_version, p.price_changed_at, p.price_source, p.price_actor_id,
       c.reason AS price_reason, c.rule AS price_rule, c.kind AS price_kind,
       b.band_min, b.band_median, b.band_max, b.band_observations,
       r.rule_id
FROM analytics.current_prices p
LEFT JOIN analytics.price_changes c ON c.listing_id = p.listing_id AND c.version = p.price_version
LEFT JOIN band b ON b.listing_id = p.listing_id
LEFT JOIN streams.repricing_listings r ON r.listing_id = p.listing_id
WHERE p.shop_id = %(shop)s
ORDER BY p.listing_id
"""


def board(conn: Connection, shop_id: UUID) -> list[dict]:
    """Every projected listing of the shop; money as exact decimal strings."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(_BOARD, {"shop": shop_id}).fetchall()
    return [{k: _plain(v) for k, v in row.items()} for row in rows]


def _plain(value):
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)  # Decimal and UUID: exact text
