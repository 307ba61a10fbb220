"""Profit-optimal recommendations (domain/demand/recommend.py): table-driven cases on hand-made
estimates (known slope, interval and baseline), and properties that hold for any input."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from conftest import finite_everywhere
from domain.demand.elasticity import Baseline, Diagnostics, Estimate, Refusal
from domain.demand.recommend import DEFAULT_STEP_PERCENT, Recommendation, recommend
from domain.listing import Guardrails
from domain.money import Money, minor_unit


def estimate(e: float, ci: tuple[float, float] | None = None, units: float = 10.0, reference: float = 20.0,
             baseline: bool = True) -> Estimate:
    low, high = ci or (e - 0.2, e + 0.2)
    return Estimate(
        elasticity=e, ci95=(low, high), se=(high - low) / 3.92, n_days=60, distinct_prices=3,
        price_range=(reference * 0.8, reference * 1.2), total_units=units * 60, method="test", family="Poisson",
        controls=(), diagnostics=Diagnostics(0.0, 1.0, None, True, 5, "test", 0, 0, 0, 0.1),
        baseline=Baseline(reference, units, 0.05, 0.0) if baseline else None)


def gbp(amount: str) -> Money:
    return Money(Decimal(amount), "GBP")


# (case, estimate, current price, guardrails, currency, expected price, expected moved, a reason fragment)
CASES = [
    ("ceiling binds before the step", estimate(-0.5), "20.00",
     Guardrails(ceiling=gbp("21.00"), max_step_percent=Decimal(20)), "GBP", "21.00", True, "ceiling"),
    ("max step caps a far optimum", estimate(-1.5), "20.00",
     Guardrails(cost=gbp("15.00"), max_step_percent=Decimal(5)), "GBP", "21.00", True, "within 5%"),
    ("profit optimum inside the step is taken", estimate(-3.0), "20.00",
     Guardrails(cost=gbp("12.00"), max_step_percent=Decimal(20)), "GBP", "18.00", True, "cost * e / (1 + e)"),
    ("inelastic: one default step up, never the ceiling", estimate(-0.4), "20.00",
     Guardrails(ceiling=gbp("100.00")), "GBP", "22.00", True, "inelastic"),
    ("pessimistic end loses: hold", estimate(-1.5, ci=(-3.5, 0.2)), "20.00",
     Guardrails(cost=gbp("10.00"), max_step_percent=Decimal(50)), "GBP", "20.00", False, "pessimistic end"),
    ("cost unknown: revenue, elastic goes down", estimate(-2.0), "20.00",
     Guardrails(max_step_percent=Decimal(10)), "GBP", "18.00", True, "no cost"),
    ("margin floor stops the cut", estimate(-3.0), "21.00",
     Guardrails(cost=gbp("10.00"), min_margin=Decimal(50), max_step_percent=Decimal(10)), "GBP", "20.00", True,
     "margin"),
    ("rounded to the minor unit, inward", estimate(-0.5), "9.99",
     Guardrails(max_step_percent=Decimal(7)), "GBP", "10.68", True, "10.68"),
    ("JPY has no minor digits", estimate(-0.5, reference=1500.0), "1499",
     Guardrails(max_step_percent=Decimal(3)), "JPY", "1543", True, "1543"),
    ("already at the floor: hold", estimate(-2.0), "20.00",
     Guardrails(floor=gbp("20.00")), "GBP", "20.00", False, "hold"),
    ("outside the guardrails: the nearest bound", estimate(-2.0), "30.00",
     Guardrails(ceiling=gbp("25.00"), max_step_percent=Decimal(5)), "GBP", "25.00", True, "outside the guardrails"),
]


@pytest.mark.parametrize("case, est, current, guardrails, currency, price, moved, reason", CASES,
                         ids=[c[0] for c in CASES])
def test_recommendation_table(case, est, current, guardrails, currency, price, moved, reason):
    answer = recommend(est, Decimal(current), guardrails, currency)
    assert isinstance(answer, Recommendation), answer
    assert answer.price == Money(Decimal(price), currency)
    assert answer.moved is moved
    assert any(reason in r for r in answer.reasons), answer.reasons
    assert answer.estimate is est
    assert answer.price.amount == answer.price.amount.quantize(minor_unit(currency))


def test_a_move_that_fails_at_the_pessimistic_end_is_shortened_not_dropped():
    # point optimum 3 * cost = 30; at the interval's elastic end (-1.8) profit peaks at 22.50 and
    # falls back to its level at 20.00 near 25.6: beyond that the move would lose there
    answer = recommend(estimate(-1.5, ci=(-1.8, -0.6)), Decimal("20.00"),
                       Guardrails(cost=gbp("10.00"), max_step_percent=Decimal(50)), "GBP")
    assert answer.moved and Decimal("22.50") < answer.price.amount < Decimal("25.70")
    assert any("shortened" in r for r in answer.reasons)
    assert answer.pessimistic_gain_per_day.amount > 0


def test_profit_and_revenue_outlooks():
    answer = recommend(estimate(-3.0), Decimal("20.00"), Guardrails(cost=gbp("12.00"), max_step_percent=Decimal(20)), "GBP")
    assert answer.objective == "profit"
    current = answer.current
    assert current.units_per_day.mean == pytest.approx(10.0)
    assert current.units_per_day.low < current.units_per_day.mean < current.units_per_day.high
    assert current.revenue_per_day.mean == gbp("200.00")
    assert current.profit_per_day.mean == gbp("80.00")
    assert answer.recommended.profit_per_day.mean.amount > current.profit_per_day.mean.amount
    assert answer.gain_per_day.amount == pytest.approx(
        answer.recommended.profit_per_day.mean.amount - current.profit_per_day.mean.amount, abs=Decimal("0.02"))
    revenue_only = recommend(estimate(-3.0), Decimal("20.00"), Guardrails(), "GBP")
    assert revenue_only.objective == "revenue (no cost known)" and revenue_only.current.profit_per_day is None


REFUSALS = [
    ("a refusal passes through", Refusal("no sales", "sales"), "20.00", Guardrails(), "GBP", None),
    ("a pooled estimate has no volume", estimate(-1.5, baseline=False), "20.00", Guardrails(), "GBP", "estimate"),
    ("guardrails in another currency", estimate(-1.5), "20.00", Guardrails(cost=Money(Decimal("5"), "EUR")), "GBP",
     "cost"),
    ("unknown currency", estimate(-1.5), "20.00", Guardrails(), "XXX", "currency"),
    ("zero price", estimate(-1.5), "0", Guardrails(), "GBP", "current_price"),
    ("NaN price", estimate(-1.5), "NaN", Guardrails(), "GBP", "current_price"),
    ("more decimals than the currency", estimate(-1.5), "9.999", Guardrails(), "GBP", "current_price"),
    ("JPY with decimals", estimate(-1.5), "1500.5", Guardrails(), "JPY", "current_price"),
]


@pytest.mark.parametrize("case, est, current, guardrails, currency, field", REFUSALS, ids=[c[0] for c in REFUSALS])
def test_refusals(case, est, current, guardrails, currency, field):
    answer = recommend(est, Decimal(current), guardrails, currency)
    assert isinstance(answer, Refusal) and answer.field == field and answer.needs



@settings(max_examples=150, deadline=None)
@given(e=st.floats(-6, 1), width=st.floats(0.01, 4), units=st.floats(0.01, 500),
       current=st.decimals(Decimal("0.50"), Decimal("500"), places=2),
       cost_share=st.none() | st.floats(0, 1.2), step=st.none() | st.integers(1, 100),
       ceiling_share=st.none() | st.floats(0.5, 3))
@example(e=-6.0, width=4.0, units=36.0, current=Decimal("4.41"), cost_share=None, step=100, ceiling_share=None)
def test_any_recommendation_respects_guardrails_step_and_the_pessimistic_end(e, width, units, current, cost_share,
                                                                              step, ceiling_share):
    cost = gbp(str((current * Decimal(repr(cost_share))).quantize(Decimal("0.01")))) if cost_share is not None else None
    ceiling = gbp(str((current * Decimal(repr(ceiling_share))).quantize(Decimal("0.01")))) if ceiling_share else None
    guardrails = Guardrails(cost=cost, ceiling=ceiling, max_step_percent=Decimal(step) if step else None)
    answer = recommend(estimate(e, ci=(e - width, e + width), units=units, reference=float(current)), current,
                       guardrails, "GBP")
    if isinstance(answer, Refusal):  # only a slope extrapolated to absurd amounts may refuse
        assert answer.field == "price" and "beyond any plausible amount" in answer.reason, answer
        return
    assert isinstance(answer, Recommendation)
    assert finite_everywhere(answer)
    price = answer.price.amount
    assert price == price.quantize(Decimal("0.01")) and price > 0
    if ceiling is not None:
        assert price <= ceiling.amount
    limit = (Decimal(step) if step else DEFAULT_STEP_PERCENT) / 100
    if ceiling is None or ceiling.amount >= current:
        assert abs(price - current) <= current * limit + Decimal("0.01")
    if answer.moved and (ceiling is None or current <= ceiling.amount):
        assert answer.pessimistic_gain_per_day.amount >= 0
