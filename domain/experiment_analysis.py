"""The maths of switchback price experiments: the randomised balanced schedule, the power
calculation that plans the horizon, and the analysis of per-period metrics (effect per arm with a
95 % interval, a randomisation-inference p-value over the recorded scheme, optional CUPED, the
fixed-horizon rule or an always-valid mSPRT) and the experimental elasticity.

Pure functions over plain numbers: no I/O, no clock. The unit of analysis is a *cycle*: one
period of each arm in a random order (`balanced_schedule`); an arm's effect is the mean over
complete cycles of (arm's period metric - control's period metric in the same cycle), so slow
drifts and weekly patterns that span a cycle cancel.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import stats

FIXED, MSPRT = "fixed_horizon", "msprt"
MODES = (FIXED, MSPRT)
MIN_CYCLES = 2
MAX_CYCLES = 1000
ENUMERATE_UP_TO = 4096      # re-randomisations enumerated exactly up to this many, else drawn
DRAWS = 4000                # Monte Carlo re-randomisations when enumeration is too large
CONFIDENCE = 0.95
NULL_PATHS = 4000          # null paths calibrating the truncated mSPRT
NULL_PATHS_CHUNK = 500
# Random streams of the analysis, apart from the schedule's (default_rng(seed)): a reference
# distribution drawn from the stream that made the assignment would be tied to it.
REFERENCE_STREAM, NULL_PATHS_STREAM = 1, 2


@dataclass(frozen=True, slots=True)
class PowerPlan:
    """What the power calculation at creation promised, and what it stood on."""

    cycles: int              # planned cycles (the horizon: cycles x arms periods)
    baseline: float          # the metric's mean per day in the pre-period
    sd_period: float         # the per-period metric's standard deviation (per day of the period)
    mde: float               # minimum detectable effect, relative to the baseline (0.1 = 10 %)
    alpha: float             # per comparison, Bonferroni-adjusted over the arms
    power: float             # asked for
    promised_power: float    # what the planned cycles give at the mde (>= power unless capped)
    days_observed: int       # pre-period days the variance came from

    def as_dict(self) -> dict:
        return {f: getattr(self, f) for f in self.__slots__}


def balanced_schedule(arms: int, cycles: int, seed: int) -> tuple[int, ...]:
    """Arm index of each period: each cycle is a random permutation of the arms (block randomisation)."""
    rng = np.random.default_rng(seed)
    return tuple(int(a) for _ in range(cycles) for a in rng.permutation(arms))


def used_days(period_hours: int, burn_in_hours: int) -> float:
    """Days of each period that the analysis reads (the burn-in after each switch is dropped)."""
    return (period_hours - burn_in_hours) / 24


def plan_power(daily_metric: list[float], period_hours: int, burn_in_hours: int, arms: int, mde: float,
               alpha: float, power: float) -> PowerPlan:
    """The cycles needed to detect a relative change `mde` of the metric with `power` at `alpha`
    (two-sided, Bonferroni over the arms vs control), from the pre-period's daily variance: a
    period's metric per day over d used days has variance var_day / d, a cycle's difference twice that."""
    days = np.asarray(daily_metric, dtype=float)
    baseline, var_day = float(days.mean()), float(days.var(ddof=1))
    sd_period = math.sqrt(var_day / used_days(period_hours, burn_in_hours))
    delta = mde * baseline
    a = alpha / max(arms - 1, 1)
    sd_difference = sd_period * math.sqrt(2)
    # The normal approximation's n, then up by the t-test's own power (a few steps at most).
    z = stats.norm.ppf(1 - a / 2) + stats.norm.ppf(power)
    cycles = MIN_CYCLES if delta == 0 else min(MAX_CYCLES, max(MIN_CYCLES, math.ceil((z * sd_difference / delta) ** 2)))
    while cycles < MAX_CYCLES and paired_power(delta, sd_difference, cycles, a) < power:
        cycles += 1
    return PowerPlan(cycles, baseline, sd_period, mde, a, power, paired_power(delta, sd_difference, cycles, a), len(days))


def paired_power(delta: float, sd_difference: float, n: int, alpha: float) -> float:
    """Power of the two-sided t-test on n paired differences of sd `sd_difference` at true mean `delta`."""
    if sd_difference <= 0:
        return 1.0
    df = n - 1
    critical = stats.t.ppf(1 - alpha / 2, df)
    shift = delta / (sd_difference / math.sqrt(n))
    return float(stats.nct.sf(critical, df, shift) + stats.nct.cdf(-critical, df, shift))


# -- the analysis ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Period:
    """One period's observation: its index in the schedule, its arm, the metric per used day, and
    (CUPED) the same metric in the pre-period over the same weekdays."""

    index: int
    arm: int
    value: float
    covariate: float | None = None


@dataclass(frozen=True, slots=True)
class ArmEffect:
    arm: int
    effect: float             # metric per day, arm minus control
    relative: float | None    # effect / control mean
    low: float                # 95 % interval
    high: float
    p_value: float            # randomisation inference (fixed horizon) or always-valid (mSPRT)
    cycles: int
    significant: bool | None  # None: no verdict yet


@dataclass(frozen=True, slots=True)
class Analysis:
    mode: str
    cycles_complete: int
    cycles_planned: int
    verdict_allowed: bool
    verdict: str              # in words: what may be concluded now
    arms: tuple[ArmEffect, ...]
    cuped: bool
    cuped_theta: float | None
    randomisation: str        # how the p-value was computed
    control_mean: float


def cycle_matrix(periods: list[Period], arms: int, covariate: bool = False) -> np.ndarray:
    """cycles x arms of the values (or covariates) of complete cycles only (a paused period leaves its cycle out)."""
    found: dict[int, dict[int, float]] = {}
    for p in periods:
        found.setdefault(p.index // arms, {})[p.arm] = p.covariate if covariate else p.value
    rows = [[c[a] for a in range(arms)] for _, c in sorted(found.items()) if len(c) == arms]
    return np.asarray(rows, dtype=float).reshape(-1, arms)


def cuped_adjust(values: np.ndarray, covariates: np.ndarray) -> tuple[np.ndarray, float]:
    """values - theta (x - mean x), theta from the within-arm regression of values on the covariate."""
    y, x = values - values.mean(axis=0), covariates - covariates.mean(axis=0)
    denominator = float((x * x).sum())
    theta = float((x * y).sum() / denominator) if denominator > 0 else 0.0
    return values - theta * (covariates - covariates.mean()), theta


def analyse(periods: list[Period], arms: int, plan: PowerPlan, mode: str = FIXED, cuped: bool = False,
            seed: int = 0, msprt_variance: float | None = None) -> Analysis:
    """Effect per arm vs arm 0 over the complete cycles. Fixed horizon: a verdict only once the
    planned cycles are complete (p-values before that are shown but decide nothing). mSPRT: an
    always-valid p-value, a verdict whenever it falls below alpha."""
    values = cycle_matrix(periods, arms)
    theta = None
    use_cuped = cuped and len(values) >= 2 and all(p.covariate is not None for p in periods)
    if use_cuped:
        values, theta = cuped_adjust(values, cycle_matrix(periods, arms, covariate=True))
    n = len(values)
    allowed = mode == MSPRT or n >= plan.cycles
    control = float(values[:, 0].mean()) if n else 0.0
    effects = []
    for arm in range(1, arms):
        differences = values[:, arm] - values[:, 0]
        effects.append(_arm_effect(arm, differences, control, plan, mode, allowed, seed, msprt_variance))
    how = _randomisation_text(n)
    return Analysis(mode, n, plan.cycles, allowed, _verdict(mode, n, plan, effects), tuple(effects),
                    use_cuped, theta, how, control)


def _arm_effect(arm: int, d: np.ndarray, control: float, plan: PowerPlan, mode: str, allowed: bool, seed: int,
                msprt_variance: float | None) -> ArmEffect:
    n = len(d)
    if n < 2:
        return ArmEffect(arm, float(d.mean()) if n else 0.0, None, -math.inf, math.inf, 1.0, n, None)
    mean, se = float(d.mean()), float(d.std(ddof=1) / math.sqrt(n))
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * se
    if mode == MSPRT:
        variance = msprt_variance if msprt_variance is not None else 2 * plan.sd_period ** 2
        p = truncated_msprt_p(d, variance, mixing_variance(plan), plan.cycles, seed)
    else:
        p = randomisation_p(d, seed)
    relative = mean / control if control else None
    significant = (p <= plan.alpha) if allowed else None
    return ArmEffect(arm, mean, relative, mean - half, mean + half, p, n, significant)


def _verdict(mode: str, n: int, plan: PowerPlan, effects: list[ArmEffect]) -> str:
    if mode == FIXED and n < plan.cycles:
        return (f"no verdict before the planned horizon: {n} of {plan.cycles} cycles complete "
                f"(fixed horizon: looking earlier would inflate false positives)")
    winners = [e.arm for e in effects if e.significant]
    rule = "always-valid mSPRT p-value" if mode == MSPRT else "randomisation-inference p-value at the horizon"
    if not winners:
        return f"no arm differs from the control at alpha {plan.alpha:.4g} ({rule})"
    return f"arm(s) {', '.join(map(str, winners))} differ from the control at alpha {plan.alpha:.4g} ({rule})"


def _randomisation_text(n: int) -> str:
    # Within each cycle the two compared arms' labels swap with probability 1/2 under the scheme.
    if 2 ** n <= ENUMERATE_UP_TO:
        return f"exact: all {2 ** n} re-randomisations of the arms' places within the {n} cycles"
    return f"Monte Carlo: {DRAWS} re-randomisations of the arms' places within the {n} cycles, p = (1 + hits) / (1 + draws)"


def randomisation_p(d: np.ndarray, seed: int = 0) -> float:
    """Two-sided p-value of mean(d) under the sharp null, re-randomising the balanced scheme: in each
    cycle the two arms' labels swap with probability 1/2, which flips the sign of that cycle's
    difference. Enumerated exactly when 2^n is small, else drawn (the +1 rule keeps it valid)."""
    n, observed = len(d), abs(float(d.mean()))
    tolerance = 1e-12 * max(1.0, observed)
    if 2 ** n <= ENUMERATE_UP_TO:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
        return float(np.mean(np.abs(signs @ d / n) >= observed - tolerance))
    rng = np.random.default_rng([seed, REFERENCE_STREAM])  # not the schedule's own stream
    signs = rng.choice((1.0, -1.0), size=(DRAWS, n))
    hits = int(np.sum(np.abs(signs @ d / n) >= observed - tolerance))
    return (1 + hits) / (1 + DRAWS)


def mixing_variance(plan: PowerPlan) -> float:
    """tau^2 of the mSPRT's normal mixture: centred on effects of the size the design looks for."""
    return (plan.mde * plan.baseline) ** 2 or 2 * plan.sd_period ** 2


def msprt_statistics(d: np.ndarray, variance: float, tau2: float) -> np.ndarray:
    """The mixture likelihood ratio after each cycle, for differences of known `variance` (Johari et al.)."""
    n = np.arange(1, d.shape[-1] + 1)
    mean = np.cumsum(d, axis=-1) / n
    v = variance / n
    return np.sqrt(v / (v + tau2)) * np.exp(tau2 * mean ** 2 / (2 * v * (v + tau2)))


def always_valid_p(d: np.ndarray, variance: float, tau2: float) -> float:
    """min over looks of 1 / Lambda_n (capped at 1): valid however often and however long one looks,
    and conservative over a finite horizon (Ville's bound is reached only by looking forever)."""
    if len(d) == 0 or variance <= 0:
        return 1.0
    return float(min(1.0, 1.0 / np.max(msprt_statistics(d, variance, tau2))))


def truncated_msprt_p(d: np.ndarray, variance: float, tau2: float, horizon: int, seed: int = 0) -> float:
    """The mSPRT truncated at the planned horizon: the chance under the null that the mixture ratio's
    running maximum over `horizon` cycles reaches the maximum seen so far (null paths drawn, +1 rule).
    Valid at any look up to the horizon, and calibrated to alpha over it (the untruncated 1/Lambda is
    not: it keeps alpha in reserve for looks after the horizon)."""
    if len(d) == 0 or variance <= 0:
        return 1.0
    seen = float(np.max(msprt_statistics(d[:horizon], variance, tau2)))
    null_maxima = _null_maxima(horizon, round(tau2 / variance, 9), seed)
    return float((1 + np.sum(null_maxima >= seen * (1 - 1e-12))) / (1 + len(null_maxima)))


@lru_cache(maxsize=64)
def _null_maxima(horizon: int, ratio: float, seed: int) -> np.ndarray:
    """Running maxima of the mixture ratio over `horizon` cycles of standard normal differences."""
    rng = np.random.default_rng([seed, NULL_PATHS_STREAM])
    maxima = [np.max(msprt_statistics(rng.standard_normal((NULL_PATHS_CHUNK, horizon)), 1.0, ratio), axis=1)
              for _ in range(NULL_PATHS // NULL_PATHS_CHUNK)]
    return np.concatenate(maxima)


# -- the experimental elasticity -----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ExperimentalElasticity:
    elasticity: float
    low: float
    high: float
    cycles: int
    control_units: float      # units per day in the control arm (the demand models' baseline volume)
    control_log_se: float     # the standard error of its log


def elasticity_from_arms(units: np.ndarray, prices: list[float]) -> ExperimentalElasticity | None:
    """The elasticity read off the arms (cycles x arms of units per day): a Poisson regression of units
    on log price with a level per cycle, so a busy week moves every arm alike and only the contrast
    within cycles counts; the interval from how that contrast varies between cycles (cluster-robust
    by cycle) with Student t on cycles - 1 degrees of freedom: four cycles give a wide, honest
    interval. None when an arm sold nothing, the arms share one price, or fewer than two cycles sold."""
    n = len(units)
    logs_p = np.log(np.asarray(prices, dtype=float))
    means = units.mean(axis=0) if n else np.zeros(len(prices))
    if n < 2 or np.any(means <= 0) or np.ptp(logs_p) == 0:
        return None
    sold = units[units.sum(axis=1) > 0]      # a cycle without sales says nothing within itself
    cycles = len(sold)
    if cycles < 2:
        return None
    slope, se = _within_cycle_slope(sold, logs_p - logs_p.mean())
    if not (math.isfinite(slope) and math.isfinite(se)):
        return None
    t = float(stats.t.ppf(0.5 + CONFIDENCE / 2, cycles - 1))
    control_log_se = math.sqrt(max(units[:, 0].var(ddof=1) / n / means[0] ** 2, 1e-12))
    return ExperimentalElasticity(slope, slope - t * se, slope + t * se, n, float(means[0]), control_log_se)


def _within_cycle_slope(units: np.ndarray, centred_log_price: np.ndarray) -> tuple[float, float]:
    """Poisson fixed-effects slope and its cluster-robust standard error (by cycle, with the
    small-sample factor G/(G-1)). The cycle levels are profiled out: for a given slope each cycle's
    level is its total over its expected total, so only the slope is searched (Newton's method)."""
    x = np.broadcast_to(centred_log_price, units.shape)
    totals = units.sum(axis=1, keepdims=True)
    slope = 0.0
    for _ in range(50):
        weights = np.exp(slope * x)
        share = weights / weights.sum(axis=1, keepdims=True)
        expected = totals * share
        x_bar = (share * x).sum(axis=1, keepdims=True)
        score = float(((units - expected) * x).sum())
        information = float((totals * share * (x - x_bar) ** 2).sum())
        if information <= 0:
            return math.nan, math.nan
        step = score / information
        slope += step
        if abs(step) < 1e-10:
            break
    weights = np.exp(slope * x)
    share = weights / weights.sum(axis=1, keepdims=True)
    x_bar = (share * x).sum(axis=1, keepdims=True)
    cycle_scores = ((units - totals * share) * (x - x_bar)).sum(axis=1)
    information = float((totals * share * (x - x_bar) ** 2).sum())
    groups = len(units)
    variance = groups / (groups - 1) * float((cycle_scores ** 2).sum()) / information ** 2
    return slope, math.sqrt(variance)
