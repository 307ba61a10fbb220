"""Dry run: what a rule (saved, at some version, or a draft) would do to a shop's listings now —
the proposal with the rule's reasons, then what each listing's guardrails, limits and the stops
make of it (Listing.judge, the same decision an automated change takes). Writes nothing.

Competitor prices come from the projected views; the caller passes a function that fetches them
(`ObservationSource`). An optimise-profit rule reads each listing's latest recommendation model
run instead (`RunSource`; by default the stored runs, read/model_runs.py), and each answer cites it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable, Sequence
from uuid import UUID

from domain.automation import stop_reason
from domain.errors import DomainError, NotFound
from domain.listing import INACTIVE, Listing
from domain.pricing_rule import describe_rule
from domain.rules import CompetitorPrice, RecommendationRun, Rule, evaluate
from domain.velocity import Velocity
from projections.velocity import velocities
from read import model_runs
from read.aggregates import AggregateReader
from read.pool import ReadPool
from read.shops import Viewer

# [(listing id, observed since)] -> listing id -> the newest observation of each competitor
ObservationSource = Callable[[Sequence[tuple[UUID, datetime | None]]], dict[UUID, list[CompetitorPrice]]]
# [listing id] -> listing id -> its latest recommendation model run (absent: none)
RunSource = Callable[[Sequence[UUID]], dict[UUID, RecommendationRun]]


@dataclass(frozen=True)
class TriedRule:
    """The rule a dry run tries, and how the report names it."""

    rule: Rule
    described: dict


@dataclass(frozen=True)
class ListingPage:
    """Which listings: these ids, or the shop's listings in id order, `limit` after `after`."""

    listing_ids: list[UUID] | None = None
    after: UUID | None = None
    limit: int = 200


def draft_rule(rule: Rule, name: str | None) -> TriedRule:
    return TriedRule(rule, {"rule_id": None, "rule_version": None, "name": name, "draft": True,
                            "summary": rule.describe()})


def saved_rule(aggregates: AggregateReader, viewer: Viewer, shop_id: UUID, rule_id: UUID,
               rule_version: int | None) -> TriedRule:
    try:
        saved = (aggregates.rule(viewer, shop_id, rule_id) if rule_version is None
                 else aggregates.rule_version(viewer, shop_id, rule_id, rule_version))
    except NotFound as e:
        if e.field == "rule_version":
            raise DomainError("rule_version", e.detail) from None
        raise DomainError("rule_id", "no such rule in this shop") from None
    return TriedRule(saved.rule, {**describe_rule(saved), "draft": False})


def dry_run(aggregates: AggregateReader, viewer: Viewer, shop_id: UUID, tried: TriedRule, page: ListingPage,
            observations: ObservationSource, now: datetime | None = None, runs: RunSource | None = None) -> dict:
    now = now or datetime.now(timezone.utc)
    shop = aggregates.shop(viewer, shop_id)
    listings, next_after = _listings(aggregates, viewer, shop_id, page)
    rule = tried.rule
    if rule.follows_model_runs:
        seen, latest = {}, (runs or stored_runs(aggregates.pool, shop_id))([x.id for x in listings])
    elif rule.reads_velocity:
        seen, latest = {}, _velocities(aggregates.pool, [x.id for x in listings])
    else:
        since = None if rule.max_age_minutes is None else now - timedelta(minutes=rule.max_age_minutes)
        seen, latest = observations([(x.id, since) for x in listings]), {}
    switch = aggregates.automation_switch(shop.tenant_id)
    stopped = stop_reason(shop.automation_stop, switch.stopped_by if switch else None)
    rule_id = tried.described.get("rule_id")
    answers = [_judged(x, rule, rule_id, seen.get(x.id, []), now, stopped, latest.get(x.id)) for x in listings]
    return {"rule": tried.described, "evaluated_at": now.isoformat(),
            "automation": {"running": stopped is None, "stopped": stopped},
            "summary": dict(Counter(a["outcome"] for a in answers)),
            "listings": answers, "next_after": next_after}


def _listings(aggregates: AggregateReader, viewer: Viewer, shop_id: UUID,
              page: ListingPage) -> tuple[list[Listing], str | None]:
    if page.listing_ids is not None:
        if page.after is not None:
            raise DomainError("after", "page with `after` through the shop's listings, not through listing_ids")
        found = []
        for i, listing_id in enumerate(page.listing_ids):
            try:
                found.append(aggregates.listing(viewer, shop_id, listing_id))
            except NotFound:
                raise DomainError(f"listing_ids[{i}]", "no such listing in this shop") from None
        return found, None
    ids = aggregates.listing_ids(shop_id, page.after, page.limit + 1)
    next_after = str(ids[page.limit - 1]) if len(ids) > page.limit else None
    found = aggregates.listings(viewer, shop_id, ids[:page.limit])
    return [found[x] for x in ids[:page.limit]], next_after


def stored_runs(pool: ReadPool, shop_id: UUID) -> RunSource:
    """The listings' recommendation runs of the shop's current refresh (analytics.model_runs)."""

    def fetch(listing_ids: Sequence[UUID]) -> dict[UUID, RecommendationRun]:
        with pool.connection() as conn:
            stored = model_runs.latest_of_listings(conn, shop_id, listing_ids, "recommendation")
        return {listing_id: RecommendationRun.from_stored(s.run_id, s.created_at, s.refused, s.answer)
                for listing_id, s in stored.items()}

    return fetch


def _velocities(pool: ReadPool, listing_ids: list[UUID]) -> dict[UUID, Velocity]:
    """Stock, sales since the count, last sale and forecast run of the listings (stock_runway, stale_listing)."""
    with pool.connection() as conn:
        return velocities(conn.cursor(), listing_ids)


def _judged(listing: Listing, rule: Rule, rule_id: str | None, observations: list[CompetitorPrice],
            now: datetime, stopped: str | None, run: RecommendationRun | Velocity | None) -> dict:
    velocity = run if isinstance(run, Velocity) else None
    run = None if velocity is not None else run
    proposal = evaluate(rule, listing.pricing_facts(), observations, now, run, velocity)
    verdict = listing.judge(proposal, now, stopped)
    outcome = INACTIVE if listing.status != "active" else verdict.outcome
    money = lambda v: None if v is None else str(v.amount)  # noqa: E731
    g = listing.guardrails
    return {
        "listing_id": str(listing.id), "sku": listing.sku, "title": listing.title, "status": listing.status,
        "currency": listing.currency, "price": money(listing.price),
        "assigned_rule_id": None if listing.rule_id is None else str(listing.rule_id),
        "uses_this_rule": rule_id is not None and listing.rule_id is not None and str(listing.rule_id) == rule_id,
        "proposed": money(proposal.price), "reasons": list(proposal.reasons), "observations": list(proposal.used),
        "model_run": None if proposal.model_run is None else proposal.model_run.describe(),
        **({} if proposal.inputs is None else {"inputs": proposal.inputs}),  # a velocity rule's stock, forecast, sales
        "outcome": outcome, "price_after": money(verdict.price) if outcome != INACTIVE else money(listing.price),
        "clamps": list(verdict.clamps), "refusal": verdict.refusal,
        "guardrails": {"floor": money(g.floor), "ceiling": money(g.ceiling), "cost": money(g.cost),
                       "automated_floor": money(g.automated_floor()),
                       "min_margin": None if g.min_margin is None else str(g.min_margin),
                       "max_step_percent": None if g.max_step_percent is None else str(g.max_step_percent),
                       "max_daily_changes": g.max_daily_changes, "cooldown_minutes": g.cooldown_minutes},
    }
