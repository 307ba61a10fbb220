"""Pricing rules, their assignment to listings, the emergency stops, and the automated price
change the repricing policy (streams/) issues: `reprice_listing`.

Rules propose (domain/rules.py); the Listing decides within its
guardrails (Listing.reprice); this layer loads, checks tenancy and saves — and makes every
automated change idempotent per cause.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from typing import Sequence
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from commands import rule_models as m
from commands.context import CommandContext, Decision, Result
from commands.core import WriteCore, at_expected_version
from domain.errors import Conflict, NotFound
from commands.persistence import LIST_RULE, Reservation
from commands.serial import WriterBusy
from domain.automation import AutomationSwitch, shop_state, stop_reason, tenant_state, tenant_switch_id
from domain.errors import DomainError, InvalidValue
from domain.listing import CHANGED, INACTIVE, REFUSED, Listing, Verdict, describe_automation
from domain.meta import Actor, ActorKind, Source
from domain.pricing_rule import PricingRule, describe_rule
from domain.rules import CompetitorPrice, Proposal, RecommendationRun, Rule, evaluate
from domain.velocity import Velocity
from domain.shop import Shop

POLICY_ACTOR = Actor("repricing-policy", ActorKind.POLICY)
REPRICE_RETRIES = 5

# Outcomes of reprice_listing besides the Listing's own (changed, unchanged, held, refused).
DUPLICATE = "duplicate"  # this cause was already acted on: nothing more happens
NO_RULE = "no_rule"      # no rule assigned, or it is retired


def observation_cause(batch_id: UUID, version: int) -> str:
    """The cause naming one CompetitorPriceObserved event (its batch aggregate and version)."""
    return f"observation:{batch_id}/{version}"


def rule_cause(rule_id: UUID, rule_version: int) -> str:
    """The cause naming a rule version taking effect (Defined or Revised)."""
    return f"rule:{rule_id}/v{rule_version}"


def assignment_cause(listing_id: UUID, listing_version: int) -> str:
    """The cause naming a rule's assignment to a listing (its RuleAssigned event)."""
    return f"assignment:{listing_id}/v{listing_version}"


def model_run_cause(run_id: str) -> str:
    """The cause naming a recommendation model run written for the listing (derived data, not an event)."""
    return f"model_run:{run_id}"


@dataclass(frozen=True)
class RepriceResult:
    outcome: str                 # changed | unchanged | held | refused | duplicate | no_rule | inactive
    listing_id: str
    price: str | None = None     # the listing's price afterwards
    previous: str | None = None
    version: int | None = None   # the listing's version afterwards
    rule_id: str | None = None
    rule_version: int | None = None
    cause: str | None = None
    proposed: str | None = None
    clamps: list[str] = field(default_factory=list)
    refusal: str | None = None
    reasons: list[str] = field(default_factory=list)
    model_run: str | None = None  # the model run the proposal read (optimise_profit)

    def as_dict(self) -> dict:
        return asdict(self)


def _cause_key(listing_id: UUID, cause: str) -> str:
    return f"{listing_id}/{cause}"


def rule_from(spec: m.RuleSpec, shop_currency: str) -> Rule:
    if spec.currency is not None and spec.currency != shop_currency:
        raise InvalidValue("currency", f"{spec.currency} does not match the shop's {shop_currency}")
    return Rule.define(kind=spec.kind, currency=shop_currency, amount=spec.amount, percent=spec.percent,
                       direction=spec.direction, rounding=spec.rounding, include=spec.include,
                       exclude=spec.exclude, max_age_minutes=spec.max_age_minutes,
                       no_competition=spec.no_competition, below_floor=spec.below_floor,
                       max_run_age_hours=spec.max_run_age_hours, days=spec.days)


class Rules:
    """Pricing rules, their assignment to listings, automation limits and stops, and the
    automated price change."""

    def __init__(self, core: WriteCore):
        self.core = core

    # -- rules ------------------------------------------------------------------------------
    def define_rule(self, ctx: CommandContext, shop_id: UUID, cmd: m.DefineRule) -> Result:
        _, currency = self.core.shop_facts(ctx, shop_id)

        def decide() -> Decision:
            rule = PricingRule.define(shop_id, cmd.name, rule_from(cmd, currency), ctx.meta(shop_id, reason=cmd.reason))
            return Decision([rule], describe_rule(rule), created=True,
                            reservations=[Reservation(shop_id, "rule", str(rule.id), rule.id)],
                            statements=[(LIST_RULE, [shop_id, rule.id])])

        return self.core.execute(ctx, "define_rule", {"shop": str(shop_id), **cmd.model_dump(mode="json")}, decide)

    def revise_rule(self, ctx: CommandContext, shop_id: UUID, rule_id: UUID, cmd: m.ReviseRule) -> Result:
        _, currency = self.core.shop_facts(ctx, shop_id)

        def decide() -> Decision:
            rule = self._rule_at(ctx, shop_id, rule_id, cmd.expected_version)
            changed = rule.revise(rule_from(cmd, currency), ctx.meta(shop_id, reason=cmd.reason), name=cmd.name)
            return Decision([rule], {**describe_rule(rule), "changed": changed}, strict=cmd.expected_version is not None)

        return self.core.execute(ctx, "revise_rule", {"rule": str(rule_id), **cmd.model_dump(mode="json")}, decide)

    def retire_rule(self, ctx: CommandContext, shop_id: UUID, rule_id: UUID, cmd: m.RetireRule) -> Result:
        def decide() -> Decision:
            rule = self._rule_at(ctx, shop_id, rule_id, cmd.expected_version)
            changed = rule.retire(ctx.meta(shop_id, reason=cmd.reason))
            return Decision([rule], {**describe_rule(rule), "changed": changed}, strict=cmd.expected_version is not None)

        return self.core.execute(ctx, "retire_rule", {"rule": str(rule_id), **cmd.model_dump(mode="json")}, decide)

    def pricing_rule(self, ctx: CommandContext, shop_id: UUID, rule_id: UUID, version: int | None = None) -> PricingRule:
        rule = self.core.in_shop(ctx, shop_id, rule_id, PricingRule, "rule", version)
        if version is not None and rule.version != version:
            raise NotFound(f"the rule has no version {version} (latest is {rule.version})", field="version")
        return rule

    def rule(self, rule_id: UUID) -> PricingRule | None:
        """A rule by id, for the policy acting for the rule's own shop (no caller to check)."""
        try:
            return self.core.repository.get(rule_id)
        except AggregateNotFoundError:
            return None

    def _rule_at(self, ctx: CommandContext, shop_id: UUID, rule_id: UUID, expected_version: int | None) -> PricingRule:
        return at_expected_version(self.pricing_rule(ctx, shop_id, rule_id), expected_version, "rule")

    # -- assignment -------------------------------------------------------------------------
    def assign_rule(self, ctx: CommandContext, shop_id: UUID, cmd: m.AssignRule) -> Result:
        """Point listings at a rule, or at none (`rule_id` None). All or nothing."""
        self.core.shop_facts(ctx, shop_id)

        def decide() -> Decision:
            meta = ctx.meta(shop_id, reason=cmd.reason)
            if cmd.rule_id is not None:
                try:
                    self.pricing_rule(ctx, shop_id, cmd.rule_id).refuse_if_retired()
                except NotFound:
                    raise DomainError("rule_id", "no such rule in this shop") from None
            listings, answers, seen = [], [], {}
            for i, listing_id in enumerate(cmd.listing_ids):
                if listing_id in seen:
                    raise DomainError(f"listing_ids[{i}]", f"also appears at listing_ids[{seen[listing_id]}]")
                seen[listing_id] = i
                try:
                    listing = self.core.listing(ctx, shop_id, listing_id)
                except NotFound:
                    raise DomainError(f"listing_ids[{i}]", "no such listing in this shop") from None
                changed = (listing.assign_rule(cmd.rule_id, meta) if cmd.rule_id is not None
                           else listing.unassign_rule(meta))
                listings.append(listing)
                answers.append({"listing_id": str(listing_id), "version": listing.version, "changed": changed})
            rule = None if cmd.rule_id is None else str(cmd.rule_id)
            return Decision(listings, {"rule_id": rule, "listings": answers})

        return self.core.execute(ctx, "assign_rule", {"shop": str(shop_id), **cmd.model_dump(mode="json")}, decide)

    # -- automation limits ------------------------------------------------------------------
    def set_automation_limits(self, ctx: CommandContext, shop_id: UUID, listing_id: UUID,
                              cmd: m.SetAutomationLimits) -> Result:
        def decide() -> Decision:
            listing = self.core.listing_at(ctx, shop_id, listing_id, cmd.expected_version)
            guardrails = replace(listing.guardrails, min_margin=cmd.min_margin, max_step_percent=cmd.max_step_percent,
                                 max_daily_changes=cmd.max_daily_changes, cooldown_minutes=cmd.cooldown_minutes)
            changed = listing.set_guardrails(guardrails, ctx.meta(shop_id, reason=cmd.reason))
            return Decision([listing], {**describe_automation(listing), "changed": changed},
                            strict=cmd.expected_version is not None)

        return self.core.execute(ctx, "set_automation_limits", {"listing": str(listing_id), **cmd.model_dump(mode="json")},
                            decide, serial=[listing_id])

    # -- emergency stop ---------------------------------------------------------------------
    def stop_shop_automation(self, ctx: CommandContext, shop_id: UUID, cmd: m.StopAutomation) -> Result:
        return self._switch_shop(ctx, shop_id, cmd, "stop_shop_automation", Shop.stop_automation)

    def resume_shop_automation(self, ctx: CommandContext, shop_id: UUID, cmd: m.StopAutomation) -> Result:
        return self._switch_shop(ctx, shop_id, cmd, "resume_shop_automation", Shop.resume_automation)

    def _switch_shop(self, ctx, shop_id: UUID, cmd: m.StopAutomation, name: str, flip) -> Result:
        self.core.shop_facts(ctx, shop_id)

        def decide() -> Decision:
            shop = self.core.repository.get(shop_id)
            changed = flip(shop, ctx.meta(shop_id, reason=cmd.reason))
            return Decision([shop], {**self._automation_state(shop), "changed": changed})

        return self.core.execute(ctx, name, {"shop": str(shop_id), **cmd.model_dump(mode="json")}, decide)

    def stop_all_automation(self, ctx: CommandContext, cmd: m.StopAutomation) -> Result:
        """The tenant-wide stop: every shop of the caller's tenant, and no other tenant's.
        Authorization (the tenant's admins) is the API's job."""
        return self._switch_all(ctx, cmd, "stop_all_automation", AutomationSwitch.stop)

    def resume_all_automation(self, ctx: CommandContext, cmd: m.StopAutomation) -> Result:
        return self._switch_all(ctx, cmd, "resume_all_automation", AutomationSwitch.resume)

    def _switch_all(self, ctx, cmd: m.StopAutomation, name: str, flip) -> Result:
        def decide() -> Decision:
            meta = ctx.meta(None, reason=cmd.reason)
            switch = self.automation_switch(ctx.tenant_id) or AutomationSwitch(tenant_id=ctx.tenant_id, meta=meta)
            changed = flip(switch, meta)
            return Decision([switch], {**tenant_state(ctx.tenant_id, switch), "changed": changed})

        return self.core.execute(ctx, name, cmd.model_dump(mode="json"), decide)

    def automation_switch(self, tenant_id: str) -> AutomationSwitch | None:
        try:
            return self.core.repository.get(tenant_switch_id(tenant_id))
        except AggregateNotFoundError:
            return None

    def _automation_state(self, shop: Shop) -> dict:
        return shop_state(shop, self.automation_switch(shop.tenant_id))

    # -- the automated change ---------------------------------------------------------------
    def automation_context(self, shop_id: UUID, cause: str, correlation_id: str | None = None) -> CommandContext:
        """The policy's identity for acting on a shop's listings: the shop's own tenant."""
        try:
            shop = self.core.repository.get(shop_id)
        except AggregateNotFoundError:
            raise NotFound("shop not found") from None
        return CommandContext(actor=POLICY_ACTOR, tenant_id=shop.tenant_id, causation_id=cause,
                              correlation_id=correlation_id)

    def reprice_listing(self, ctx: CommandContext, shop_id: UUID, listing_id: UUID,
                        observations: Sequence[CompetitorPrice], cause: str,
                        now: datetime | None = None, run: RecommendationRun | None = None,
                        velocity: Velocity | None = None) -> RepriceResult:
        """Evaluate the listing's rule on `observations` (and `run`, its latest recommendation model
        run, which optimise_profit follows; `velocity`, its stock, forecast and last sale, which
        stock_runway and stale_listing read) and let the listing decide.

        Idempotent per cause: (listing, cause) is reserved in the same transaction as the change
        or refusal it produced, so a redelivered cause finds it and does nothing, even if the
        listing's rule (or its version) changed meanwhile. The
        shop's stop, the tenant-wide stop and the rule are checked to be unchanged at commit (under
        the event table lock): a stop that commits first always wins.
        """
        self.core.shop_facts(ctx, shop_id)
        try:
            with self.core.writers.hold([listing_id]):  # this process's other writers of the listing wait
                return self._reprice(ctx, shop_id, listing_id, observations, cause, now, run, velocity)
        except WriterBusy:
            raise Conflict("too much concurrent activity on this listing; retry") from None

    def _reprice(self, ctx: CommandContext, shop_id: UUID, listing_id: UUID, observations: Sequence[CompetitorPrice],
                 cause: str, now: datetime | None, run: RecommendationRun | None,
                 velocity: Velocity | None = None) -> RepriceResult:
        for _ in range(REPRICE_RETRIES):
            listing = self.core.listing(ctx, shop_id, listing_id)
            rule = self._assigned_rule(listing)
            if rule is None:
                return RepriceResult(NO_RULE, str(listing_id), str(listing.price.amount), version=listing.version,
                                     cause=cause)
            if listing.status != "active":
                return RepriceResult(INACTIVE, str(listing_id), str(listing.price.amount), version=listing.version,
                                     rule_id=str(rule.id), rule_version=rule.rule_version, cause=cause)
            # One evaluation per (listing, cause), whatever rule the listing has by the time a cause
            # comes again. Older keys also named the rule version: still honoured.
            key, legacy_key = _cause_key(listing_id, cause), f"{listing_id}/{cause}/{rule.id}@v{rule.rule_version}"
            if self.core.recorder.reserved(shop_id, "reprice_cause", [key, legacy_key]):
                return self._duplicate(listing, rule, cause)
            shop = self.core.repository.get(shop_id)
            switch = self.automation_switch(shop.tenant_id)
            stopped = stop_reason(shop.automation_stop, switch.stopped_by if switch else None)
            meta = ctx.meta(shop_id, Source.RULE, f"rule {rule.name!r} v{rule.rule_version}: {rule.rule.describe()}",
                            occurred_at=now or datetime.now(timezone.utc))
            proposal = evaluate(rule.rule, listing.pricing_facts(), observations, meta.occurred_at, run, velocity)
            previous = listing.price
            verdict = listing.reprice(proposal, rule.id, rule.rule_version, cause, meta, stopped)
            result = self._reprice_result(listing, rule, cause, previous, verdict, proposal)
            if verdict.outcome not in (CHANGED, REFUSED):
                return result  # nothing to record: a redelivery will find the same
            unchanged = [(shop.id, shop.version), (tenant_switch_id(shop.tenant_id), switch.version if switch else 0),
                         (rule.id, rule.version)]
            try:
                self.core.save(listing, reservations=[Reservation(shop_id, "reprice_cause", key, listing.id)],
                          unchanged=unchanged)
            except IntegrityError as e:
                if getattr(getattr(e.__cause__, "diag", None), "constraint_name", None) == "reservations_pkey":
                    return self._duplicate(listing, rule, cause)  # a concurrent delivery of this cause won
                continue  # the listing, a stop or the rule moved on: decide again on fresh state
            return result
        raise Conflict("too much concurrent activity on this listing; retry")

    def acted_on(self, shop_id: UUID, causes: Sequence[tuple[UUID, str]]) -> set[tuple[UUID, str]]:
        """Which (listing, cause) pairs of the shop already made a change or a refusal (one query)."""
        keys = {_cause_key(listing_id, cause): (listing_id, cause) for listing_id, cause in causes}
        return {keys[key] for key in self.core.recorder.reserved(shop_id, "reprice_cause", list(keys))} if keys else set()

    def _assigned_rule(self, listing: Listing) -> PricingRule | None:
        if listing.rule_id is None:
            return None
        rule = self.core.repository.get(listing.rule_id)
        return None if rule.retired else rule

    @staticmethod
    def _duplicate(listing: Listing, rule: PricingRule, cause: str) -> RepriceResult:
        return RepriceResult(DUPLICATE, str(listing.id), str(listing.price.amount), version=listing.version,
                             rule_id=str(rule.id), rule_version=rule.rule_version, cause=cause)

    @staticmethod
    def _reprice_result(listing: Listing, rule: PricingRule, cause: str, previous, verdict: Verdict,
                        proposal: Proposal) -> RepriceResult:
        return RepriceResult(
            verdict.outcome, str(listing.id), str(listing.price.amount), str(previous.amount), listing.version,
            str(rule.id), rule.rule_version, cause,
            None if verdict.proposed is None else str(verdict.proposed.amount),
            list(verdict.clamps), verdict.refusal, list(proposal.reasons),
            None if proposal.model_run is None else proposal.model_run.run_id)
