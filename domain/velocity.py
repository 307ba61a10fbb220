"""Velocity- and stock-aware rules: `stock_runway` and `stale_listing` (issue 17 item 4).

Pure: the caller passes what the listing's stock, demand forecast and sales say (a `Velocity`) and
`now`; a rule proposes, the Listing decides (guardrails, max step, cooldown, stops), like every kind.

- stock_runway raises the price by `percent` when the stock on hand would run out before the
  restock date at the forecast rate, and never lowers it. The rate is the forecast's *mean* daily
  units, day by day from today to the restock day (the stored forecast covers 90 days; beyond it,
  its average day). The mean rather than the upper 80 % bound: a raise costs sales for certain,
  and intermittent sellers' upper bounds are several times their mean, so the upper bound would
  raise on noise. The 80 % upper bound is still cited, so a seller sees how close the call was.
- stale_listing lowers the price by `percent`, towards the floor and never below it, when the
  listing has sold nothing for `days` days: counted from the latest of its last day with units
  sold, the day it was listed, and the day of its last automated change. So each step down waits
  another `days` days without a sale: a slow decay towards the floor, not a step per evaluation.
Both hold, saying why, when an input is missing, and cite what they read in `Proposal.inputs`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation

from domain.rules import DEFAULT_MAX_RUN_AGE_HOURS, Kind, ListingFacts, Proposal, Rule, _finish

MAX_RESTOCK_DAYS = 2 * 366  # a restock date further away than this is not a plan


@dataclass(frozen=True, slots=True)
class ForecastRun:
    """A stored forecast model run of one listing (analytics.model_runs, kind 'forecast') as the
    stock_runway rule reads it: mean and 80 % upper daily units from `first_day`."""

    run_id: str
    created_at: datetime
    first_day: date | None = None
    units: tuple[Decimal, ...] = ()
    units_80_upper: tuple[Decimal, ...] = ()
    refusal: str | None = None

    @classmethod
    def from_stored(cls, run_id: object, created_at: datetime, refused: bool, answer: dict) -> ForecastRun:
        """The run as read/model_runs.py stores it; an answer that does not read as a forecast
        becomes a refusal naming what is wrong, so the rule holds rather than acting on it."""
        run_id = str(run_id)
        if refused:
            return cls(run_id, created_at, refusal=str(answer.get("reason") or "the model refused"))
        try:
            points = answer["points"]
            units = tuple(_units(u) for u in points["units"])
            upper = tuple(_units(u) for u in points["units_80_upper"])
            if not units or len(upper) != len(units):
                raise ValueError("no daily units")
            return cls(run_id, created_at, date.fromisoformat(answer["first_day"]), units, upper)
        except (KeyError, TypeError, ValueError, InvalidOperation) as e:
            return cls(run_id, created_at, refusal=f"its answer is not a forecast ({type(e).__name__}: {e})")

    def demand(self, first: date, end: date, upper: bool = False) -> Decimal:
        """Units forecast from `first` up to (not including) `end`."""
        return sum((self.day(first + timedelta(days=i), upper) for i in range((end - first).days)), Decimal(0))

    def day(self, day: date, upper: bool = False) -> Decimal:
        """One day's forecast units; outside the forecast's days, its average day (today may precede a
        forecast that starts tomorrow, a restock may lie past its horizon)."""
        series = self.units_80_upper if upper else self.units
        i = (day - self.first_day).days
        return series[i] if 0 <= i < len(series) else sum(series, Decimal(0)) / len(series)

    def runway(self, first: date, stock: int, end: date) -> int | None:
        """Days from `first` to the first day the mean forecast wants more than `stock` (a buyer finds
        none left); None: the stock lasts until `end`."""
        sold = Decimal(0)
        for i in range((end - first).days):
            sold += self.day(first + timedelta(days=i))
            if sold > stock:
                return i
        return None


@dataclass(frozen=True, slots=True)
class Velocity:
    """What the velocity rules know of one listing: its stock count (Listing.StockCounted) less the
    net units sold after it, the latest forecast run, and its last day with a sale."""

    listed_on: date                       # the stale clock's start when it never sold
    forecast: ForecastRun | None = None
    counted: int | None = None            # the last stock count (None: never counted)
    counted_at: datetime | None = None
    sold_since_count: int = 0             # net units of sales after the count
    restock_on: date | None = None
    last_sale_on: date | None = None      # last UTC day with units sold

    @property
    def stock(self) -> int | None:
        """On hand now: the count less what sold since (returns put units back), never below zero."""
        return None if self.counted is None else max(self.counted - self.sold_since_count, 0)

    def cited(self) -> dict:
        """The inputs as text, recorded with the change (explain shows them)."""
        text = lambda v: None if v is None else str(v)  # noqa: E731
        f = self.forecast
        return {"forecast_run": None if f is None else f.run_id,
                "forecast_refusal": None if f is None else f.refusal,
                "stock_counted": text(self.counted),
                "counted_at": None if self.counted_at is None else self.counted_at.isoformat(),
                "sold_since_count": str(self.sold_since_count), "stock_on_hand": text(self.stock),
                "restock_on": text(self.restock_on), "last_sale_on": text(self.last_sale_on),
                "listed_on": str(self.listed_on)}


def propose(rule: Rule, listing: ListingFacts, velocity: Velocity | None, now: datetime) -> Proposal:
    if velocity is None:
        return Proposal(None, ("no stock, forecast or sales facts were read for this listing: holding",))
    inputs = velocity.cited()
    if rule.kind == Kind.STOCK_RUNWAY.value:
        proposal = _stock_runway(rule, listing, velocity, now)
    else:
        proposal = _stale_listing(rule, listing, velocity, now)
        inputs["days_without_sale"] = str(days_without_sale(velocity, now))
        inputs["stale_since"] = str(stale_since(velocity, listing))
    return replace(proposal, inputs=inputs)


def days_without_sale(velocity: Velocity, now: datetime) -> int:
    """Whole days since the last day with a sale (or since listing), not counting today."""
    return max((now.date() - (velocity.last_sale_on or velocity.listed_on)).days, 0)


def stale_since(velocity: Velocity, listing: ListingFacts) -> date:
    """Where stale_listing's clock starts: the last sale, the listing, or the last automated change."""
    days = [velocity.last_sale_on or velocity.listed_on]
    if listing.last_automated_at is not None:
        days.append(listing.last_automated_at.date())
    return max(days)


def _stock_runway(rule: Rule, listing: ListingFacts, v: Velocity, now: datetime) -> Proposal:
    unusable = _unusable(rule, v, now)
    if unusable is not None:
        return Proposal(None, (unusable,))
    today, f, stock = now.date(), v.forecast, v.stock
    mean, upper = f.demand(today, v.restock_on), f.demand(today, v.restock_on, upper=True)
    steps = [f"stock on hand {stock} (counted {v.counted} at {v.counted_at.isoformat()}, {v.sold_since_count} "
             f"sold since); restock on {v.restock_on}",
             f"forecast run {f.run_id}: {_units_text(mean)} units until the restock (80% upper bound "
             f"{_units_text(upper)})"]
    runway = f.runway(today, stock, v.restock_on)
    if runway is None:
        return Proposal(None, (*steps, "the stock lasts until the restock at the forecast rate: holding"))
    steps.append(f"at the forecast rate the stock runs out on {today + timedelta(days=runway)}, in {runway} day(s), "
                 f"before the restock")
    return _step(rule, listing, steps, up=True)


def _stale_listing(rule: Rule, listing: ListingFacts, v: Velocity, now: datetime) -> Proposal:
    since = f"last sale on {v.last_sale_on}" if v.last_sale_on else f"no sale since it was listed on {v.listed_on}"
    steps = [f"{since}: {days_without_sale(v, now)} day(s) without a sale"]
    start = stale_since(v, listing)
    if start > (v.last_sale_on or v.listed_on):
        steps.append(f"the last automated change was on {start}: counting from then")
    idle = max((now.date() - start).days, 0)
    if idle < rule.days:
        return Proposal(None, (*steps, f"{idle} day(s) counted; the rule waits for {rule.days}: holding"))
    return _step(rule, listing, steps, up=False)


def _step(rule: Rule, listing: ListingFacts, steps: list[str], up: bool) -> Proposal:
    """One step of `percent` up (to the ceiling at most) or down (to the floor at least); a proposal
    that would not move the price that way, after rounding, is a hold: never the wrong direction."""
    price = listing.price
    bound = listing.ceiling if up else listing.floor
    if bound is not None and (price.amount >= bound.amount if up else price.amount <= bound.amount):
        return Proposal(None, (*steps, f"the price {price} is at the {'ceiling' if up else 'floor'} {bound}: holding"))
    factor = 1 + rule.percent / 100 if up else 1 - rule.percent / 100
    target = price.amount * factor
    steps.append(f"{'raise' if up else 'lower'} by {rule.percent}%: {target.quantize(Decimal('0.0001'))}")
    if bound is not None and (target > bound.amount if up else target < bound.amount):
        target = bound.amount
        steps.append(f"held at the {'ceiling' if up else 'floor'} {bound}")
    proposal = _finish(rule, listing, target, steps, ())
    moved = proposal.price is not None and (proposal.price.amount > price.amount if up
                                            else proposal.price.amount < price.amount)
    if not moved:
        return Proposal(None, (*proposal.reasons, f"that does not {'raise' if up else 'lower'} {price}: holding"))
    return proposal


def _unusable(rule: Rule, v: Velocity, now: datetime) -> str | None:
    """Why stock_runway cannot decide (the hold's reason), or None."""
    f = v.forecast
    if v.counted is None:
        return "no stock count recorded (PUT .../stock): holding"
    if v.restock_on is None:
        return f"stock {v.stock} on hand but no restock date recorded: nothing to run out before: holding"
    if v.restock_on <= now.date():
        return f"the restock date {v.restock_on} is today or past: holding until a new count"
    if v.stock == 0:
        return f"no stock on hand (counted {v.counted}, {v.sold_since_count} sold since): nothing to ration: holding"
    if f is None:
        return "no forecast model run for this listing yet (`etsypro analyze refresh` makes one): holding"
    if f.refusal is not None:
        return f"forecast run {f.run_id} gave no forecast: {f.refusal}: holding"
    age, limit = now - f.created_at, rule.max_run_age_hours or DEFAULT_MAX_RUN_AGE_HOURS
    if age > timedelta(hours=limit):
        return (f"forecast run {f.run_id} is {age.total_seconds() / 3600:.0f} h old, older than the rule's "
                f"{limit} h: holding until a fresh run")
    return None


def _units(value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TypeError(f"units {value!r}")
    units = Decimal(str(value))
    if not units.is_finite() or units < 0:
        raise ValueError(f"units {value!r}")
    return units


def _units_text(units: Decimal) -> str:
    return str(units.quantize(Decimal("0.1")))
