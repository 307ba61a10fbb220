"""Trusting automated repricing: a dry run of a rule before it acts, and the explanation of any
listing's current price afterwards."""

from __future__ import annotations

from datetime import datetime
from typing import Sequence
from uuid import UUID

from psycopg.rows import tuple_row

from api.auth import requires
from api.deps import Context, Reads
from api.schemas import DryRunReport, Explanation
from commands import rule_models as m
from commands.rules import rule_from
from domain.errors import DomainError
from domain.rules import CompetitorPrice
from projections.observations import Wanted, latest, newest_per_competitor
from read.dry_run import ListingPage, TriedRule, draft_rule, dry_run, saved_rule
from read.explain import explain
from read.pool import ReadPool
from read.side import ReadSide

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
def rule_dry_run(shop_id: UUID, cmd: m.DryRun, ctx: Context, reads: Reads) -> dict:
    """Evaluates a saved rule (or one of its versions, or a draft) against the listings' current
    prices and the competitor observations projected so far: per listing, the price it would
    propose, the guardrails' clamps and refusals.

    **Changes:** nothing; it is a preview (a POST because it takes a rule)."""
    tried = rule_to_try(reads, ctx, shop_id, cmd)
    return dry_run(reads.aggregates, ctx, shop_id, tried, ListingPage(cmd.listing_ids, cmd.after, cmd.limit),
                   observations_from_view(reads.pool))


def rule_to_try(reads: ReadSide, ctx: Context, shop_id: UUID, cmd: m.DryRun) -> TriedRule:
    """A draft (validated as a rule definition would be) or a saved rule at a version."""
    _, currency = reads.shops.facts(ctx, shop_id)
    if (cmd.rule_id is None) == (cmd.rule is None):
        raise DomainError("rule_id", "give exactly one of rule_id (a saved rule) or rule (a draft)")
    if cmd.rule is None:
        return saved_rule(reads.aggregates, ctx, shop_id, cmd.rule_id, cmd.rule_version)
    if cmd.rule_version is not None:
        raise DomainError("rule_version", "a draft rule has no versions")
    try:
        return draft_rule(rule_from(cmd.rule, currency), cmd.rule.name)
    except DomainError as e:
        raise type(e)(f"rule.{e.field}", e.detail) from None


@router.get(SHOP + "/listings/{listing_id}/explain", dependencies=[READ], response_model=Explanation,
            summary="Why the listing has its price: the events behind it, rule version, observations, clamps")
def explain_price(shop_id: UUID, listing_id: UUID, ctx: Context, reads: Reads) -> dict:
    return explain(reads.aggregates, ctx, shop_id, listing_id)
