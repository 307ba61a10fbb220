"""Switchback price experiments: create, stop, conclude, abandon (the seller's commands), and
`tend` (the repricing policy's: start the period that is due, or pause on an outside change).

The experiment decides (domain/experiment.py); each period's prices are judged by the listings
like any automated change (guardrails, daily cap, cooldown, the stops) and saved in the same
transaction as the experiment's PeriodStarted event, so a period starts exactly once.
"""

from __future__ import annotations

import secrets
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Sequence
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from commands import experiment_models as m
from commands.context import CommandContext, Decision, Result
from commands.core import WriteCore
from domain.automation import stop_reason, tenant_switch_id
from domain.errors import Conflict, DomainError, InvalidValue, InvariantViolated, NotFound
from domain.experiment import (ACTIVE, COMPLETED, RUNNING, Arm, Experiment, check_arms, check_timing, check_within_guardrails,
                               describe_experiment, experiment_cause)
from domain.experiment_analysis import balanced_schedule, paired_power, plan_power
from domain.listing import Listing
from domain.meta import Actor, ActorKind, Source
from domain.rules import Proposal

POLICY_ACTOR = Actor("experiment-policy", ActorKind.POLICY)
MIN_PRE_DAYS = 14     # days of the pre-period the power calculation needs
TEND_RETRIES = 5

LIST_EXPERIMENT = "INSERT INTO experiments (experiment_id, shop_id, next_at) VALUES (%s, %s, %s)"
HOLD_LISTINGS = ("INSERT INTO experiment_listings (listing_id, experiment_id, shop_id)"
                 " SELECT unnest(%s::uuid[]), %s, %s")
SET_NEXT = "UPDATE experiments SET next_at = %s WHERE experiment_id = %s"
RELEASE_LISTINGS = "DELETE FROM experiment_listings WHERE experiment_id = %s"


class Experiments:
    def __init__(self, core: WriteCore):
        self.core = core

    # -- create ------------------------------------------------------------------------------
    def create(self, ctx: CommandContext, shop_id: UUID, cmd: m.CreateExperiment, pre_period: Sequence[float],
               now: datetime | None = None) -> Result:
        """pre_period: the metric per day of the listings together before the experiment (the read
        side's daily frame): the power calculation's variance and baseline."""
        self.core.shop_facts(ctx, shop_id)
        arms = [Arm(a.name, a.kind, a.value) for a in cmd.arms]
        seed = cmd.seed if cmd.seed is not None else secrets.randbelow(2**31)
        starts_at = _on_the_hour(cmd.starts_at or now or datetime.now(timezone.utc))

        def decide() -> Decision:
            check_arms(arms)
            _check_rates(cmd)
            entries = [self._entry(ctx, shop_id, cmd, arms, i) for i in range(len(cmd.listing_ids))]
            plan = self._plan(cmd, list(pre_period), len(arms))
            for i, listing_id in enumerate(cmd.listing_ids):
                listing = self.core.listing(ctx, shop_id, listing_id)
                check_timing(cmd.period_hours, cmd.burn_in_hours, plan.cycles, len(arms), listing.guardrails,
                             f"listing_ids[{i}]")
            schedule = balanced_schedule(len(arms), plan.cycles, seed)
            meta = ctx.meta(shop_id, Source.EXPERIMENT, cmd.reason)
            x = Experiment.create(shop_id, cmd.name, entries, arms, cmd.period_hours, cmd.burn_in_hours, cmd.metric,
                                  cmd.mode, cmd.cuped, seed, schedule, starts_at, plan, meta)
            listing_ids = [e["listing_id"] for e in entries]
            return Decision([x], describe_experiment(x), created=True,
                            statements=[(LIST_EXPERIMENT, [x.id, shop_id, starts_at]),
                                        (HOLD_LISTINGS, [listing_ids, x.id, shop_id])])

        # The fingerprint is the request as sent: a retry with its Idempotency-Key draws another seed.
        return self.core.execute(ctx, "create_experiment", {"shop": str(shop_id), **cmd.model_dump(mode="json")}, decide)

    def _entry(self, ctx: CommandContext, shop_id: UUID, cmd: m.CreateExperiment, arms: list[Arm], i: int) -> dict:
        field, listing_id = f"listing_ids[{i}]", cmd.listing_ids[i]
        if cmd.listing_ids.index(listing_id) != i:
            raise InvalidValue(field, f"also appears at listing_ids[{cmd.listing_ids.index(listing_id)}]")
        try:
            listing = self.core.listing(ctx, shop_id, listing_id)
        except NotFound:
            raise InvalidValue(field, "no such listing in this shop") from None
        running = self.experiment_of(listing_id)
        if running is not None:
            raise InvariantViolated(field, f"already in experiment {running}, which has not ended: one experiment "
                                    "per listing at a time")
        if listing.status != "active":
            raise InvariantViolated(field, f"the listing is {listing.status}, not for sale")
        if listing.rule_id is not None and not self.core.repository.get(listing.rule_id).retired:
            raise InvariantViolated(field, f"rule {listing.rule_id} is assigned: unassign it first (its changes "
                                    "would confound the arms)")
        if cmd.metric == "profit" and listing.guardrails.cost is None:
            raise InvariantViolated(field, "profit needs the listing's cost: set it, or test revenue or units")
        check_within_guardrails(arms, listing.price, listing.guardrails, field)
        return {"listing_id": str(listing_id), "base_price": listing.price, "cost": listing.guardrails.cost,
                "version": listing.version}

    @staticmethod
    def _plan(cmd: m.CreateExperiment, pre_period: list[float], arms: int):
        if len(pre_period) < MIN_PRE_DAYS:
            raise InvariantViolated("listing_ids", f"the power calculation needs {MIN_PRE_DAYS}+ days of the "
                                    f"listings' history; they have {len(pre_period)}")
        if sum(pre_period) <= 0:
            raise InvariantViolated("metric", f"the listings' {cmd.metric} was zero on every day of the "
                                    "pre-period: there is no baseline to detect a change of")
        plan = plan_power(pre_period, cmd.period_hours, min(cmd.burn_in_hours, cmd.period_hours - 1), arms,
                          float(cmd.mde), float(cmd.alpha), float(cmd.power))
        if cmd.horizon_cycles is None:
            return plan
        if cmd.horizon_cycles < 2:
            raise InvalidValue("horizon_cycles", "the horizon must be at least two cycles (each arm twice)")
        promised = paired_power(cmd.mde and float(cmd.mde) * plan.baseline, plan.sd_period * 2 ** 0.5,
                                cmd.horizon_cycles, plan.alpha)
        return replace(plan, cycles=cmd.horizon_cycles, promised_power=promised)

    def experiment_of(self, listing_id: UUID) -> UUID | None:
        """The experiment holding the listing (one that has not ended), if any."""
        with self.core.recorder.datastore.get_connection() as conn:
            row = conn.execute("SELECT experiment_id FROM experiment_listings WHERE listing_id = %s",
                               [listing_id]).fetchone()
        return row["experiment_id"] if row else None

    # -- stop, conclude, abandon ------------------------------------------------------------
    def stop(self, ctx: CommandContext, shop_id: UUID, experiment_id: UUID, cmd: m.EndExperiment) -> Result:
        return self._end(ctx, shop_id, experiment_id, cmd, "stop_experiment", lambda x, meta: x.stop(meta))

    def abandon(self, ctx: CommandContext, shop_id: UUID, experiment_id: UUID, cmd: m.EndExperiment) -> Result:
        return self._end(ctx, shop_id, experiment_id, cmd, "abandon_experiment", lambda x, meta: x.abandon(meta))

    def conclude(self, ctx: CommandContext, shop_id: UUID, experiment_id: UUID, cmd: m.Conclude,
                 conclusion: dict, verdict_allowed: bool) -> Result:
        """conclusion: the read side's analysis (effects, p-values, the experimental elasticities);
        refused while it allows no verdict (a fixed horizon not reached)."""
        return self._end(ctx, shop_id, experiment_id, cmd, "conclude_experiment",
                         lambda x, meta: x.conclude(conclusion, verdict_allowed, meta))

    def _end(self, ctx: CommandContext, shop_id: UUID, experiment_id: UUID, cmd, name: str, end) -> Result:
        def decide() -> Decision:
            x = self.experiment(ctx, shop_id, experiment_id)
            active = x.status in ACTIVE
            meta = ctx.meta(shop_id, Source.EXPERIMENT, cmd.reason)
            end(x, meta)
            restored = self._restore(x, meta) if active else []
            body = {**describe_experiment(x), "restored": [{"listing_id": str(l.id), "price": str(l.price.amount)}
                                                           for l in restored]}
            return Decision([x, *restored], body, statements=[(SET_NEXT, [None, x.id]), (RELEASE_LISTINGS, [x.id])])

        return self.core.execute(ctx, name, {"experiment": str(experiment_id), **cmd.model_dump(mode="json")}, decide)

    def _restore(self, x: Experiment, meta) -> list[Listing]:
        """Listings still at the arm price of the period in force go back to their base price."""
        if not 0 <= x.period < x.periods:
            return []
        restored = []
        for entry in x.listings:
            listing = self.core.repository.get(UUID(entry["listing_id"]))
            if listing.price != x.price_of(entry["listing_id"], x.period):
                continue  # someone else's price since: theirs stands
            try:
                if listing.change_price(entry["base_price"], replace(meta, reason=f"experiment {x.name!r} ended: "
                                                                     f"back to the base price. {meta.reason}".strip())):
                    restored.append(listing)
            except DomainError:
                continue  # the guardrails moved past the base price: the listing keeps the arm's
        return restored

    def experiment(self, ctx: CommandContext, shop_id: UUID, experiment_id: UUID) -> Experiment:
        return self.core.in_shop(ctx, shop_id, experiment_id, Experiment, "experiment")

    # -- the policy's step -------------------------------------------------------------------
    def tend(self, experiment_id: UUID, now: datetime | None = None) -> dict:
        """Pause the experiment if one of its listings' prices was changed by anyone else; else start
        the period due at `now` (the listings' prices judged as automated changes). Safe to call
        any number of times: a period starts once (the experiment's version decides a race)."""
        now = now or datetime.now(timezone.utc)
        for _ in range(TEND_RETRIES):
            try:
                x = self.core.repository.get(experiment_id)
            except AggregateNotFoundError:
                raise NotFound("experiment not found") from None
            try:
                return self._tend(x, now)
            except IntegrityError:
                continue  # the experiment, a listing or a stop moved on: decide again on fresh state
        raise Conflict("too much concurrent activity on this experiment; retry")

    def _tend(self, x: Experiment, now: datetime) -> dict:
        tenant = self.core.repository.get(x.shop_id).tenant_id
        ctx = CommandContext(actor=POLICY_ACTOR, tenant_id=tenant, causation_id=f"experiment:{x.id}")
        if x.status != RUNNING:
            self._set_next(x)
            return {"experiment_id": str(x.id), "outcome": x.status}
        outside = self._outside_change(x)
        if outside is not None:
            listing_id, version, why = outside
            x.pause(listing_id, version, why, ctx.meta(x.shop_id, Source.EXPERIMENT, why, occurred_at=now))
            self.core.save(x, statements=[(SET_NEXT, [None, x.id])])
            return {"experiment_id": str(x.id), "outcome": "paused", "listing_id": listing_id, "reason": why}
        period = x.period_at(now)
        if now < x.starts_at or period <= x.period:
            return {"experiment_id": str(x.id), "outcome": "waiting", "next_at": _iso(x.next_at())}
        return self._start(ctx, x, period, now)

    def _start(self, ctx: CommandContext, x: Experiment, period: int, now: datetime) -> dict:
        shop = self.core.repository.get(x.shop_id)
        switch = self._switch(shop.tenant_id)
        stopped = stop_reason(shop.automation_stop, switch.stopped_by if switch else None)
        if period < x.periods:
            arm = x.arm(x.schedule[period])
            why = f"experiment {x.name!r} period {period + 1} of {x.periods}: arm {arm.describe()}"
        else:
            why = f"experiment {x.name!r}: the horizon is past, back to the base price"
        meta = ctx.meta(x.shop_id, Source.EXPERIMENT, why, occurred_at=now)
        x.start_period(period, meta)
        listings, outcomes = [], {}
        for entry in x.listings:
            listing = self.core.repository.get(UUID(entry["listing_id"]))
            if listing.status != "active":
                outcomes[entry["listing_id"]] = "inactive"
                continue
            price = x.price_of(entry["listing_id"], period)
            verdict = listing.apply_experiment_price(Proposal(price, (why,)), x.id, period,
                                                     experiment_cause(x.id, period), meta, stopped)
            outcomes[entry["listing_id"]] = verdict.outcome if verdict.refusal is None else f"refused: {verdict.refusal}"
            listings.append(listing)
        unchanged = [(shop.id, shop.version), (tenant_switch_id(shop.tenant_id), switch.version if switch else 0)]
        release = [(RELEASE_LISTINGS, [x.id])] if x.status == COMPLETED else []  # its listings are free again
        self.core.save(x, *listings, statements=[(SET_NEXT, [x.next_at(), x.id]), *release], unchanged=unchanged)
        return {"experiment_id": str(x.id), "outcome": "period_started", "period": period, "listings": outcomes}

    def _outside_change(self, x: Experiment) -> tuple[str, int, str] | None:
        """(listing, version, in words) of the first price change of a listing since the experiment
        began that the experiment did not make."""
        for entry in x.listings:
            for e in self.core.events.get(UUID(entry["listing_id"]), gt=entry["version"]):
                if not isinstance(e, Listing.PriceChanged):
                    continue
                experiment = getattr(e.automation, "experiment", None) if e.automation is not None else None
                if experiment is None or not experiment.startswith(f"{x.id}/"):
                    return (entry["listing_id"], e.originator_version,
                            f"a {e.meta.source} price change to {e.price} by {e.meta.actor_id} at "
                            f"{e.meta.occurred_at.isoformat()} (listing version {e.originator_version}) paused it")
        return None

    def _switch(self, tenant_id: str):
        try:
            return self.core.repository.get(tenant_switch_id(tenant_id))
        except AggregateNotFoundError:
            return None

    def _set_next(self, x: Experiment) -> None:
        with self.core.recorder.datastore.get_connection() as conn, conn.transaction():
            conn.execute(SET_NEXT, [x.next_at(), x.id])

    def due(self, now: datetime) -> list[UUID]:
        """Experiments the policy has work for at `now` (a period due), plus every running one to check
        for outside price changes."""
        with self.core.recorder.datastore.get_connection() as conn:
            rows = conn.execute("SELECT experiment_id FROM experiments WHERE next_at IS NOT NULL"
                                " ORDER BY next_at").fetchall()
        return [r["experiment_id"] for r in rows]


def _check_rates(cmd: m.CreateExperiment) -> None:
    if not Decimal(0) < cmd.mde <= Decimal(5):
        raise InvalidValue("mde", "a relative effect above 0 and at most 5 (500 %)")
    if not Decimal(0) < cmd.alpha <= Decimal("0.2"):
        raise InvalidValue("alpha", "above 0 and at most 0.2")
    if not Decimal("0.5") <= cmd.power < Decimal(1):
        raise InvalidValue("power", "from 0.5 to below 1")


def _on_the_hour(at: datetime) -> datetime:
    """The next whole hour (or `at` itself): periods line up with the hourly sales the analysis reads."""
    floor = at.replace(minute=0, second=0, microsecond=0)
    return floor if floor == at else floor + timedelta(hours=1)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
