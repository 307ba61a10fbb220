"""What the rollback guard reads (plain SQL on the views, as streams/optimise.py reads model runs):
the shops it watches, each listing's automated changes since its last other price change, the
forecast run those changes were made against (the listing's newest forecast created before the
first of them was recorded), and the days observed since, as domain/rollback_guard.py's Evidence when they breach the shop's settings.

A period is a UTC day of business time. The days compared run from the day after the first
automated change (the change's own day is partly at the old price) to the day before `today`
(today is still filling up), within the forecast's horizon, skipping days it forecast closed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from uuid import UUID

import psycopg

from domain.rollback_guard import AUTOMATED_SOURCES, Evidence, GuardSettings, Period, breach

_WATCHED = "SELECT shop_id, metric, level, periods, enabled FROM rollback_guards WHERE enabled ORDER BY shop_id"

_TRAILING = """
    WITH last_other AS (
        SELECT listing_id, max(version) AS version FROM analytics.price_changes
        WHERE shop_id = %(shop)s AND NOT (source = ANY(%(automated)s)) GROUP BY listing_id)
    SELECT c.listing_id, c.version, c.recorded_at, c.occurred_at
    FROM analytics.price_changes c LEFT JOIN last_other o USING (listing_id)
    WHERE c.shop_id = %(shop)s AND c.source = ANY(%(automated)s) AND c.version > coalesce(o.version, 0)
    ORDER BY c.listing_id, c.version"""

_FORECAST_BEFORE = """
    SELECT run_id, answer FROM analytics.model_runs
    WHERE listing_id = %s AND kind = 'forecast' AND shop_id = %s AND NOT refused AND created_at <= %s
    ORDER BY created_at DESC LIMIT 1"""

_OBSERVED = """
    SELECT day, units, revenue FROM analytics.demand_daily
    WHERE listing_id = %s AND shop_id = %s AND day >= %s AND day <= %s"""


@dataclass(frozen=True, slots=True)
class Automated:
    """A listing's automated changes since its last other price change, in version order:
    (version, recorded at, occurred at) each."""

    listing_id: UUID
    changes: tuple[tuple[int, datetime, datetime], ...]


def watched(conn: psycopg.Connection) -> list[tuple[UUID, GuardSettings]]:
    return [(shop, GuardSettings(metric, level, periods, enabled))
            for shop, metric, level, periods, enabled in conn.execute(_WATCHED)]


def automated_changes(conn: psycopg.Connection, shop_id: UUID) -> list[Automated]:
    found: dict[UUID, list] = {}
    for listing_id, version, recorded_at, occurred_at in conn.execute(
            _TRAILING, {"shop": shop_id, "automated": list(AUTOMATED_SOURCES)}):
        found.setdefault(listing_id, []).append((version, recorded_at, occurred_at))
    return [Automated(listing_id, tuple(rows)) for listing_id, rows in found.items()]


def evidence(conn: psycopg.Connection, shop_id: UUID, settings: GuardSettings, automated: Automated,
             today: date) -> Evidence | None:
    """The breach of `settings` after the automated changes, or None (no forecast before any of them,
    or no breach yet). The changes are judged from the earliest one whose forecast is still kept
    (read/model_runs.py keeps forecasts 7 days): a long run of automated changes is judged from
    where the record allows, and only the changes from there on are rolled back."""
    for i, (version, recorded_at, occurred_at) in enumerate(automated.changes):
        row = conn.execute(_FORECAST_BEFORE, [automated.listing_id, shop_id, recorded_at]).fetchone()
        if row is not None:
            versions = tuple(v for v, _, _ in automated.changes[i:])
            return _breach(conn, shop_id, settings, automated.listing_id, versions, occurred_at.date(), row, today)
    return None


def _breach(conn: psycopg.Connection, shop_id: UUID, settings: GuardSettings, listing_id: UUID,
            versions: tuple[int, ...], changed_on: date, forecast: tuple, today: date) -> Evidence | None:
    run_id, answer = forecast
    periods = forecast_periods(answer, settings, changed_on + timedelta(days=1), today - timedelta(days=1))
    if len(periods) < settings.periods:
        return None
    observed = {day: (units, revenue) for day, units, revenue in
                conn.execute(_OBSERVED, [listing_id, shop_id, periods[0][0], periods[-1][0]])}
    column = 0 if settings.metric == "units" else 1
    compared = [Period(day, Decimal(observed.get(day, (0, 0))[column]), lower, mean) for day, lower, mean in periods]
    run = breach(compared, settings.periods)
    if run is None:
        return None
    return Evidence(shop_id, listing_id, versions, versions[0] - 1, str(run_id), settings, tuple(run))


def forecast_periods(answer: dict, settings: GuardSettings, first: date, last: date) -> list[tuple[date, Decimal, Decimal]]:
    """(day, lower end, mean) of the forecast's open days from `first` to `last`."""
    if not answer.get("first_day"):
        return []
    start, points = date.fromisoformat(answer["first_day"]), answer["points"]
    what = settings.metric
    lower, mean, closed = points[f"{what}_{settings.level}_lower"], points[what], points["closed"]
    out = []
    for i in range(max(0, (first - start).days), min(len(mean), (last - start).days + 1)):
        if not closed[i]:
            out.append((start + timedelta(days=i), _decimal(lower[i]), _decimal(mean[i])))
    return out


def _decimal(value) -> Decimal:
    return Decimal(str(value)).quantize(Decimal("0.01"))
