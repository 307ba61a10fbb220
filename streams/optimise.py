"""The recommendation model runs the repricing policy reads for listings under an optimise-profit
rule: each listing's run in its shop's current refresh (analytics.model_runs, written by
read/model_runs.py), as the rule reads it (domain/rules.py RecommendationRun)."""

from __future__ import annotations

from typing import Callable, Sequence
from uuid import UUID

from domain.rules import RecommendationRun

# (cursor, listing ids) -> listing id -> its latest recommendation run (absent: none yet)
RunSource = Callable[[object, Sequence[UUID]], dict[UUID, RecommendationRun]]

_LATEST_RECOMMENDATIONS = """
    SELECT r.listing_id, r.run_id, r.created_at, r.refused, r.answer
    FROM unnest(%s::uuid[]) AS wanted(listing_id)
    JOIN analytics.model_runs r ON r.listing_id = wanted.listing_id AND r.kind = 'recommendation'
    JOIN analytics.model_refreshes f ON f.refresh_id = r.refresh_id AND f.shop_id = r.shop_id"""


def latest_runs(cur, listing_ids: Sequence[UUID]) -> dict[UUID, RecommendationRun]:
    """Each listing's recommendation run of its shop's current refresh (one query for them all)."""
    if not listing_ids:
        return {}
    rows = cur.execute(_LATEST_RECOMMENDATIONS, [list(listing_ids)]).fetchall()
    return {listing_id: RecommendationRun.from_stored(run_id, created_at, refused, answer)
            for listing_id, run_id, created_at, refused, answer in rows}
