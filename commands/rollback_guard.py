"""The rollback guard's commands: a shop's thresholds (configure), and a trip, which records the
evidence on the shop's RollbackGuard, stops automation for the listing (its rule unassigned,
commands/rules.py; its running experiment stopped, commands/experiments.py) and compensates the automated changes (commands/rollback.py).

A trip is three commands, each with an idempotency key derived from the evidence (Evidence.key):
a restart that finds the same evidence replays their recorded answers and appends nothing, so a
listing is never rolled back twice for one breach. The stop comes before the rollback, so the
policy cannot reprice the listing between them.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Callable, Literal
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from pydantic import ConfigDict, Field

from commands import experiment_models as em
from commands import models
from commands import rule_models as rm
from commands.clocked import ClockedContext
from commands.context import CommandContext, Decision, Result
from commands.core import WriteCore
from commands.experiments import Experiments
from commands.models import Command, Reason, integer
from commands.rollback import Rollbacks
from commands.rules import Rules
from domain.meta import Actor, ActorKind
from domain.rollback_guard import MAX_PERIODS, Evidence, GuardSettings, RollbackGuard, describe_guard, guard_id

GUARD_ACTOR = Actor("rollback-guard", ActorKind.POLICY)
UPSERT = ("INSERT INTO rollback_guards (shop_id, metric, level, periods, enabled) VALUES (%s, %s, %s, %s, %s)"
          " ON CONFLICT (shop_id) DO UPDATE SET metric = excluded.metric, level = excluded.level,"
          " periods = excluded.periods, enabled = excluded.enabled, updated_at = now()")


class ConfigureGuard(Command):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"metric": "revenue", "level": 80, "periods": 3, "enabled": True, "reason": "roll back what loses money"}]})

    metric: Literal["units", "revenue"] = Field("revenue", description="What is compared per day with the forecast")
    level: Literal[80, 95] = Field(80, description="The forecast interval whose lower end is the threshold")
    periods: integer(ge=1, le=MAX_PERIODS) = Field(3, description="Consecutive days below it that trip the guard")
    enabled: bool = True
    reason: Reason = ""


def guard_cause(evidence: Evidence) -> str:
    """The causation id of the trip's commands (explain finds the trip by it)."""
    return f"rollback_guard:{evidence.key}"


class RollbackGuards:
    def __init__(self, core: WriteCore, rules: Rules, rollbacks: Rollbacks, experiments: Experiments):
        self.core, self.rules, self.rollbacks, self.experiments = core, rules, rollbacks, experiments

    def configure(self, ctx: CommandContext, shop_id: UUID, cmd: ConfigureGuard) -> Result:
        self.core.shop_facts(ctx, shop_id)  # tenancy: another tenant's shop is not found
        settings = GuardSettings(cmd.metric, cmd.level, cmd.periods, cmd.enabled).check()

        def decide() -> Decision:
            meta = ctx.meta(shop_id, reason=cmd.reason)
            guard = self.guard(shop_id)
            if guard is None:
                guard, changed = RollbackGuard.configure_new(shop_id, settings, meta), True
            else:
                changed = guard.configure(settings, meta)
            row = (UPSERT, [shop_id, settings.metric, settings.level, settings.periods, settings.enabled])
            return Decision([guard], {**describe_guard(shop_id, guard), "changed": changed},
                            statements=[row] if changed else [])

        return self.core.execute(ctx, "configure_rollback_guard", {"shop": str(shop_id), **cmd.model_dump(mode="json")},
                                 decide)

    def describe(self, ctx: CommandContext, shop_id: UUID) -> dict:
        self.core.shop_facts(ctx, shop_id)
        return describe_guard(shop_id, self.guard(shop_id))

    def guard(self, shop_id: UUID) -> RollbackGuard | None:
        try:
            return self.core.repository.get(guard_id(shop_id))
        except AggregateNotFoundError:
            return None

    # -- a trip --------------------------------------------------------------------------------
    def trip(self, evidence: Evidence, clock: Callable[[], datetime] | None = None) -> dict:
        """Record the evidence, stop automation for the listing, compensate its automated changes.
        `clock`: the business time of what it records (default: now)."""
        cause = guard_cause(evidence)
        base = replace(self.rules.automation_context(evidence.shop_id, cause), actor=GUARD_ACTOR)
        if clock is not None:
            base = ClockedContext.of(base, clock)
        keyed = lambda step: replace(base, idempotency_key=f"rollback-guard/{evidence.key}/{step}")  # noqa: E731
        shop_id, listing_id, summary = evidence.shop_id, evidence.listing_id, evidence.summary()
        recorded = self._record(keyed("trip"), evidence, summary)
        listing = self.core.repository.get(listing_id)
        stopped = None
        if listing.rule_id is not None:
            stopped = self.rules.assign_rule(keyed("stop"), shop_id, rm.AssignRule(
                rule_id=None, listing_ids=[listing_id], reason=summary)).body
        rolled = self.rollbacks.rollback_listing(keyed("rollback"), shop_id, listing_id, models.RollbackListing(
            to_version=evidence.restore_version, reason=summary)).body
        experiment = self.experiments.experiment_of(listing_id)
        if experiment is not None:  # after the rollback, so the compensation is ours (the experiment pauses on it anyway)
            stopped = self.experiments.stop(keyed("stop-experiment"), shop_id, experiment, em.EndExperiment(reason=summary)).body
        return {"evidence": evidence.as_dict(), "trip": recorded, "stopped": stopped, "rollback": rolled}

    def _record(self, ctx: CommandContext, evidence: Evidence, summary: str) -> dict:
        def decide() -> Decision:
            guard = self.guard(evidence.shop_id)
            guard.trip(evidence, ctx.meta(evidence.shop_id, reason=summary))
            return Decision([guard], {"guard_version": guard.version, "trips": guard.trips})

        return self.core.execute(ctx, "rollback_guard_trip", evidence.as_dict(), decide).body
