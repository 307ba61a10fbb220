"""The price that maximises expected profit per day under a fitted constant-elasticity demand.

Demand: units(p) = baseline * (p / reference)^e. Profit (p - cost) * units(p) peaks at
p* = cost * e / (1 + e) when e < -1; with e >= -1 (inelastic) it rises with price without bound
and, with no cost known (revenue), an elastic e < -1 makes it fall with price: the answer is then
an edge of the allowed range. The allowed range is one step from the current price (the
guardrails' max_step_percent, else DEFAULT_STEP_PERCENT: the model is trusted only near prices it
has seen) within the floor, ceiling and margin floor (Guardrails.automated_floor()).
Uncertainty: a move must gain at both ends of the elasticity's 95% interval; the largest such move
toward the optimum is taken, else the price holds. Prices are rounded to the currency's minor unit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from domain.demand.elasticity import Estimate, Refusal, expected_units
from domain.errors import DomainError
from domain.listing import Guardrails
from domain.money import CURRENCY_DECIMALS, MAX_AMOUNT, Money, minor_unit

DEFAULT_STEP_PERCENT = Decimal(10)   # the largest move when the guardrails set no max step
CANDIDATES = 40                      # prices tried between the current price and the optimum


@dataclass(frozen=True, slots=True)
class UnitsRange:
    """Expected units per day with the 95% interval of that expectation."""

    mean: float
    low: float
    high: float


@dataclass(frozen=True, slots=True)
class MoneyRange:
    mean: Money
    low: Money
    high: Money


@dataclass(frozen=True, slots=True)
class Outlook:
    """What a day looks like at one price."""

    price: Money
    units_per_day: UnitsRange
    revenue_per_day: MoneyRange
    profit_per_day: MoneyRange | None   # None when the listing's cost is unknown


@dataclass(frozen=True, slots=True)
class Recommendation:
    price: Money                        # the recommended price (the current one when holding)
    moved: bool
    objective: str                      # "profit" or "revenue (no cost known)"
    current: Outlook
    recommended: Outlook
    gain_per_day: Money                 # at the point estimate of the elasticity
    pessimistic_gain_per_day: Money     # at the worse end of its 95% interval
    reasons: tuple[str, ...]
    estimate: Estimate


def recommend(estimate: Estimate | Refusal, current_price: Decimal, guardrails: Guardrails,
              currency: str) -> Recommendation | Refusal:
    """The profit-optimal price one step from `current_price`, or a Refusal saying why not."""
    problem = _input_problem(estimate, current_price, guardrails, currency)
    if problem is not None:
        return problem
    cost = float(guardrails.cost.amount) if guardrails.cost is not None else 0.0
    current = float(current_price)
    low, high, bound_reasons = _allowed_range(current_price, guardrails, currency)
    target, target_reason = _optimum(estimate.elasticity, cost, guardrails.cost is not None, low, high)
    chosen, gains, choice_reasons = _robust_move(estimate, current, cost, target, low, high, currency)
    reasons = (_describe_estimate(estimate), target_reason, *bound_reasons, *choice_reasons)
    price = _decimal(chosen, currency)
    return _answer(estimate, current_price, price, cost, guardrails.cost is not None, currency, gains, reasons)


# -- checks ---------------------------------------------------------------------------------------
def _input_problem(estimate, current_price, guardrails, currency) -> Refusal | None:
    if isinstance(estimate, Refusal):
        return estimate
    if estimate.baseline is None:
        return Refusal("a pooled shop estimate carries no listing's volume",
                       "the listing's own or partially pooled estimate", "estimate")
    if currency not in CURRENCY_DECIMALS:
        return Refusal(f"{str(currency)[:10]!r} is not a supported currency", "an ISO 4217 currency", "currency")
    if not isinstance(current_price, Decimal) or not current_price.is_finite() or current_price <= 0:
        return Refusal(f"current price {current_price!r} is not a positive finite Decimal", "the listing's price",
                       "current_price")
    if current_price != current_price.quantize(minor_unit(currency)):
        return Refusal(f"current price {current_price} has more decimals than {currency} allows",
                       f"a price in whole {minor_unit(currency)} {currency}", "current_price")
    try:
        guardrails.check(currency)
    except DomainError as error:
        return Refusal(f"guardrails: {error.detail}", "consistent guardrails", error.field)
    return None


# -- where the price may go -------------------------------------------------------------------------
def _allowed_range(current: Decimal, guardrails: Guardrails, currency: str) -> tuple[float, float, tuple[str, ...]]:
    """[low, high] for this move, rounded inward to the minor unit, and which limits bound it."""
    step = guardrails.max_step_percent or DEFAULT_STEP_PERCENT
    source = "max step" if guardrails.max_step_percent else "default step (no max step set)"
    unit = minor_unit(currency)
    low = max((current * (1 - step / 100)).quantize(unit, ROUND_CEILING), unit)   # a price stays above 0
    high = (current * (1 + step / 100)).quantize(unit, ROUND_FLOOR)
    reasons = [f"one move stays within {step}% of {current} ({source}): {low} to {high}"]
    floor = guardrails.automated_floor()
    if floor is not None and floor.amount > low:
        low = floor.amount
        reasons.append(f"floor {floor} (fixed or from the margin on cost) raises the lowest price allowed")
    ceiling = guardrails.ceiling
    if ceiling is not None and ceiling.amount < high:
        high = ceiling.amount
        reasons.append(f"ceiling {ceiling} lowers the highest price allowed")
    if low > high:  # the current price is outside the guardrails: the nearest bound is the only way
        nearest = low if current < low else high
        reasons.append(f"the current price is outside the guardrails; the nearest allowed price is {nearest}")
        low = high = nearest
    return float(low), float(high), tuple(reasons)


def _optimum(e: float, cost: float, cost_known: bool, low: float, high: float) -> tuple[float, str]:
    """The objective's maximiser within [low, high] under constant elasticity e."""
    if e >= -1:
        return high, (f"inelastic estimate (e = {e:.2f} >= -1): {'profit' if cost_known else 'revenue'} rises "
                      f"with price in this model, so one step up at most, never straight to the ceiling")
    if not cost_known or cost <= 0:
        return low, f"elastic estimate (e = {e:.2f}) and no cost: revenue rises as the price falls"
    best = cost * e / (1 + e)
    return min(max(best, low), high), f"profit-maximising price cost * e / (1 + e) = {best:.2f}"


def _robust_move(estimate: Estimate, current: float, cost: float, target: float, low: float, high: float,
                 currency: str) -> tuple[float, tuple[float, float], tuple[str, ...]]:
    """The candidate nearest the target (minor-unit prices between current and target) that gains
    at both ends of the 95% interval; the current price when none does."""
    e_low, e_high = estimate.ci95
    unit = float(minor_unit(currency))
    start = min(max(current, low), high)     # out-of-range current price: the nearest allowed first
    candidates = sorted({round(round(start + (target - start) * k / CANDIDATES, 10) / unit) * unit
                         for k in range(CANDIDATES + 1)}, key=lambda p: -abs(p - start))
    for price in candidates:
        price = min(max(price, low), high)
        if abs(price - current) < unit / 2:
            continue
        worst = min(_gain(estimate, price, current, cost, e) for e in (e_low, e_high))
        if worst > 0:
            point = _gain(estimate, price, current, cost, estimate.elasticity)
            shortened = () if abs(price - target) < unit / 2 else (
                f"shortened to {price:.{_decimals(currency)}f}: the farthest move toward {target:.{_decimals(currency)}f} "
                f"that gains at both ends of the 95% interval",)
            return price, (point, worst), shortened + (f"gains at both ends of the interval ({e_low:.2f}, {e_high:.2f})",)
    if abs(start - current) >= unit / 2:
        gains = tuple(_gain(estimate, start, current, cost, e) for e in (estimate.elasticity, min(
            (e_low, e_high), key=lambda e: _gain(estimate, start, current, cost, e))))
        return start, gains, ("moved into the guardrails: the guardrails, not the model, set this price",)
    if abs(target - current) < unit / 2:
        return current, (0.0, 0.0), ("hold: the current price is already the best allowed",)
    worse = min((e_low, e_high), key=lambda e: _gain(estimate, target, current, cost, e))
    return current, (0.0, 0.0), (f"hold: at the pessimistic end (e = {worse:.2f}) a move toward "
                                 f"{target:.{_decimals(currency)}f} loses",)


def _gain(estimate: Estimate, price: float, current: float, cost: float, e: float) -> float:
    """Expected profit (revenue when cost is 0) per day at `price` minus at `current`, at elasticity e.
    Its sign does not depend on the baseline, so the pessimistic check is about the slope alone."""
    return (price - cost) * _units(estimate, price, e) - (current - cost) * _units(estimate, current, e)


def _units(estimate: Estimate, price: float, e: float) -> float:
    base = estimate.baseline
    return base.units_per_day * math.exp(min(e * math.log(price / base.reference_price), 700.0))


# -- the answer -----------------------------------------------------------------------------------
def _answer(estimate, current_price: Decimal, price: Decimal, cost: float, cost_known: bool, currency: str,
            gains: tuple[float, float], reasons: tuple[str, ...]) -> Recommendation | Refusal:
    current_outlook = _outlook(estimate, current_price, cost, cost_known, currency)
    new_outlook = _outlook(estimate, price, cost, cost_known, currency)
    for outlook in (current_outlook, new_outlook):
        if isinstance(outlook, Refusal):
            return outlook
    if not all(math.isfinite(g) for g in gains):
        return Refusal("the expected gain is not finite", "a price nearer the observed range", "price")
    return Recommendation(
        price=Money(price, currency), moved=price != current_price,
        objective="profit" if cost_known else "revenue (no cost known)",
        current=current_outlook, recommended=new_outlook,
        gain_per_day=_money(gains[0], currency), pessimistic_gain_per_day=_money(gains[1], currency),
        reasons=tuple(r for r in reasons if r), estimate=estimate)


def _outlook(estimate: Estimate, price: Decimal, cost: float, cost_known: bool, currency: str) -> Outlook | Refusal:
    units = expected_units(estimate, float(price))
    if isinstance(units, Refusal):
        return units
    mean, low, high = units
    p = float(price)
    margin = p - cost
    if not all(math.isfinite(v) and abs(v) < _PLAUSIBLE for v in (p * high, margin * high, margin * low)):
        return Refusal(f"expected revenue at {price} is beyond any plausible amount: the fitted slope is "
                       "extrapolated too far from the prices seen", "a price nearer the observed range", "price")
    profit = None
    if cost_known:
        ends = sorted((margin * low, margin * high))
        profit = MoneyRange(_money(margin * mean, currency), _money(ends[0], currency), _money(ends[1], currency))
    return Outlook(price=Money(price, currency), units_per_day=UnitsRange(round(mean, 4), round(low, 4), round(high, 4)),
                   revenue_per_day=MoneyRange(_money(p * mean, currency), _money(p * low, currency),
                                              _money(p * high, currency)),
                   profit_per_day=profit)


def _describe_estimate(estimate: Estimate) -> str:
    low, high = estimate.ci95
    return (f"elasticity {estimate.elasticity:.2f} (95% {low:.2f} to {high:.2f}) from {estimate.n_days} days, "
            f"{estimate.method}")


_PLAUSIBLE = float(MAX_AMOUNT)  # per day; beyond it a Money could not even hold the figure


def _decimal(value: float, currency: str) -> Decimal:
    return Decimal(repr(value)).quantize(minor_unit(currency))


def _money(value: float, currency: str) -> Money:
    return Money(_decimal(value, currency), currency)


def _decimals(currency: str) -> int:
    return CURRENCY_DECIMALS[currency]
