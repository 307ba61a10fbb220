"""What the velocity rules (stock_runway, stale_listing: domain/velocity.py) read, for many listings
in two queries, as streams/optimise.py does for optimise_profit. Here, beside projections/observations.py,
because both the repricing policy (streams/) and the dry run (read/) read it:

1. from the event log: each listing's latest Listing.StockCounted and its Registered event (when it
   was listed: the stale clock's start if it never sold);
2. from the analytics views: net units sold after each count (analytics.sales, business time
   after the count's), the last UTC day with units sold (analytics.demand_daily), and the
   listing's forecast run of its shop's current refresh (analytics.model_runs).

Stock on hand is the count less the net units sold since: a sale recorded later with a business
time before the count is already in the count, one after it is not.
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Callable, Sequence
from uuid import UUID

from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic

import codec
from domain.listing import Listing
from domain.velocity import ForecastRun, Velocity

# (cursor, listing ids) -> listing id -> what its velocity rule reads (absent: no such listing)
VelocitySource = Callable[[object, Sequence[UUID]], dict[UUID, Velocity]]

_COUNTED, _REGISTERED = get_topic(Listing.StockCounted), get_topic(Listing.Registered)

_COUNTS_AND_REGISTRATIONS = """
    SELECT DISTINCT ON (e.originator_id, e.topic) e.originator_id, e.originator_version, e.topic, e.state
    FROM pricing_events e
    WHERE e.originator_id = ANY(%s::uuid[]) AND e.topic = ANY(%s::text[])
    ORDER BY e.originator_id, e.topic, e.originator_version DESC"""

_SALES_AND_FORECASTS = """
    SELECT w.listing_id,
           (SELECT coalesce(sum(s.quantity), 0) FROM analytics.sales s
            WHERE s.listing_id = w.listing_id AND s.sold_at > w.counted_at) AS sold_since,
           (SELECT max(d.day) FROM analytics.demand_daily d
            WHERE d.listing_id = w.listing_id AND d.units_sold > 0) AS last_sale_on,
           r.run_id, r.created_at, r.refused, r.answer
    FROM unnest(%s::uuid[], %s::timestamptz[]) AS w(listing_id, counted_at)
    LEFT JOIN LATERAL (
        SELECT r.run_id, r.created_at, r.refused, r.answer FROM analytics.model_runs r
        JOIN analytics.model_refreshes f ON f.refresh_id = r.refresh_id AND f.shop_id = r.shop_id
        WHERE r.listing_id = w.listing_id AND r.kind = 'forecast') r ON true"""


def velocities(cur, listing_ids: Sequence[UUID]) -> dict[UUID, Velocity]:
    """Each listing's stock, sales since its count, last sale day and current forecast run."""
    if not listing_ids:
        return {}
    rows = cur.execute(_COUNTS_AND_REGISTRATIONS, [list(listing_ids), [_COUNTED, _REGISTERED]]).fetchall()
    counted, listed = {}, {}
    for listing_id, version, topic, state in rows:
        e = codec.to_domain_event(StoredEvent(listing_id, version, topic, bytes(state)))
        if topic == _COUNTED:
            counted[listing_id] = e
        else:
            listed[listing_id] = e.meta.occurred_at.date()
    wanted = [listing_id for listing_id in listing_ids if listing_id in listed]
    never = datetime.max.replace(tzinfo=timezone.utc)  # no count: no sales count against it
    since = [counted[i].meta.occurred_at if i in counted else never for i in wanted]
    found = {}
    for listing_id, sold, last_sale, run_id, created_at, refused, answer in cur.execute(
            _SALES_AND_FORECASTS, [wanted, since]).fetchall():
        count = counted.get(listing_id)
        found[listing_id] = Velocity(
            listed_on=listed[listing_id],
            forecast=None if run_id is None else ForecastRun.from_stored(run_id, created_at, refused, answer),
            counted=None if count is None else count.quantity,
            counted_at=None if count is None else count.meta.occurred_at,
            sold_since_count=int(sold),
            restock_on=None if count is None or count.restock_on is None else date.fromisoformat(count.restock_on),
            last_sale_on=last_sale)
    return found
