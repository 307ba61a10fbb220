"""How far behind the head of the event log each follower is (events and seconds), and the
events followers parked (projections/parking.py).

Two scopes. The whole log (`lag`, `policy_lags`, `parked` with no shops): for operators, who run
`etsypro projections status` with the database's credentials. A tenant's own (`tenant_lag`,
`parked` with its shops): only the events of its shops are counted or listed, so a tenant learns
nothing about the volume or the failures of others (GET /analytics/lag).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Sequence

from psycopg import Connection
from psycopg.rows import tuple_row


@dataclass(frozen=True)
class Lag:
    projection: str
    log_position: int          # last applied pricing_events.notification_id (0: never ran)
    head: int                  # latest committed notification_id
    events_behind: int         # committed events not yet applied
    seconds_behind: float      # how long the oldest unapplied event has been waiting (0 when caught up)
    updated_at: datetime | None  # when the projection last committed a batch
    parked: int = 0            # events it passed over, parked with their error

    def as_dict(self) -> dict:
        return {"projection": self.projection, "log_position": self.log_position, "head": self.head,
                "events_behind": self.events_behind, "seconds_behind": round(self.seconds_behind, 3),
                "updated_at": self.updated_at.isoformat() if self.updated_at else None, "parked": self.parked}


@dataclass(frozen=True)
class TenantLag:
    """A follower's lag over one tenant's shops only."""

    follower: str
    events_behind: int         # events of these shops not yet applied
    seconds_behind: float      # how long the oldest of them has been waiting
    updated_at: datetime | None
    parked: int                # events of these shops the follower parked

    def as_dict(self) -> dict:
        return {"projection": self.follower, "events_behind": self.events_behind,
                "seconds_behind": round(self.seconds_behind, 3),
                "updated_at": self.updated_at.isoformat() if self.updated_at else None, "parked": self.parked}


_PARKED_COUNT = "(SELECT count(*) FROM streams.parked_events p WHERE p.follower = n.name)"

_LAG = f"""
    WITH head AS (SELECT coalesce(max(notification_id), 0) AS head FROM pricing_events)
    SELECT n.name, coalesce(t.log_position, 0), head.head,
           (SELECT count(*) FROM pricing_events e WHERE e.notification_id > coalesce(t.log_position, 0)),
           coalesce(extract(epoch FROM clock_timestamp() - (
               SELECT i.recorded_at FROM event_index i WHERE i.notification_id > coalesce(t.log_position, 0)
               ORDER BY i.notification_id LIMIT 1))::float8, 0),
           t.updated_at, {_PARKED_COUNT}
    FROM unnest(%s::text[]) WITH ORDINALITY AS n(name, ord)
    CROSS JOIN head
    LEFT JOIN analytics.projection_tracking t ON t.projection = n.name
    ORDER BY n.ord"""

_POLICY_LAG = f"""
    WITH head AS (SELECT coalesce(max(notification_id), 0) AS head FROM pricing_events)
    SELECT n.name, n.log_position, head.head,
           (SELECT count(*) FROM pricing_events e WHERE e.notification_id > n.log_position),
           coalesce(extract(epoch FROM clock_timestamp() - (
               SELECT i.recorded_at FROM event_index i WHERE i.notification_id > n.log_position
               ORDER BY i.notification_id LIMIT 1))::float8, 0),
           n.updated_at, {_PARKED_COUNT}
    FROM (SELECT policy AS name, log_position, updated_at FROM streams.policy_positions) n CROSS JOIN head
    ORDER BY n.name"""

# Positions of both kinds of follower; the events of the shops after each (event_index is keyed
# by (shop_id, notification_id), so this reads the tenant's own rows only).
_TENANT_LAG = """
    WITH f AS (SELECT projection AS name, log_position, updated_at FROM analytics.projection_tracking
               WHERE projection = ANY(%(projections)s)
               UNION ALL SELECT policy, log_position, updated_at FROM streams.policy_positions)
    SELECT f.name,
           (SELECT count(*) FROM event_index i WHERE i.shop_id = ANY(%(shops)s) AND i.notification_id > f.log_position),
           coalesce(extract(epoch FROM clock_timestamp() - (
               SELECT min(i.recorded_at) FROM event_index i
               WHERE i.shop_id = ANY(%(shops)s) AND i.notification_id > f.log_position))::float8, 0),
           f.updated_at,
           (SELECT count(*) FROM streams.parked_events p WHERE p.follower = f.name AND p.shop_id = ANY(%(shops)s))
    FROM f"""

_PARKED = """
    SELECT follower, log_position, originator_id, originator_version, topic, shop_id, tenant_id, error, attempts,
           parked_at, last_tried_at,
           EXISTS (SELECT 1 FROM streams.policy_positions WHERE policy = follower)
    FROM streams.parked_events
    WHERE %(all)s OR shop_id = ANY(%(shops)s)
    ORDER BY log_position, follower
    LIMIT %(limit)s"""


def lag(conn: Connection, names: Sequence[str]) -> list[Lag]:
    """The projections' lag over the whole log (operators)."""
    with conn.cursor(row_factory=tuple_row) as cur:
        return [Lag(*row) for row in cur.execute(_LAG, [list(names)]).fetchall()]


def policy_lags(conn: Connection) -> list[Lag]:
    """The lag of each policy that follows the log (the repricing policy, its Kafka workers)."""
    with conn.cursor(row_factory=tuple_row) as cur:
        return [Lag(*row) for row in cur.execute(_POLICY_LAG).fetchall()]


def tenant_lag(conn: Connection, projections: Sequence[str], shops: Sequence) -> list[TenantLag]:
    """Each projection's and each policy's lag, counted over these shops' events only."""
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(_TENANT_LAG, {"projections": list(projections), "shops": list(shops)}).fetchall()
    order = {name: i for i, name in enumerate(projections)}
    return sorted((TenantLag(*row) for row in rows), key=lambda x: (order.get(x.follower, len(order)), x.follower))


def parked(conn: Connection, shops: Sequence | None = None, limit: int = 100) -> list[dict]:
    """Parked events, oldest first: every one (shops None: operators) or those of these shops."""
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(_PARKED, {"all": shops is None, "shops": list(shops or ()), "limit": limit}).fetchall()
    return [_parked_row(*row) for row in rows]


def _parked_row(follower, position, originator_id, version, topic, shop_id, tenant_id, error, attempts, parked_at,
                last_tried_at, by_policy) -> dict:
    return {"follower": follower, "log_position": position, "aggregate_id": str(originator_id),
            "aggregate_version": version, "type": topic, "shop_id": str(shop_id) if shop_id else None,
            "tenant_id": tenant_id, "error": error, "attempts": attempts, "parked_at": parked_at.isoformat(),
            "last_tried_at": last_tried_at.isoformat(), "held_back": held_back(follower, by_policy)}


def held_back(follower: str, by_policy: bool) -> str:
    """What a parked event keeps from happening, in words (a sink parks as '<sink>/<projection>')."""
    if by_policy:
        return "automated repricing did not act on this cause (its listing was not re-evaluated for it)"
    if follower.startswith("relay:"):
        return "not published to Kafka: missing from what the Kafka workers project and act on"
    return f"missing from the {follower.split('/')[-1].removeprefix('rebuild:')} view"


def operator_report(conn: Connection, names: Sequence[str], limit: int = 100) -> dict:
    """Whole-log figures for operators: every projection and policy, and every parked event."""
    return {"projections": [x.as_dict() for x in lag(conn, names)],
            "policies": [x.as_dict() for x in policy_lags(conn)],
            "parked": parked(conn, None, limit)}
