"""Pricing rules: what price a listing should have, given what competitors charge (or, for
`optimise_profit`, what the latest recommendation model run of its demand says).

Pure functions over values: no I/O, no clock (the caller passes `now`), Decimal only. A rule
*proposes*; the Listing aggregate decides (guardrails, caps, cooldown, stops) — see
`Listing.reprice`. Every proposal carries the steps that produced it, in words a seller reads.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from enum import Enum
from functools import lru_cache
from statistics import median
from typing import TYPE_CHECKING, Iterable

from domain.errors import DomainError, InvalidValue
from domain.money import CURRENCY_DECIMALS, Money, check_currency, minor_unit, parse_amount

if TYPE_CHECKING:
    from domain.velocity import Velocity


class Kind(str, Enum):
    BEAT_LOWEST = "beat_lowest"                  # lowest competitor minus `amount` or `percent`
    MATCH_LOWEST = "match_lowest"
    MATCH_MEDIAN = "match_median"
    OFFSET_FROM_AVERAGE = "offset_from_average"  # average plus/minus `amount` or `percent`
    COST_PLUS = "cost_plus"                      # cost at a target margin (`percent` of the price)
    FIXED = "fixed"                              # `amount` is the price
    OPTIMISE_PROFIT = "optimise_profit"          # the latest recommendation model run's price
    STOCK_RUNWAY = "stock_runway"                # up `percent` when stock runs out before restock (forecast)
    STALE_LISTING = "stale_listing"              # down `percent` when nothing sold for `days`


class Rounding(str, Enum):
    NONE = "none"
    CHARM_99 = ".99"
    CHARM_95 = ".95"
    WHOLE = "whole"


class NoCompetition(str, Enum):
    HOLD = "hold"        # propose nothing
    CEILING = "ceiling"  # nobody to undercut: go to the ceiling


class BelowFloor(str, Enum):
    HOLD_AT_FLOOR = "hold_at_floor"          # follow them down, but no further than the floor
    IGNORE_COMPETITOR = "ignore_competitor"  # leave competitors priced below our floor out


VELOCITY = frozenset({Kind.STOCK_RUNWAY, Kind.STALE_LISTING})  # read stock, forecast and sales (Velocity)
MAX_STALE_DAYS = 365
COMPETITIVE = frozenset({Kind.BEAT_LOWEST, Kind.MATCH_LOWEST, Kind.MATCH_MEDIAN, Kind.OFFSET_FROM_AVERAGE})
DEFAULT_MAX_AGE_MINUTES = 24 * 60
DEFAULT_MAX_RUN_AGE_HOURS = 48   # runs are refreshed daily: one missed refresh still leaves a usable run
MAX_RUN_AGE_HOURS = 90 * 24
MAX_LIST = 500  # competitors in an include/exclude list


@dataclass(frozen=True, slots=True)
class Rule:
    """One version of a pricing rule. Field names are the API's, so errors name what was sent."""

    kind: str
    currency: str
    amount: Decimal | None = None   # beat/offset by this much; for `fixed`, the price itself
    percent: Decimal | None = None  # beat/offset by this percent; for `cost_plus`, the target margin
    direction: str | None = None    # offset_from_average only: "above" | "below"
    rounding: str = Rounding.NONE.value
    include: tuple[str, ...] = ()   # only these competitors (empty: all)
    exclude: tuple[str, ...] = ()   # never these competitors
    max_age_minutes: int | None = DEFAULT_MAX_AGE_MINUTES  # observations older are ignored; None: any age
    no_competition: str = NoCompetition.HOLD.value
    below_floor: str = BelowFloor.HOLD_AT_FLOOR.value
    max_run_age_hours: int | None = None  # optimise_profit, stock_runway: older model runs are stale (set by define)
    days: int | None = None         # stale_listing only: days without a sale before a step down

    @classmethod
    def define(cls, kind: object, currency: object, amount: object = None, percent: object = None,
               direction: object = None, rounding: object = Rounding.NONE.value, include: Iterable[str] = (),
               exclude: Iterable[str] = (), max_age_minutes: object = DEFAULT_MAX_AGE_MINUTES,
               no_competition: object = NoCompetition.HOLD.value,
               below_floor: object = BelowFloor.HOLD_AT_FLOOR.value, max_run_age_hours: object = None,
               days: object = None) -> Rule:
        """A validated rule from user input; refusals name the offending field."""
        kind = _choice(Kind, kind, "kind")
        currency = check_currency(currency)
        rule = cls(
            kind=kind.value, currency=currency,
            amount=None if amount is None else Money.of(amount, currency, "amount").amount,
            percent=None if percent is None else parse_amount(percent, "percent"),
            direction=None if direction is None else _direction(direction),
            rounding=_choice(Rounding, rounding, "rounding").value,
            include=_competitors(include, "include"), exclude=_competitors(exclude, "exclude"),
            max_age_minutes=_max_age(max_age_minutes),
            no_competition=_choice(NoCompetition, no_competition, "no_competition").value,
            below_floor=_choice(BelowFloor, below_floor, "below_floor").value,
            max_run_age_hours=_max_run_age(kind, max_run_age_hours),
            days=_stale_days(kind, days),
        )
        rule._check_parameters(kind)
        if rule.rounding in (Rounding.CHARM_99.value, Rounding.CHARM_95.value) and CURRENCY_DECIMALS[currency] < 2:
            raise InvalidValue("rounding", f"{currency} has no minor units: use 'whole' or 'none'")
        return rule

    def _check_parameters(self, kind: Kind) -> None:
        wants = {Kind.BEAT_LOWEST: "amount|percent", Kind.OFFSET_FROM_AVERAGE: "amount|percent",
                 Kind.COST_PLUS: "percent", Kind.FIXED: "amount", Kind.STOCK_RUNWAY: "percent",
                 Kind.STALE_LISTING: "percent"}.get(kind, "")  # optimise_profit: neither
        given = [name for name in ("amount", "percent") if getattr(self, name) is not None]
        if wants == "amount|percent" and len(given) != 1:
            raise InvalidValue("amount" if not given else "percent", f"{kind.value} needs exactly one of amount or percent")
        if wants in ("amount", "percent") and given != [wants]:
            extra = [g for g in given if g != wants]
            raise InvalidValue(extra[0] if extra else wants, f"{kind.value} takes {wants} only")
        if not wants and given:
            raise InvalidValue(given[0], f"{kind.value} takes no amount or percent")
        if self.amount is not None and (self.amount < 0 or (kind == Kind.FIXED and self.amount == 0)):
            raise InvalidValue("amount", "must be greater than zero" if kind == Kind.FIXED else "must not be negative")
        if self.percent is not None and not (0 <= self.percent < 100):
            raise InvalidValue("percent", "must be at least 0 and below 100")
        if kind in VELOCITY and self.percent == 0:
            raise InvalidValue("percent", f"{kind.value} moves the price by a step: must be above 0")
        if (kind == Kind.OFFSET_FROM_AVERAGE) != (self.direction is not None):
            raise InvalidValue("direction", "offset_from_average needs direction 'above' or 'below'"
                               if kind == Kind.OFFSET_FROM_AVERAGE else f"{kind.value} takes no direction")
        if set(self.include) & set(self.exclude):
            raise InvalidValue("exclude", f"{sorted(set(self.include) & set(self.exclude))[0]!r} is also included")

    @property
    def follows_model_runs(self) -> bool:
        """Proposes from the listing's latest model run, not from competitor prices."""
        return self.kind == Kind.OPTIMISE_PROFIT.value

    @property
    def reads_velocity(self) -> bool:
        """Proposes from stock, the demand forecast and sales (a Velocity), not from competitor prices."""
        return self.kind in (Kind.STOCK_RUNWAY.value, Kind.STALE_LISTING.value)

    def describe(self) -> str:
        """One line a seller recognises: 'beat lowest by 5%, charm .99'."""
        by = f"{self.amount} {self.currency}" if self.amount is not None else f"{self.percent}%"
        text = {
            Kind.BEAT_LOWEST.value: f"beat the lowest competitor by {by}",
            Kind.MATCH_LOWEST.value: "match the lowest competitor",
            Kind.MATCH_MEDIAN.value: "match the median competitor",
            Kind.OFFSET_FROM_AVERAGE.value: f"stay {by} {self.direction} the competitor average",
            Kind.COST_PLUS.value: f"cost plus a {self.percent}% margin",
            Kind.FIXED.value: f"fixed at {by}",
            Kind.OPTIMISE_PROFIT.value: f"optimise profit: the price of the latest recommendation model run "
                                        f"(at most {self.max_run_age_hours} h old)",
            Kind.STOCK_RUNWAY.value: f"raise by {self.percent}% while stock runs out before restock at the "
                                     f"forecast rate (forecast at most {self.max_run_age_hours} h old)",
            Kind.STALE_LISTING.value: f"lower by {self.percent}% after {self.days} days without a sale",
        }[self.kind]
        return text if self.rounding == Rounding.NONE.value else f"{text}, rounded to {self.rounding}"


@dataclass(frozen=True, slots=True)
class ListingFacts:
    """What a rule may know about the listing it prices. `floor`/`ceiling` are the effective
    bounds for automated changes (fixed, or derived from cost and minimum margin)."""

    price: Money
    floor: Money | None = None
    ceiling: Money | None = None
    cost: Money | None = None
    last_automated_at: datetime | None = None  # the last automated change (stale_listing restarts its clock)


@dataclass(frozen=True, slots=True)
class CompetitorPrice:
    """One competitor observation as a rule sees it. `ref` names the observation event that
    recorded it (e.g. '<batch id>/<version>'), so a price change can name what it used."""

    ref: str
    competitor: str
    price: Money
    observed_at: datetime


@dataclass(frozen=True, slots=True)
class RecommendationRun:
    """A recommendation model run of one listing (derived data, not an event) as the optimise-profit
    rule reads it. An automated change made from it records it whole (Automation.model_run): the
    figures the change stood on stay in the log whatever later refreshes do to the model runs."""

    run_id: str
    created_at: datetime
    price: Money | None = None              # the recommended price; None when the run refused
    refusal: str | None = None              # why the model gave no price
    elasticity: Decimal | None = None
    elasticity_low: Decimal | None = None   # its 95% interval
    elasticity_high: Decimal | None = None
    objective: str = "profit"               # or "revenue (no cost known)"
    from_price: Money | None = None         # the listing's price the run started from
    expected_at_from: Money | None = None   # expected profit (or revenue) per day at from_price
    expected_at_price: Money | None = None  # ... and at the recommended price

    @classmethod
    def from_stored(cls, run_id: object, created_at: datetime, refused: bool, answer: dict) -> RecommendationRun:
        """A stored recommendation run (analytics.model_runs; the answer as read/model_runs.py
        writes it). An answer that does not read as one becomes a refusal naming what is wrong, so
        the rule holds rather than acting on it."""
        run_id = str(run_id)
        if refused:
            return cls(run_id, created_at, refusal=str(answer.get("reason") or "the model refused"))
        try:
            currency = check_currency(answer["currency"])
            outlook = "profit_per_day" if answer["current"]["profit_per_day"] is not None else "revenue_per_day"
            money = lambda value, field: Money.of(value, currency, field)  # noqa: E731
            low, high = answer["ci95"]
            return cls(run_id, created_at, price=Money.price(answer["price"], currency),
                       elasticity=_elasticity(answer["elasticity"], "elasticity"),
                       elasticity_low=_elasticity(low, "ci95[0]"), elasticity_high=_elasticity(high, "ci95[1]"),
                       objective=str(answer["objective"]), from_price=money(answer["current_price"], "current_price"),
                       expected_at_from=money(answer["current"][outlook]["mean"], f"current.{outlook}"),
                       expected_at_price=money(answer["recommended"][outlook]["mean"], f"recommended.{outlook}"))
        except DomainError as e:
            return cls(run_id, created_at, refusal=f"its answer is not a recommendation: {e.field}: {e.detail}")
        except (KeyError, TypeError, ValueError) as e:
            return cls(run_id, created_at, refusal=f"its answer is not a recommendation ({type(e).__name__}: {e})")

    def describe(self) -> dict:
        """The run as answers show it (explain, dry run): amounts as decimal strings."""
        text = lambda v: None if v is None else str(getattr(v, "amount", v))  # noqa: E731
        return {"run_id": self.run_id, "created_at": self.created_at.isoformat(), "refusal": self.refusal,
                "recommended": text(self.price), "elasticity": text(self.elasticity),
                "interval": [text(self.elasticity_low), text(self.elasticity_high)], "objective": self.objective,
                "from_price": text(self.from_price), "expected_at_from": text(self.expected_at_from),
                "expected_at_recommended": text(self.expected_at_price),
                "cited": None if self.refusal is not None else self.cited()}

    def cited(self) -> str:
        """'model run R: elasticity e [lo, hi], recommended P', as explain and the reasons cite it."""
        return (f"model run {self.run_id}: elasticity {self.elasticity} [{self.elasticity_low}, "
                f"{self.elasticity_high}], recommended {self.price}")


@dataclass(frozen=True, slots=True)
class Proposal:
    price: Money | None                # None: the rule proposes no change (hold)
    reasons: tuple[str, ...]           # the steps, in order, in words
    used: tuple[str, ...] = ()         # refs of the observations the price was computed from
    model_run: RecommendationRun | None = None  # the model run the proposal read (optimise_profit)
    inputs: dict | None = None         # the figures a velocity rule read, as text (domain/velocity.py)


# -- evaluation --------------------------------------------------------------------------------
def evaluate(rule: Rule, listing: ListingFacts, observations: Iterable[CompetitorPrice], now: datetime,
             run: RecommendationRun | None = None, velocity: Velocity | None = None) -> Proposal:
    """The price `rule` proposes for `listing` at `now`, and why. `run`: the listing's latest
    recommendation model run (what optimise_profit reads); `velocity`: its stock, forecast and last
    sale (what stock_runway and stale_listing read). The other kinds ignore both."""
    currency = listing.price.currency
    if rule.currency != currency:
        return Proposal(None, (f"rule is in {rule.currency} but the listing is in {currency}: holding",))
    kind = Kind(rule.kind)
    if kind == Kind.FIXED:
        return _finish(rule, listing, rule.amount, [f"fixed price {rule.amount} {currency}"], ())
    if kind == Kind.COST_PLUS:
        return _cost_plus(rule, listing)
    if kind == Kind.OPTIMISE_PROFIT:
        return _optimise_profit(rule, listing, run, now)
    if kind in VELOCITY:
        from domain.velocity import propose  # the velocity maths builds on this module's _finish
        return propose(rule, listing, velocity, now)
    return _competitive(rule, kind, listing, observations, now)


def _cost_plus(rule: Rule, listing: ListingFacts) -> Proposal:
    if listing.cost is None:
        return Proposal(None, ("cost plus margin needs the listing's cost, but no cost is recorded: holding",))
    # Margin is a share of the price (gross margin): price = cost / (1 - margin).
    target = listing.cost.amount / (1 - rule.percent / 100)
    step = f"cost {listing.cost} at a {rule.percent}% margin: {_q(target, listing.price.currency)}"
    return _finish(rule, listing, target, [step], ())


def _optimise_profit(rule: Rule, listing: ListingFacts, run: RecommendationRun | None, now: datetime) -> Proposal:
    unusable = _unusable_run(rule, run, now, listing.price.currency)
    if unusable is not None:
        return Proposal(None, (unusable,), model_run=run)
    steps = [f"{run.cited()} (run at {run.created_at.isoformat()})"]
    if run.expected_at_from is not None and run.expected_at_price is not None:
        steps.append(f"expected {run.objective} per day: {run.expected_at_from} at {run.from_price}, "
                     f"{run.expected_at_price} at {run.price}")
    proposal = _finish(rule, listing, run.price.amount, steps, ())
    return replace(proposal, model_run=run)


def _unusable_run(rule: Rule, run: RecommendationRun | None, now: datetime, currency: str) -> str | None:
    """Why the run cannot be followed (the hold's reason), or None."""
    if run is None:
        return "no recommendation model run for this listing yet (`etsypro analyze refresh` makes one): holding"
    if run.refusal is not None:
        return f"model run {run.run_id} gave no price: {run.refusal}: holding"
    if run.price is None:
        return f"model run {run.run_id} carries no recommended price: holding"
    age, limit = now - run.created_at, rule.max_run_age_hours or DEFAULT_MAX_RUN_AGE_HOURS
    if age > timedelta(hours=limit):
        return (f"model run {run.run_id} is {age.total_seconds() / 3600:.0f} h old, older than the rule's "
                f"{limit} h: holding until a fresh run")
    if run.price.currency != currency:
        return f"model run {run.run_id} recommends a price in {run.price.currency}, the listing is in {currency}: holding"
    return None


def _competitive(rule: Rule, kind: Kind, listing: ListingFacts, observations: Iterable[CompetitorPrice],
                 now: datetime) -> Proposal:
    currency = listing.price.currency
    latest, skipped = _latest_per_competitor(rule, observations, now, currency)
    steps = []
    if skipped:
        steps.append("left out: " + ", ".join(f"{n} {why}" for why, n in skipped.items()))
    floor = listing.floor
    if floor is not None and rule.below_floor == BelowFloor.IGNORE_COMPETITOR.value:
        below = [o for o in latest if o.price.amount < floor.amount]
        if below:
            latest = [o for o in latest if o.price.amount >= floor.amount]
            steps.append(f"ignored {len(below)} competitor(s) below the floor {floor}: "
                         + ", ".join(f"{o.competitor} at {o.price.amount}" for o in below[:5]))
    if not latest:
        return _no_competition(rule, listing, steps)
    used = tuple(o.ref for o in latest)
    prices = [o.price.amount for o in latest]
    steps.append(f"{len(latest)} competitor(s) considered")
    if kind in (Kind.BEAT_LOWEST, Kind.MATCH_LOWEST):
        lowest = min(latest, key=lambda o: o.price.amount)
        steps.append(f"lowest: {lowest.price} ({lowest.competitor})")
        if kind == Kind.MATCH_LOWEST:
            return _finish(rule, listing, lowest.price.amount, steps, used)
        target = (lowest.price.amount - rule.amount if rule.amount is not None
                  else lowest.price.amount * (1 - rule.percent / 100))
        # Round towards zero so that "beat" always ends strictly below or at the computed value.
        target = target.quantize(minor_unit(currency), ROUND_DOWN)
        steps.append(f"beat by {_by(rule)}: {target}")
        return _finish(rule, listing, target, steps, used)
    if kind == Kind.MATCH_MEDIAN:
        middle = median(prices)
        steps.append(f"median: {_q(middle, currency)}")
        return _finish(rule, listing, middle, steps, used)
    average = sum(prices) / len(prices)
    sign = 1 if rule.direction == "above" else -1
    offset = rule.amount if rule.amount is not None else average * rule.percent / 100
    target = average + sign * offset
    steps.append(f"average: {_q(average, currency)}; {_by(rule)} {rule.direction}: {_q(target, currency)}")
    return _finish(rule, listing, target, steps, used)


def _latest_per_competitor(rule: Rule, observations: Iterable[CompetitorPrice], now: datetime,
                           currency: str) -> tuple[list[CompetitorPrice], dict[str, int]]:
    """The newest fresh observation of each competitor the rule looks at, and what was left out.
    (The hot loop of every evaluation: plain counters and local names on purpose.)"""
    oldest = None if rule.max_age_minutes is None else now - timedelta(minutes=rule.max_age_minutes)
    include, exclude = _as_set(rule.include), _as_set(rule.exclude)
    latest: dict[str, CompetitorPrice] = {}
    other_currency = not_included = excluded = stale = superseded = 0
    for o in observations:
        competitor, at = o.competitor, o.observed_at
        if o.price.currency != currency:
            other_currency += 1
        elif include and competitor not in include:
            not_included += 1
        elif competitor in exclude:
            excluded += 1
        elif oldest is not None and at < oldest:
            stale += 1
        else:
            seen = latest.get(competitor)
            if seen is None:
                latest[competitor] = o
            else:
                superseded += 1
                if at > seen.observed_at or (at == seen.observed_at and o.ref > seen.ref):
                    latest[competitor] = o
    counts = {"not included": not_included, "excluded": excluded, f"older than {rule.max_age_minutes} min": stale,
              "in another currency": other_currency, "superseded by a newer observation": superseded}
    return list(latest.values()), {why: n for why, n in counts.items() if n}


@lru_cache(maxsize=1024)
def _as_set(competitors: tuple[str, ...]) -> frozenset[str]:
    return frozenset(competitors)


def _no_competition(rule: Rule, listing: ListingFacts, steps: list[str]) -> Proposal:
    if rule.no_competition == NoCompetition.CEILING.value:
        if listing.ceiling is None:
            return Proposal(None, (*steps, "no competition in the window, and no ceiling to go to: holding"))
        return Proposal(listing.ceiling, (*steps, f"no competition in the window: going to the ceiling {listing.ceiling}"))
    return Proposal(None, (*steps, "no competition in the window: holding"))


def _finish(rule: Rule, listing: ListingFacts, target: Decimal, steps: list[str], used: tuple[str, ...]) -> Proposal:
    """Quantize, hold at the floor when asked to, round, and refuse nonsense."""
    currency = listing.price.currency
    amount = _q(target, currency)
    floor, ceiling = listing.floor, listing.ceiling
    if (floor is not None and amount < floor.amount and Kind(rule.kind) in COMPETITIVE
            and rule.below_floor == BelowFloor.HOLD_AT_FLOOR.value):
        steps.append(f"{amount} is below the floor {floor}: holding at the floor")
        return Proposal(floor, tuple(steps), used)
    if rule.rounding != Rounding.NONE.value:
        amount = _rounded(amount, rule.rounding, floor, ceiling, steps)
    if amount <= 0:
        steps.append(f"the rule computes {amount} {currency}, not a price: holding")
        return Proposal(None, tuple(steps), used)
    return Proposal(Money(amount, currency), tuple(steps), used)


# -- rounding ----------------------------------------------------------------------------------
def _rounded(amount: Decimal, rounding: str, floor: Money | None, ceiling: Money | None, steps: list[str]) -> Decimal:
    """Charm/whole rounding: down to the ending; up to it if down would cross the floor; not at
    all if up would cross the ceiling too. Down first, because a rounded-up "beat" no longer beats."""
    down, up = charm_candidates(amount, rounding)
    if down > 0 and (floor is None or down >= floor.amount):
        chosen = down
    elif ceiling is None or up <= ceiling.amount:
        chosen = up
    else:
        steps.append(f"rounding {amount} to {rounding} would cross the floor or ceiling: left unrounded")
        return amount
    if chosen != amount:
        steps.append(f"rounded to {rounding}: {chosen}")
    return chosen


def charm_candidates(amount: Decimal, rounding: str) -> tuple[Decimal, Decimal]:
    """The nearest prices with the ending at or below, and at or above, `amount`."""
    if rounding == Rounding.WHOLE.value:
        return amount.to_integral_value(ROUND_FLOOR), amount.to_integral_value(ROUND_CEILING)
    ending = Decimal("0.99") if rounding == Rounding.CHARM_99.value else Decimal("0.95")
    down = (amount - ending).to_integral_value(ROUND_FLOOR) + ending
    return down, (down if down == amount else down + 1)


# -- small helpers -----------------------------------------------------------------------------
def _q(amount: Decimal, currency: str) -> Decimal:
    return amount.quantize(minor_unit(currency), ROUND_HALF_EVEN)


def _by(rule: Rule) -> str:
    return f"{rule.amount} {rule.currency}" if rule.amount is not None else f"{rule.percent}%"


def _choice(enum: type[Enum], value: object, field: str):
    try:
        return enum(value)
    except ValueError:
        raise InvalidValue(field, f"must be one of {', '.join(repr(e.value) for e in enum)}") from None


def _direction(value: object) -> str:
    if value not in ("above", "below"):
        raise InvalidValue("direction", "must be 'above' or 'below'")
    return value


def _competitors(values: Iterable[str], field: str) -> tuple[str, ...]:
    values = tuple(values)
    if len(values) > MAX_LIST:
        raise InvalidValue(field, f"at most {MAX_LIST} competitors")
    for i, v in enumerate(values):
        if not isinstance(v, str) or not v.strip() or len(v) > 200:
            raise InvalidValue(f"{field}[{i}]", "must be a competitor reference of 1-200 characters")
    return tuple(sorted(set(values)))


def _elasticity(value: object, field: str) -> Decimal:
    """An elasticity from a model's float, to two decimals (as recommendations describe it)."""
    return parse_amount(value, field).quantize(Decimal("0.01"), ROUND_HALF_EVEN)


def _max_run_age(kind: Kind, value: object) -> int | None:
    if kind not in (Kind.OPTIMISE_PROFIT, Kind.STOCK_RUNWAY):
        if value is not None:
            raise InvalidValue("max_run_age_hours", f"{kind.value} reads no model run: only optimise_profit "
                                                    "and stock_runway take it")
        return None
    if value is None:
        return DEFAULT_MAX_RUN_AGE_HOURS
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_RUN_AGE_HOURS:
        raise InvalidValue("max_run_age_hours", f"must be a whole number of hours from 1 to {MAX_RUN_AGE_HOURS}")
    return value


def _stale_days(kind: Kind, value: object) -> int | None:
    if kind != Kind.STALE_LISTING:
        if value is not None:
            raise InvalidValue("days", f"{kind.value} takes no days: only stale_listing counts days without a sale")
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_STALE_DAYS:
        raise InvalidValue("days", f"stale_listing needs a whole number of days from 1 to {MAX_STALE_DAYS}")
    return value


def _max_age(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 366 * 24 * 60:
        raise InvalidValue("max_age_minutes", "must be a whole number of minutes from 1 to 527040, or null")
    return value

