"""Repeat customers of a shop, from the `customers` view (analytics.shop_orders): how many orders
came from buyers who ordered more than once, and their share of the revenue. Buyers are pseudonyms
(never names); an erased buyer's orders count as orders without a buyer."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

REPEAT_CUSTOMERS = """
    WITH chosen AS (
        SELECT buyer, order_total, currency, placed_at FROM analytics.shop_orders
        WHERE shop_id = %(shop)s AND placed_at >= %(since)s AND placed_at < %(until)s
    ), per_buyer AS (
        SELECT buyer, count(*) AS orders, sum(order_total) AS revenue FROM chosen
        WHERE buyer IS NOT NULL GROUP BY buyer
    )
    SELECT (SELECT count(*) FROM chosen) AS orders,
           (SELECT count(*) FROM chosen WHERE buyer IS NOT NULL) AS orders_with_buyer,
           (SELECT count(*) FROM per_buyer) AS buyers,
           (SELECT count(*) FROM per_buyer WHERE orders > 1) AS repeat_buyers,
           (SELECT coalesce(sum(orders), 0) FROM per_buyer WHERE orders > 1) AS orders_from_repeat_buyers,
           (SELECT sum(revenue) FROM per_buyer) AS revenue_with_buyer,
           (SELECT sum(revenue) FROM per_buyer WHERE orders > 1) AS revenue_from_repeat_buyers,
           (SELECT min(currency) FROM chosen) AS currency,
           (SELECT min(placed_at) FROM chosen) AS first_order_at,
           (SELECT max(placed_at) FROM chosen) AS last_order_at,
           (SELECT coalesce(jsonb_object_agg(n, buyers), '{}') FROM (
                SELECT least(orders, 4) AS n, count(*) AS buyers FROM per_buyer GROUP BY 1) AS h) AS histogram"""

EVER, NEVER = datetime.fromisoformat("0001-01-01T00:00:00+00:00"), datetime.fromisoformat("9999-12-31T00:00:00+00:00")


def repeat_customers(pool, shop_id: UUID, since: datetime | None = None, until: datetime | None = None) -> dict:
    [(orders, with_buyer, buyers, repeat, from_repeat, revenue, repeat_revenue, currency, first, last, histogram)] = \
        pool.rows(REPEAT_CUSTOMERS, {"shop": shop_id, "since": since or EVER, "until": until or NEVER})
    return {"orders": orders, "orders_with_buyer": with_buyer, "buyers": buyers, "repeat_buyers": repeat,
            "orders_from_repeat_buyers": from_repeat,
            "repeat_order_share": _share(from_repeat, with_buyer),
            "revenue_with_buyer": _money(revenue), "revenue_from_repeat_buyers": _money(repeat_revenue),
            "repeat_revenue_share": _share(repeat_revenue, revenue), "currency": currency,
            "buyers_by_orders": {label: histogram.get(str(n), 0) for n, label in ((1, "1"), (2, "2"), (3, "3"), (4, "4+"))},
            "first_order_at": first, "last_order_at": last}


def _share(part, whole) -> float | None:
    return None if not whole else round(float(part or 0) / float(whole), 4)


def _money(amount) -> str | None:
    return None if amount is None else str(amount)
