"""Trusting automated repricing: a dry run of a rule before it acts, and the explanation of any
listing's current price afterwards."""

from __future__ import annotations

from datetime import datetime
from typing import Sequence
from uuid import UUID

from psycopg.rows import tuple_row

from api.auth import requires
from api.deps import Context, Engine, Reads
from api.schemas import DryRunReport, Explanation
from commands import rule_models as m
from commands.dry_run import dry_run
from commands.explain import explain
from domain.rules import CompetitorPrice
from projections.observations import Wanted, latest, newest_per_competitor
from read.pool import ReadPool

from api.routing import resource_router

router = resource_router(tags=["pricing rules"])
READ = requires("shops:read")
# A dry run writes nothing, but it is part of authoring a rule: those who may set prices and rules
# preview them (and every POST stays a write for the role checks: auditors and analysts never POST).
PREVIEW = requires("prices:write")
SHOP = "/shops/{shop_id}"


def observations_from_view(pool: ReadPool):
    """The dry run's source of competitor prices: everything projected so far."""

    def fetch(wanted: Sequence[tuple[UUID, datetime | None]]) -> dict[UUID, list[CompetitorPrice]]:
        with pool.connection() as conn, conn.cursor(row_factory=tuple_row) as cur:
            found = latest(cur, [Wanted(listing_id, since) for listing_id, since in wanted])
        return {listing_id: newest_per_competitor(rows) for listing_id, rows in found.items()}

    return fetch


@router.post(SHOP + "/rules/dry-run", dependencies=[PREVIEW], response_model=DryRunReport,
             summary="What a rule (saved, at a version, or a draft) would do to listings now; writes nothing")
def rule_dry_run(shop_id: UUID, cmd: m.DryRun, ctx: Context, engine: Engine, reads: Reads) -> dict:
    """Evaluates a saved rule (or one of its versions, or a draft) against the listings' current
    prices and the competitor observations projected so far: per listing, the price it would
    propose, the guardrails' clamps and refusals.

    **Changes:** nothing; it is a preview (a POST because it takes a rule)."""
    return dry_run(engine, ctx, shop_id, cmd, observations_from_view(reads.pool))


@router.get(SHOP + "/listings/{listing_id}/explain", dependencies=[READ], response_model=Explanation,
            summary="Why the listing has its price: the events behind it, rule version, observations, clamps")
def explain_price(shop_id: UUID, listing_id: UUID, ctx: Context, engine: Engine) -> dict:
    return explain(engine, ctx, shop_id, listing_id)
