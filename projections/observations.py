"""Competitor prices as a pricing rule sees them, read from the `competitor_prices` projection
(analytics.competitor_observations): the newest observation of each competitor of each listing,
within a freshness window and up to a position in the global log.

The rule only ever uses the newest observation of each competitor (domain/rules.py), so fetching
just those (DISTINCT ON) keeps an evaluation cheap however many observations a listing gathers.
The repricing policy (streams/repricing.py) passes the position of the event that triggered the
evaluation, so what a cause sees does not depend on how far the projector got meanwhile; the
dry run passes no position (everything projected so far).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Iterable, Sequence
from uuid import UUID

from psycopg import Cursor

from domain.facts import observation_ref
from domain.money import Money
from domain.rules import CompetitorPrice

PROJECTION = "competitor_prices"  # the projection (and tracking name) that maintains the facts


@dataclass(frozen=True)
class Wanted:
    listing_id: UUID
    since: datetime | None = None  # ignore observations before this (the rule's freshness window)
    up_to: int | None = None       # only observations at or before this log position


_LATEST = """
    SELECT DISTINCT ON (o.listing_id, o.competitor)
           o.listing_id, o.log_position, o.competitor, o.price, o.currency, o.observed_at, o.batch_id,
           e.originator_version
    FROM unnest(%s::uuid[], %s::timestamptz[], %s::int8[]) AS w(listing_id, since, up_to)
    JOIN analytics.competitor_observations o
      ON o.listing_id = w.listing_id AND o.observed_at >= coalesce(w.since, '-infinity')
     AND o.log_position <= coalesce(w.up_to, 9223372036854775807)
    JOIN pricing_events e ON e.notification_id = o.log_position
    ORDER BY o.listing_id, o.competitor, o.observed_at DESC, o.log_position DESC"""


PositionedObservation = tuple[int, CompetitorPrice]  # (log position of the observation event, the observation)


def latest(cur: Cursor, wanted: Sequence[Wanted]) -> dict[UUID, list[PositionedObservation]]:
    """listing id -> the newest projected observation of each of its competitors (the newest by
    observation time, and of two seen at the same time the one recorded last). `cur` returns tuples."""
    found: dict[UUID, list[PositionedObservation]] = defaultdict(list)
    if not wanted:
        return found
    rows = cur.execute(_LATEST, [[w.listing_id for w in wanted], [w.since for w in wanted],
                                 [w.up_to for w in wanted]], prepare=True).fetchall()
    for listing_id, position, competitor, price, currency, observed_at, batch_id, version in rows:
        found[listing_id].append((position, CompetitorPrice(observation_ref(batch_id, version), competitor,
                                                            Money(price, currency), observed_at)))
    return found


def newest_per_competitor(observations: Iterable[PositionedObservation]) -> list[CompetitorPrice]:
    """The same choice as `latest`, over observations from several places (the view and events
    not projected yet): a rule is then given one, unambiguous, price per competitor."""
    newest: dict[str, PositionedObservation] = {}
    for position, o in observations:
        seen = newest.get(o.competitor)
        if seen is None or (o.observed_at, position) > (seen[1].observed_at, seen[0]):
            newest[o.competitor] = (position, o)
    return [o for _, o in newest.values()]


def projected_up_to(cur: Cursor) -> int:
    """The log position up to which the observation facts are complete (0: not yet projected)."""
    row = cur.execute("SELECT log_position FROM analytics.projection_tracking WHERE projection = %s",
                      [PROJECTION], prepare=True).fetchone()
    return row[0] if row else 0
