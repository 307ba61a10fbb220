"""Dry run: what a rule (saved, at some version, or a draft) would do to a shop's listings now —
the proposal with the rule's reasons, then what each listing's guardrails, limits and the stops
make of it (Listing.judge, the same decision an automated change takes). Writes nothing.

Competitor prices come from the read side; the caller passes a function that fetches them
(`ObservationSource`), so this module stays on the write side of the import rules.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Callable, Sequence
from uuid import UUID

from commands import rule_models as m
from commands.context import CommandContext
from domain.errors import NotFound
from commands.repricing import INACTIVE, rule_from
from domain.pricing_rule import describe_rule
from domain.automation import stop_reason
from domain.errors import DomainError
from domain.listing import Listing
from domain.rules import CompetitorPrice, Rule, evaluate

# [(listing id, observed since)] -> listing id -> the newest observation of each competitor
ObservationSource = Callable[[Sequence[tuple[UUID, datetime | None]]], dict[UUID, list[CompetitorPrice]]]


def dry_run(engine, ctx: CommandContext, shop_id: UUID, cmd: m.DryRun, observations: ObservationSource,
            now: datetime | None = None) -> dict:
    _, currency = engine.shop_facts(ctx, shop_id)
    now = now or datetime.now(timezone.utc)
    rule, described = _rule(engine, ctx, shop_id, cmd, currency)
    listings, next_after = _listings(engine, ctx, shop_id, cmd)
    since = None if rule.max_age_minutes is None else now - timedelta(minutes=rule.max_age_minutes)
    seen = observations([(x.id, since) for x in listings])
    shop = engine.repository.get(shop_id)
    switch = engine.automation_switch(shop.tenant_id)
    stopped = stop_reason(shop.automation_stop, switch.stopped_by if switch else None)
    answers = [_judged(x, rule, described.get("rule_id"), seen.get(x.id, []), now, stopped) for x in listings]
    return {"rule": described, "evaluated_at": now.isoformat(),
            "automation": {"running": stopped is None, "stopped": stopped},
            "summary": dict(Counter(a["outcome"] for a in answers)),
            "listings": answers, "next_after": next_after}


def _rule(engine, ctx: CommandContext, shop_id: UUID, cmd: m.DryRun, currency: str) -> tuple[Rule, dict]:
    if (cmd.rule_id is None) == (cmd.rule is None):
        raise DomainError("rule_id", "give exactly one of rule_id (a saved rule) or rule (a draft)")
    if cmd.rule is not None:
        if cmd.rule_version is not None:
            raise DomainError("rule_version", "a draft rule has no versions")
        try:
            rule = rule_from(cmd.rule, currency)
        except DomainError as e:
            raise type(e)(f"rule.{e.field}", e.detail) from None
        return rule, {"rule_id": None, "rule_version": None, "name": cmd.rule.name, "draft": True,
                      "summary": rule.describe()}
    try:
        saved = (engine.pricing_rule(ctx, shop_id, cmd.rule_id) if cmd.rule_version is None
                 else engine.pricing_rule_version(ctx, shop_id, cmd.rule_id, cmd.rule_version))
    except NotFound as e:
        if e.field == "rule_version":
            raise DomainError("rule_version", e.detail) from None
        raise DomainError("rule_id", "no such rule in this shop") from None
    return saved.rule, {**describe_rule(saved), "draft": False}


def _listings(engine, ctx: CommandContext, shop_id: UUID, cmd: m.DryRun) -> tuple[list[Listing], str | None]:
    if cmd.listing_ids is not None:
        if cmd.after is not None:
            raise DomainError("after", "page with `after` through the shop's listings, not through listing_ids")
        found = []
        for i, listing_id in enumerate(cmd.listing_ids):
            try:
                found.append(engine.listing(ctx, shop_id, listing_id))
            except NotFound:
                raise DomainError(f"listing_ids[{i}]", "no such listing in this shop") from None
        return found, None
    ids = sorted(UUID(str(x)) for x in engine.recorder.reserved_all(shop_id, "listing").values())
    if cmd.after is not None:
        ids = [x for x in ids if x > cmd.after]
    page = ids[:cmd.limit]
    next_after = str(page[-1]) if len(ids) > cmd.limit else None
    return [engine.listing(ctx, shop_id, x) for x in page], next_after


def _judged(listing: Listing, rule: Rule, rule_id: str | None, observations: list[CompetitorPrice],
            now: datetime, stopped: str | None) -> dict:
    proposal = evaluate(rule, listing.pricing_facts(), observations, now)
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
        "outcome": outcome, "price_after": money(verdict.price) if outcome != INACTIVE else money(listing.price),
        "clamps": list(verdict.clamps), "refusal": verdict.refusal,
        "guardrails": {"floor": money(g.floor), "ceiling": money(g.ceiling), "cost": money(g.cost),
                       "automated_floor": money(g.automated_floor()),
                       "min_margin": None if g.min_margin is None else str(g.min_margin),
                       "max_step_percent": None if g.max_step_percent is None else str(g.max_step_percent),
                       "max_daily_changes": g.max_daily_changes, "cooldown_minutes": g.cooldown_minutes},
    }
