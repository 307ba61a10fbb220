"""A switchback price experiment as an aggregate: every step is an event.

A listing shows one public price to everyone, so arms alternate over time: the schedule (random
balanced cycles, domain/experiment_analysis.py) says which arm holds each period. Created with
its design and the power calculation's plan; each period's start is recorded (the listings' price
changes of that period are saved with it, source `experiment`); a manual price change pauses it;
stopped, concluded or abandoned ends it. Arms are stored as plain values (str, Decimal) so that
the codec needs no new transcoding.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.errors import InvalidValue, InvariantViolated
from domain.experiment_analysis import MODES, PowerPlan
from domain.listing import Guardrails
from domain.meta import EventMeta
from domain.money import Money, minor_unit

METRICS = ("profit", "revenue", "units")
ARM_KINDS = ("absolute", "relative")
RUNNING, PAUSED, COMPLETED = "running", "paused", "completed"  # completed: the horizon is past, base prices back
STOPPED, CONCLUDED, ABANDONED = "stopped", "concluded", "abandoned"
ACTIVE = (RUNNING, PAUSED)
MAX_ARMS = 6
MAX_LISTINGS = 50


@dataclass(frozen=True, slots=True)
class Arm:
    name: str
    kind: str        # absolute: `value` is the price; relative: `value` is a percent change of the base price
    value: Decimal

    def price(self, base: Money, field: str = "value") -> Money:
        if self.kind == "absolute":
            return Money.price(self.value, base.currency, field)  # a price in the listing's minor units
        amount = base.amount * (1 + self.value / 100)
        return Money(amount.quantize(minor_unit(base.currency), ROUND_HALF_EVEN), base.currency)

    def describe(self) -> str:
        return f"{self.name!r} ({self.value} {'absolute' if self.kind == 'absolute' else '% of the base price'})"

    def as_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "value": self.value}


def experiment_cause(experiment_id: UUID, period: int) -> str:
    """The cause a period's price change names (its causation id)."""
    return f"experiment:{experiment_id}/{period}"


def check_arms(arms: list[Arm]) -> None:
    if not 2 <= len(arms) <= MAX_ARMS:
        raise InvalidValue("arms", f"give 2 to {MAX_ARMS} arms (the first is the control)")
    names = [a.name for a in arms]
    for i, arm in enumerate(arms):
        if arm.kind not in ARM_KINDS:
            raise InvalidValue(f"arms[{i}].kind", "must be 'absolute' or 'relative'")
        if arm.kind == "absolute" and arm.value <= 0:
            raise InvalidValue(f"arms[{i}].value", "an absolute arm is a price: above zero")
        if arm.kind == "relative" and not Decimal(-90) <= arm.value <= Decimal(200):
            raise InvalidValue(f"arms[{i}].value", "a relative arm is a percent change from -90 to 200")
        if names.index(arm.name) != i:
            raise InvalidValue(f"arms[{i}].name", f"{arm.name!r} is also arms[{names.index(arm.name)}]")


def check_within_guardrails(arms: list[Arm], base: Money, guardrails: Guardrails, listing_field: str) -> None:
    """Every arm's price inside the listing's automated bounds, and every switch between two arms
    within its maximum step: the guardrails would otherwise clamp an arm into another price."""
    prices = [a.price(base, f"arms[{i}].value") for i, a in enumerate(arms)]
    floor, ceiling = guardrails.automated_floor(), guardrails.ceiling
    for i, price in enumerate(prices):
        if price.amount <= 0:
            raise InvariantViolated(f"arms[{i}].value", f"{price} for {listing_field} is not a price")
        if floor is not None and price.amount < floor.amount:
            raise InvariantViolated(f"arms[{i}].value", f"{price} for {listing_field} is below its floor {floor}")
        if ceiling is not None and price.amount > ceiling.amount:
            raise InvariantViolated(f"arms[{i}].value", f"{price} for {listing_field} is above its ceiling {ceiling}")
    step = guardrails.max_step_percent
    if step is not None:
        for i, a in enumerate(prices):
            for b in prices:
                if abs(b.amount - a.amount) > a.amount * step / 100:
                    raise InvariantViolated(f"arms[{i}].value", f"switching {listing_field} between {a} and {b} "
                                            f"exceeds its maximum step of {step}%")


def check_timing(period_hours: int, burn_in_hours: int, cycles: int, arms: int, guardrails: Guardrails,
                 listing_field: str) -> None:
    if not 0 <= burn_in_hours < period_hours:
        raise InvalidValue("burn_in_hours", f"must be from 0 to less than the period ({period_hours} h)")
    if cycles < 2:
        raise InvalidValue("horizon_cycles", "the horizon must be at least two cycles (each arm twice)")
    cooldown = guardrails.cooldown_minutes or 0
    if period_hours * 60 < cooldown:
        raise InvariantViolated("period_hours", f"a period of {period_hours} h is shorter than {listing_field}'s "
                                f"repricing cooldown of {cooldown} min")
    cap = guardrails.max_daily_changes
    if cap is not None and 24 / period_hours > cap:
        raise InvariantViolated("period_hours", f"{24 / period_hours:g} switches a day exceed {listing_field}'s "
                                f"daily cap of {cap} automated changes")


class Experiment(Aggregate):
    @event("Created")
    def __init__(self, shop_id: UUID, name: str, listings: list[dict], arms: list[dict], period_hours: int,
                 burn_in_hours: int, metric: str, mode: str, cuped: bool, seed: int, schedule: list[int],
                 starts_at: datetime, plan: dict, meta: EventMeta):
        self.shop_id = shop_id
        self.name = name
        self.listings = listings          # [{"listing_id": str, "base_price": Money, "cost": Money | None}]
        self.arms = arms                  # [{"name", "kind", "value"}]
        self.period_hours = period_hours
        self.burn_in_hours = burn_in_hours
        self.metric = metric
        self.mode = mode
        self.cuped = cuped
        self.seed = seed
        self.schedule = list(schedule)
        self.starts_at = starts_at
        self.plan = plan
        self.status = RUNNING
        self.period = -1                  # the last period started (len(schedule): finished, base prices back)
        self.paused = None                # {"listing_id", "version", "at", "reason"} of the change that paused it
        self.ended_at = None
        self.conclusion = None

    @classmethod
    def create(cls, shop_id: UUID, name: str, listings: list[dict], arms: list[Arm], period_hours: int,
               burn_in_hours: int, metric: str, mode: str, cuped: bool, seed: int, schedule: list[int],
               starts_at: datetime, plan: PowerPlan, meta: EventMeta) -> Experiment:
        name = name.strip()
        if not name or len(name) > 200:
            raise InvalidValue("name", "must be 1-200 characters, not blank")
        if metric not in METRICS:
            raise InvalidValue("metric", f"must be one of {', '.join(METRICS)}")
        if mode not in MODES:
            raise InvalidValue("mode", f"must be one of {', '.join(MODES)}")
        check_arms(arms)
        return cls(shop_id=shop_id, name=name, listings=listings, arms=[a.as_dict() for a in arms],
                   period_hours=period_hours, burn_in_hours=burn_in_hours, metric=metric, mode=mode, cuped=cuped,
                   seed=seed, schedule=list(schedule), starts_at=starts_at, plan=plan.as_dict(), meta=meta)

    # -- reading the design ------------------------------------------------------------------
    def arm(self, index: int) -> Arm:
        a = self.arms[index]
        return Arm(a["name"], a["kind"], Decimal(a["value"]))

    @property
    def periods(self) -> int:
        return len(self.schedule)

    def period_start(self, period: int) -> datetime:
        return self.starts_at + timedelta(hours=self.period_hours * period)

    def period_at(self, now: datetime) -> int:
        """The period in force at `now` (len(schedule) once the horizon is past)."""
        hours = (now - self.starts_at).total_seconds() / 3600
        return min(max(int(hours // self.period_hours), 0), self.periods)

    def price_of(self, listing_id: str, period: int) -> Money:
        """The listing's price in `period`: its arm's, or the base price after the horizon."""
        base = next(entry["base_price"] for entry in self.listings if entry["listing_id"] == listing_id)
        return base if period >= self.periods else self.arm(self.schedule[period]).price(base)

    def next_at(self) -> datetime | None:
        """When the policy next has work: the next period's start, None when it no longer runs."""
        if self.status != RUNNING or self.period >= self.periods:
            return None
        return self.period_start(self.period + 1)

    def refuse_unless_active(self, field: str = "experiment_id") -> None:
        if self.status not in ACTIVE:
            raise InvariantViolated(field, f"the experiment is {self.status}")

    # -- steps -------------------------------------------------------------------------------
    def start_period(self, period: int, meta: EventMeta) -> bool:
        """Record that `period` began (its prices are saved with this event). False if it already did."""
        if self.status != RUNNING or period <= self.period:
            return False
        self._period_started(period=period, arm=self.schedule[period] if period < self.periods else None, meta=meta)
        return True

    @event("PeriodStarted")
    def _period_started(self, period: int, arm: int | None, meta: EventMeta) -> None:
        self.period = period
        if period >= len(self.schedule):
            self.status = COMPLETED
            self.ended_at = meta.occurred_at

    def pause(self, listing_id: str, version: int, reason: str, meta: EventMeta) -> bool:
        """A price change the experiment did not make, on one of its listings: the periods from here on
        no longer test the arms, so it stops switching (reported in the answer and the event)."""
        if self.status != RUNNING:
            return False
        self._paused(listing_id=listing_id, version=version, reason=reason, meta=meta)
        return True

    @event("Paused")
    def _paused(self, listing_id: str, version: int, reason: str, meta: EventMeta) -> None:
        self.status = PAUSED
        self.paused = {"listing_id": listing_id, "version": version, "at": meta.occurred_at.isoformat(),
                       "reason": reason}

    def stop(self, meta: EventMeta) -> None:
        self.refuse_unless_active()
        self._stopped(period=self.period, meta=meta)

    @event("Stopped")
    def _stopped(self, period: int, meta: EventMeta) -> None:
        self.status = STOPPED
        self.ended_at = meta.occurred_at

    def conclude(self, conclusion: dict, verdict_allowed: bool, meta: EventMeta) -> None:
        if self.status == CONCLUDED or self.status == ABANDONED:
            raise InvariantViolated("experiment_id", f"the experiment is {self.status}")
        if not verdict_allowed:
            raise InvariantViolated("horizon", conclusion.get("verdict") or "no verdict yet")
        self._concluded(conclusion=conclusion, meta=meta)

    @event("Concluded")
    def _concluded(self, conclusion: dict, meta: EventMeta) -> None:
        self.status = CONCLUDED
        self.conclusion = conclusion
        self.ended_at = self.ended_at or meta.occurred_at

    def abandon(self, meta: EventMeta) -> None:
        if self.status in (CONCLUDED, ABANDONED):
            raise InvariantViolated("experiment_id", f"the experiment is {self.status}")
        self._abandoned(meta=meta)

    @event("Abandoned")
    def _abandoned(self, meta: EventMeta) -> None:
        self.status = ABANDONED
        self.ended_at = self.ended_at or meta.occurred_at


def describe_experiment(x: Experiment) -> dict:
    text = lambda m: None if m is None else str(m.amount)  # noqa: E731
    return {
        "experiment_id": str(x.id), "shop_id": str(x.shop_id), "name": x.name, "version": x.version,
        "status": x.status, "metric": x.metric, "mode": x.mode, "cuped": x.cuped,
        "listings": [{"listing_id": e["listing_id"], "base_price": text(e["base_price"]), "cost": text(e.get("cost"))}
                     for e in x.listings],
        "arms": [{"name": a["name"], "kind": a["kind"], "value": str(a["value"])} for a in x.arms],
        "period_hours": x.period_hours, "burn_in_hours": x.burn_in_hours, "seed": x.seed,
        "schedule": list(x.schedule), "starts_at": x.starts_at.isoformat(),
        "ends_at": x.period_start(x.periods).isoformat(), "period": x.period,
        "plan": dict(x.plan), "paused": x.paused,
        "ended_at": None if x.ended_at is None else x.ended_at.isoformat(), "conclusion": x.conclusion,
    }
