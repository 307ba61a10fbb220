"""The experiments' maths (domain/experiment_analysis.py) on a few seeds: the schedule, the power
calculation, the randomisation p-value, the sequential test and the experimental elasticity.
bench/experiments.py measures the error rates over hundreds of runs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from domain.experiment_analysis import (FIXED, MSPRT, Period, analyse, balanced_schedule, elasticity_from_arms,
                                        plan_power, randomisation_p, truncated_msprt_p)


@given(arms=st.integers(2, 5), cycles=st.integers(2, 30), seed=st.integers(0, 2**31 - 1))
@settings(max_examples=40, deadline=None)
def test_every_cycle_holds_each_arm_once_and_the_seed_gives_the_schedule_back(arms, cycles, seed):
    schedule = balanced_schedule(arms, cycles, seed)
    assert len(schedule) == arms * cycles
    assert all(sorted(schedule[c * arms:(c + 1) * arms]) == list(range(arms)) for c in range(cycles))
    assert balanced_schedule(arms, cycles, seed) == schedule


def test_a_smaller_effect_or_more_noise_needs_more_cycles_and_the_promise_meets_the_ask():
    rng = np.random.default_rng(1)
    quiet, noisy = list(rng.poisson(50, 56).astype(float)), list(rng.poisson(5, 56).astype(float))
    big, small = plan_power(quiet, 24, 0, 2, 0.2, 0.05, 0.8), plan_power(quiet, 24, 0, 2, 0.05, 0.05, 0.8)
    assert big.cycles < small.cycles
    assert plan_power(noisy, 24, 0, 2, 0.2, 0.05, 0.8).cycles > big.cycles
    assert all(p.promised_power >= 0.8 for p in (big, small))
    assert plan_power(quiet, 24, 12, 2, 0.2, 0.05, 0.8).cycles > big.cycles  # the burn-in reads less of each period
    assert plan_power(quiet, 24, 0, 3, 0.2, 0.05, 0.8).alpha == pytest.approx(0.025)  # Bonferroni over two arms


@pytest.mark.parametrize("d, expected", [
    (np.array([1.0, 1.0, 1.0, 1.0]), 2 / 16),       # only all-plus and all-minus reach |mean| 1
    (np.array([1.0, -1.0, 1.0, -1.0]), 1.0),        # mean 0: every re-randomisation is as extreme
    (np.array([3.0, 1.0, 1.0]), 2 / 8),             # |sum| 5 only by +++ and ---; ++- makes 3
])
def test_the_randomisation_p_value_is_the_exact_share_of_sign_flips_as_extreme(d, expected):
    assert randomisation_p(d) == pytest.approx(expected)


def _aa_periods(seed: int, cycles: int, mean: float = 30.0) -> list[Period]:
    rng = np.random.default_rng(seed)
    schedule = balanced_schedule(2, cycles, seed)
    return [Period(i, a, float(rng.poisson(mean))) for i, a in enumerate(schedule)]


def test_the_fixed_horizon_gives_no_verdict_before_the_planned_cycles():
    plan = plan_power([30.0 + (i % 5) for i in range(56)], 24, 0, 2, 0.1, 0.05, 0.8)
    early = analyse(_aa_periods(3, 4), 2, plan, FIXED)
    assert not early.verdict_allowed and early.arms[0].significant is None
    assert "no verdict before the planned horizon" in early.verdict
    full = analyse(_aa_periods(3, plan.cycles), 2, plan, FIXED)
    assert full.verdict_allowed and full.arms[0].significant is not None
    assert full.arms[0].low < full.arms[0].effect < full.arms[0].high


def test_a_paused_period_leaves_its_cycle_out():
    plan = plan_power([30.0 + (i % 5) for i in range(56)], 24, 0, 2, 0.1, 0.05, 0.8)
    periods = _aa_periods(4, 6)
    assert analyse(periods[:-1], 2, plan).cycles_complete == 5


def test_a_real_effect_is_found_and_its_interval_holds_it():
    rng = np.random.default_rng(10)
    plan = plan_power(list(rng.poisson(30, 56).astype(float)), 24, 0, 2, 0.2, 0.05, 0.9)
    schedule = balanced_schedule(2, plan.cycles, 10)
    periods = [Period(i, a, float(rng.poisson(30 * (1.2 if a else 1.0)))) for i, a in enumerate(schedule)]
    for mode in (FIXED, MSPRT):
        found = analyse(periods, 2, plan, mode, seed=10).arms[0]
        assert found.significant and found.low <= 6.0 <= found.high, (mode, found)


def test_the_sequential_p_value_never_falls_when_the_evidence_is_null_and_flat():
    d = np.zeros(10)
    assert truncated_msprt_p(d, 1.0, 0.5, 20) == 1.0


def test_a_few_aa_seeds_mostly_find_nothing():
    plan = plan_power([30.0 + (i % 7) for i in range(56)], 24, 0, 2, 0.15, 0.05, 0.8)
    significant = [analyse(_aa_periods(seed, plan.cycles), 2, plan, FIXED, seed=seed).arms[0].significant
                   for seed in range(20)]
    assert sum(significant) <= 4  # 5 % expected: 4 of 20 has probability < 2 %


def test_cuped_removes_what_the_covariate_explains():
    rng = np.random.default_rng(9)
    schedule = balanced_schedule(2, 30, 9)
    weekday = rng.normal(0, 10, len(schedule))
    periods = [Period(i, a, 50 + weekday[i] + rng.normal(0, 1), 50 + weekday[i]) for i, a in enumerate(schedule)]
    plan = plan_power([50.0 + (i % 7) for i in range(56)], 24, 0, 2, 0.1, 0.05, 0.8)
    plain, adjusted = analyse(periods, 2, plan), analyse(periods, 2, plan, cuped=True)
    assert adjusted.cuped and adjusted.cuped_theta == pytest.approx(1.0, abs=0.1)
    assert adjusted.arms[0].high - adjusted.arms[0].low < (plain.arms[0].high - plain.arms[0].low) / 3


@pytest.mark.parametrize("truth", [-0.5, -2.0])
def test_the_experimental_elasticity_finds_the_true_one(truth):
    rng = np.random.default_rng(11)
    prices = [20.0, 24.0]
    units = np.array([[rng.poisson(40 * (p / 20) ** truth) for p in prices] for _ in range(60)], dtype=float)
    found = elasticity_from_arms(units, prices)
    assert found.low <= truth <= found.high and math.isclose(found.elasticity, truth, abs_tol=0.3)
    assert elasticity_from_arms(np.zeros((5, 2)), prices) is None


def test_a_short_switchback_has_an_interval_as_wide_as_its_four_cycles():
    # weekday effects, demand shocks and NB noise, one day per arm: the interval must still hold the
    # truth about 95% of the time (the bench runs thousands of these)
    weekday, truth, prices, covered = (0.95, 0.85, 0.85, 0.95, 1.05, 1.25, 1.10), -1.8, [18.0, 20.0, 22.0], []
    for seed in range(300):
        rng = np.random.default_rng(seed)
        units, day = np.zeros((4, 3)), 0
        for cycle in range(4):
            for arm in rng.permutation(3):
                mu = 6 * (prices[arm] / 20) ** truth * weekday[day % 7] * np.exp(rng.normal(0, 0.15))
                units[cycle, arm], day = rng.poisson(rng.gamma(2, mu / 2)), day + 1
        found = elasticity_from_arms(units, prices)
        if found is not None:
            covered.append(found.low <= truth <= found.high)
    assert len(covered) > 280 and 0.89 <= np.mean(covered) <= 0.99


@given(values=st.lists(st.floats(0, 100, allow_nan=False), min_size=8, max_size=40), shift=st.floats(-50, 50),
       seed=st.integers(0, 1000))
@settings(max_examples=60, deadline=None)
def test_a_shift_of_every_period_changes_no_effect_and_swapping_the_arms_only_its_sign(values, shift, seed):
    plan = plan_power([30.0 + (i % 5) for i in range(56)], 24, 0, 2, 0.1, 0.05, 0.8)
    schedule = balanced_schedule(2, len(values) // 2, seed)
    periods = [Period(i, a, v) for i, (a, v) in enumerate(zip(schedule, values))]
    base = analyse(periods, 2, plan, seed=seed).arms[0]
    shifted = analyse([Period(p.index, p.arm, p.value + shift) for p in periods], 2, plan, seed=seed).arms[0]
    swapped = analyse([Period(p.index, 1 - p.arm, p.value) for p in periods], 2, plan, seed=seed).arms[0]
    assert shifted.effect == pytest.approx(base.effect, abs=1e-6) and shifted.p_value == pytest.approx(base.p_value)
    assert swapped.effect == pytest.approx(-base.effect, abs=1e-9) and swapped.p_value == pytest.approx(base.p_value)
    assert 0 < base.p_value <= 1
