"""Demand forecasts (domain/demand/forecast.py): synthetic series whose best model is known, the
refusal classes, properties that hold for any input, and the shared history's shop total, which
must beat seasonal-naive's MASE by at least 10% out of sample (bench/forecast.py measures more)."""

from __future__ import annotations

import math
from datetime import date, timedelta
from decimal import Decimal

import numpy as np
import pandas as pd
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from statsmodels.tsa.exponential_smoothing.ets import ETSModel

from conftest import finite_everywhere
from domain.demand.elasticity import Refusal
from domain.demand.forecast import (FIXED_ALPHA, FIXED_GAMMA, MAX_HORIZON, MIN_ACTIVE_DAYS, SEASON, Forecast,
                                    _fixed_ets_states, forecast)

START = date(2024, 1, 1)  # a Monday
WEEKLY = np.array([1.0, 1.1, 1.2, 1.3, 1.6, 0.5, 0.3])


def series(units, price=None, active=None, start=START) -> pl.DataFrame:
    n = len(units)
    prices = price if price is not None else [12.5] * n
    return pl.DataFrame({
        "day": [start + timedelta(days=i) for i in range(n)],
        "units": units,
        "revenue": [u * (p or 0.0) if u is not None else None for u, p in zip(units, prices)],
        "price": prices,
        "active": active if active is not None else [True] * n})


def seasonal_poisson(seed: int, days: int, level: float = 20.0) -> list[int]:
    rng = np.random.default_rng(seed)
    return rng.poisson(level * WEEKLY[np.arange(days) % SEASON]).tolist()



def held_out_mase(units: list[float], answer: Forecast, history: int) -> tuple[float, float]:
    """(served MASE, seasonal-naive MASE) on the days after `history`, scaled by the in-sample
    seasonal-naive error."""
    past, future = np.array(units[:history], float), np.array(units[history:history + answer.horizon], float)
    scale = np.mean(np.abs(past[SEASON:] - past[:-SEASON]))
    snaive = np.array([past[history - SEASON + h % SEASON] for h in range(answer.horizon)])
    served = np.array([p.units for p in answer.points])
    return np.mean(np.abs(served - future)) / scale, np.mean(np.abs(snaive - future)) / scale


# -- synthetic series whose answer is known ---------------------------------------------------------
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_noisy_weekly_series_beats_seasonal_naive_and_intervals_cover(seed):
    # Poisson noise around a fixed weekly profile: last week's value carries a week's noise twice
    units = seasonal_poisson(seed, 210)
    answer = forecast(series(units[:182]), 28)
    assert isinstance(answer, Forecast)
    served, snaive = held_out_mase(units, answer, 182)
    assert served <= snaive
    assert answer.mase_ratio_vs_snaive < 1
    truth = units[182:]
    covered = [p.units_95.lower <= y <= p.units_95.upper for p, y in zip(answer.points, truth)]
    assert sum(covered) >= 0.85 * len(truth)


def test_the_full_tier_scores_every_candidate_and_beats_seasonal_naive():
    units = seasonal_poisson(7, 210, level=80.0)
    answer = forecast(series(units[:182]), 28, effort="full")
    assert isinstance(answer, Forecast) and answer.tier == "full"
    assert [c.model for c in answer.candidates] == ["seasonal_naive", "ets_fixed", "ets", "sarimax"]
    assert all(c.mase is not None for c in answer.candidates)
    served, snaive = held_out_mase(units, answer, 182)
    assert served <= snaive


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_a_seasonal_random_walk_serves_seasonal_naive(seed):
    # each weekday wanders on its own: last week's value is the best forecast there is
    rng = np.random.default_rng(seed)
    steps = rng.normal(0, 12, size=210)
    units = [300.0 + 60 * WEEKLY[t % SEASON] for t in range(SEASON)]
    for t in range(SEASON, 210):
        units.append(units[t - SEASON] + steps[t])
    # light tier: ETSModel (full tier) can become seasonal-naive itself (gamma 1) and tie with it
    answer = forecast(series([round(u) for u in units]), 14, effort="light")
    assert isinstance(answer, Forecast)
    assert answer.model == "seasonal_naive"
    assert answer.mase_ratio_vs_snaive == 1.0


def test_the_fixed_ets_is_statsmodels_ets_at_those_parameters():
    filled = np.array(seasonal_poisson(5, 120), float)
    levels, seasonals, errors = _fixed_ets_states(filled)
    start = filled[:4 * SEASON]
    level = start.mean()
    season = np.array([start[k::SEASON].mean() for k in range(SEASON)]) - level
    model = ETSModel(pd.Series(filled), error="add", seasonal="add", seasonal_periods=SEASON,
                     initialization_method="known", initial_level=level, initial_seasonal=season)
    reference = model.smooth([FIXED_ALPHA, FIXED_GAMMA])
    np.testing.assert_allclose(filled - errors, np.asarray(reference.fittedvalues), rtol=1e-9, atol=1e-9)


# -- what the answer says ---------------------------------------------------------------------------
def test_revenue_is_units_times_the_price_assumed():
    units = seasonal_poisson(21, 120)
    current = forecast(series(units), 14)
    scenario = forecast(series(units), 14, future_price=20.0)
    assert current.unit_price == Decimal("12.50") and scenario.unit_price == Decimal("20.00")
    for point in scenario.points:
        assert abs(float(point.revenue) - 20.0 * point.units) <= 0.005 + 1e-9
        assert abs(float(point.revenue_95.upper) - 20.0 * point.units_95.upper) <= 0.005 + 1e-9
    assert any("do not respond to future_price" in note for note in scenario.notes)


def test_a_shop_closed_on_saturdays_forecasts_closed_saturdays():
    units = seasonal_poisson(31, 140)
    active = [(START + timedelta(days=i)).weekday() != 5 for i in range(140)]
    answer = forecast(series([u if a else 0 for u, a in zip(units, active)], active=active), 21)
    saturdays = [p for p in answer.points if p.day.weekday() == 5]
    assert len(saturdays) == 3
    assert all(p.closed and p.units == 0 and p.units_95.upper == 0 and p.revenue == 0 for p in saturdays)
    assert not any(p.closed for p in answer.points if p.day.weekday() != 5)
    assert any("Saturday" in note for note in answer.notes)


def test_missing_days_are_inactive_not_refused():
    units = seasonal_poisson(41, 120)
    frame = series(units).filter(pl.col("day").dt.day() != 15)
    answer = forecast(frame, 7)
    assert isinstance(answer, Forecast)
    assert answer.n_days == 120 and answer.n_active_days == 120 - 4


def test_amounts_follow_the_currency():
    answer = forecast(series(seasonal_poisson(51, 90)), 7, currency="JPY")
    assert all(p.revenue == p.revenue.to_integral_value() for p in answer.points)
    assert forecast(series(seasonal_poisson(51, 90)), 7, currency="XXX").field == "currency"


# -- refusals ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("horizon", [0, MAX_HORIZON + 1, -3, True, 2.5, "7"])
def test_horizon_outside_1_to_90_is_refused(horizon):
    answer = forecast(series(seasonal_poisson(1, 60)), horizon)
    assert isinstance(answer, Refusal) and answer.field == "horizon"


@pytest.mark.parametrize("horizon", [1, MAX_HORIZON])
def test_horizon_bounds_are_served(horizon):
    answer = forecast(series(seasonal_poisson(1, 120)), horizon)
    assert isinstance(answer, Forecast) and len(answer.points) == horizon


@pytest.mark.parametrize("price", [0.0, -2.0, math.nan, math.inf, "cheap"])
def test_a_future_price_that_is_not_a_price_is_refused(price):
    answer = forecast(series(seasonal_poisson(1, 60)), 7, future_price=price)
    assert isinstance(answer, Refusal) and answer.field == "future_price"


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 50), min_size=1, max_size=MIN_ACTIVE_DAYS - 1))
def test_too_short_is_refused(units):
    answer = forecast(series(units), 7)
    assert isinstance(answer, Refusal) and "too short" in answer.reason


@settings(max_examples=20, deadline=None)
@given(st.integers(MIN_ACTIVE_DAYS, 150))
def test_all_zeros_are_refused(days):
    answer = forecast(series([0] * days), 7)
    assert isinstance(answer, Refusal) and "no sales" in answer.reason


@settings(max_examples=20, deadline=None)
@given(st.integers(MIN_ACTIVE_DAYS, 150), st.integers(1, 500))
def test_constant_units_are_refused(days, level):
    answer = forecast(series([level] * days), 7)
    assert isinstance(answer, Refusal) and "week to week" in answer.reason


@settings(max_examples=20, deadline=None)
@given(st.integers(MIN_ACTIVE_DAYS, 120), st.data(), st.sampled_from([math.nan, math.inf, None]))
def test_a_non_finite_unit_on_an_active_day_is_refused(days, data, bad):
    units = [float(u) for u in seasonal_poisson(3, days)]
    units[data.draw(st.integers(0, days - 1))] = bad
    answer = forecast(series(units, price=[12.5] * days), 7)
    assert isinstance(answer, Refusal) and answer.field == "units"


@pytest.mark.parametrize("frame, field", [
    (pl.DataFrame({"day": [START], "units": [1]}), "revenue"),
    (pl.DataFrame({"day": ["2024-01-01"], "units": [1], "revenue": [1.0]}), "day"),
    (pl.DataFrame({"day": [START], "units": ["1"], "revenue": [1.0]}), "units"),
    (pl.DataFrame({"day": [START, START], "units": [1, 2], "revenue": [1.0, 2.0]}), "day"),
])
def test_malformed_frames_are_refused_naming_the_column(frame, field):
    answer = forecast(frame, 7)
    assert isinstance(answer, Refusal) and answer.field == field


# -- any input --------------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(-3, 400), min_size=MIN_ACTIVE_DAYS, max_size=100), st.data(),
       st.integers(1, MAX_HORIZON))
def test_any_series_gives_a_finite_non_negative_answer_or_a_refusal(units, data, horizon):
    n = len(units)
    active = data.draw(st.lists(st.booleans(), min_size=n, max_size=n)) if data.draw(st.booleans()) else None
    prices = data.draw(st.lists(st.one_of(st.none(), st.floats(0.5, 50)), min_size=n, max_size=n))
    answer = forecast(series(units, price=prices, active=active), horizon)
    if isinstance(answer, Refusal):
        assert answer.reason and answer.needs
        return
    assert finite_everywhere(answer) and len(answer.points) == horizon
    for p in answer.points:
        assert 0 <= p.units_95.lower <= p.units_80.lower <= p.units <= p.units_80.upper <= p.units_95.upper
        assert Decimal(0) <= p.revenue_95.lower <= p.revenue <= p.revenue_95.upper


# -- the shared shop history ------------------------------------------------------------------------
def test_the_shop_total_beats_seasonal_naive_by_ten_percent_out_of_sample():
    retail_frames = pytest.importorskip("bench.retail_frames")
    try:
        shop = retail_frames.retail_shop_daily()
    except FileNotFoundError as missing:
        pytest.skip(str(missing))
    from bench.forecast import rolling, summary
    # four origins a week apart; at each, forecast() sees only the days before it
    result = summary(rolling(shop, origins=4, horizon=28, effort="auto"))
    assert result["origins"] == 4 and result["refused"] == 0
    assert result["ratio"] <= 0.9


@settings(max_examples=4, deadline=None)
@given(st.lists(st.integers(0, 300), min_size=60, max_size=90), st.integers(1, MAX_HORIZON),
       st.one_of(st.none(), st.floats(0.5, 80)))
def test_the_full_tier_gives_a_finite_non_negative_answer_or_a_refusal(units, horizon, future_price):
    # statsmodels on arbitrary data: failures must become a next-best candidate or a refusal
    n = len(units)
    prices = [10.0 + (i // 20) % 3 for i in range(n)]
    answer = forecast(series(units, price=prices), horizon, future_price, effort="full")
    if isinstance(answer, Refusal):
        assert answer.reason and answer.needs
        return
    assert finite_everywhere(answer) and answer.tier == "full"
    assert all(0 <= p.units_95.lower <= p.units <= p.units_95.upper for p in answer.points)


def test_a_listing_off_sale_for_four_weeks_is_refused():
    units = seasonal_poisson(61, 140)
    active = [i < 105 for i in range(140)]
    answer = forecast(series([u if a else 0 for u, a in zip(units, active)], active=active), 14)
    assert isinstance(answer, Refusal) and "not on sale in the last 4 weeks" in answer.reason
