"""`python -m bench.experiments` (`etsypro bench experiments`): are the switchback analysis's
error rates what it says they are?

Each run simulates one listing: a pre-period of PRE_DAYS days (from which plan_power plans the
horizon, as creation does), then a balanced schedule of 1-day periods (burn-in 0), with Poisson
daily units, weekday seasonality and constant-elasticity demand, metric revenue per day.
- A/A (both arms the same price), >= 500 runs: the share of runs the fixed-horizon
  randomisation-inference test calls significant at alpha 0.05 (`aa_false_positive_rate`); the
  same under the mSPRT truncated at the planned horizon with a look after every period
  (`aa_false_positive_rate_msprt_peeking`; the untruncated always-valid 1/Lambda is conservative over a
  finite horizon: `aa_false_positive_rate_untruncated_msprt_peeking`);
  and, for contrast, the fixed-horizon t-test looked at after every complete cycle
  (`aa_false_positive_rate_naive_peeking`: what the fixed horizon forbids).
- A/B with a known true effect (arm 1 priced 10 % higher, elasticity -2: revenue per day changes
  by 1.1 * 1.1^-2 - 1 = -9.1 %): the share of 95 % intervals holding the true effect
  (`ab_coverage`), the share of runs significant at the horizon (`power`) against the power
  calculation's promise at that effect (`promised_power`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
from scipy import stats

from bench.options import market_options
from domain.experiment_analysis import (FIXED, Period, always_valid_p, analyse, balanced_schedule, mixing_variance, plan_power,
                                        truncated_msprt_p)

PRE_DAYS = 56
BASE_UNITS = 6.0          # units per day at the base price
BASE_PRICE = 20.0
ELASTICITY = -2.0
WEEKDAY = np.array([0.9, 0.95, 1.0, 1.0, 1.05, 1.15, 0.95])
ALPHA, POWER = 0.05, 0.8
AB_STEP = 0.10            # arm 1's price: 10 % above the control's
DEMAND_STREAM = 7


def true_revenue(price: float) -> float:
    """Expected revenue per day at `price` (weekdays averaged)."""
    return BASE_UNITS * (price / BASE_PRICE) ** ELASTICITY * price * float(WEEKDAY.mean())


def simulate_days(rng: np.random.Generator, prices: np.ndarray, start_weekday: int) -> np.ndarray:
    """Revenue of each day at its price."""
    weekdays = WEEKDAY[(start_weekday + np.arange(len(prices))) % 7]
    units = rng.poisson(BASE_UNITS * (prices / BASE_PRICE) ** ELASTICITY * weekdays)
    return units * prices


def one_run(seed: int, arm_prices: tuple[float, float], mde: float) -> dict:
    rng = np.random.default_rng([seed, DEMAND_STREAM])  # demand apart from the schedule's stream (default_rng(seed))
    pre = simulate_days(rng, np.full(PRE_DAYS, BASE_PRICE), 0)
    plan = plan_power(list(pre), 24, 0, 2, mde, ALPHA, POWER)
    schedule = balanced_schedule(2, plan.cycles, seed)
    values = simulate_days(rng, np.array([arm_prices[a] for a in schedule]), PRE_DAYS % 7)
    covariates = [float(pre[(PRE_DAYS + i) % 7::7].mean()) for i in range(len(schedule))]  # same weekday, pre-period
    periods = [Period(i, a, float(v), c) for i, (a, v, c) in enumerate(zip(schedule, values, covariates))]
    fixed = analyse(periods, 2, plan, FIXED, seed=seed)
    cuped = analyse(periods, 2, plan, FIXED, cuped=True, seed=seed)
    d = np.array([values[2 * c + schedule[2 * c:2 * c + 2].index(1)] - values[2 * c + schedule[2 * c:2 * c + 2].index(0)]
                  for c in range(plan.cycles)])
    return {"plan": plan, "fixed": fixed.arms[0], "cuped": cuped.arms[0],
            "msprt_peeking": _msprt_any_look(d, plan), "naive_peeking": _naive_any_look(d, plan.alpha),
            "always_valid": always_valid_p(d, 2 * plan.sd_period ** 2, mixing_variance(plan)) <= plan.alpha}


def _msprt_any_look(d: np.ndarray, plan) -> bool:
    """A look after every period: the always-valid p-value below alpha at any of them (it moves when a cycle completes)."""
    return truncated_msprt_p(d, 2 * plan.sd_period ** 2, mixing_variance(plan), plan.cycles) <= plan.alpha


def _naive_any_look(d: np.ndarray, alpha: float) -> bool:
    """The fixed-horizon t-test read after every complete cycle, stopping at the first 'significant'."""
    n = np.arange(1, len(d) + 1)
    mean = np.cumsum(d) / n
    variance = (np.cumsum(d * d) - n * mean ** 2) / np.maximum(n - 1, 1)
    looks = (n >= 2) & (variance > 0)
    t = np.abs(mean[looks]) / np.sqrt(variance[looks] / n[looks])
    return bool(np.any(2 * stats.t.sf(t, n[looks] - 1) <= alpha))


def aa(runs: int) -> dict:
    results = [one_run(seed, (BASE_PRICE, BASE_PRICE), 0.10) for seed in range(runs)]
    return {
        "aa_runs": runs,
        "aa_false_positive_rate": _share(r["fixed"].significant for r in results),
        "aa_false_positive_rate_cuped": _share(r["cuped"].significant for r in results),
        "aa_false_positive_rate_msprt_peeking": _share(r["msprt_peeking"] for r in results),
        "aa_false_positive_rate_untruncated_msprt_peeking": _share(r["always_valid"] for r in results),
        "aa_false_positive_rate_naive_peeking": _share(r["naive_peeking"] for r in results),
        "aa_cycles_median": float(np.median([r["plan"].cycles for r in results])),
    }


def ab(runs: int) -> dict:
    high = BASE_PRICE * (1 + AB_STEP)
    truth = true_revenue(high) - true_revenue(BASE_PRICE)
    relative = truth / true_revenue(BASE_PRICE)
    results = [one_run(10_000 + seed, (BASE_PRICE, high), abs(relative)) for seed in range(runs)]
    return {
        "ab_runs": runs,
        "ab_true_effect_per_day": truth,
        "ab_true_relative_effect": relative,
        "ab_coverage": _share(r["fixed"].low <= truth <= r["fixed"].high for r in results),
        "ab_coverage_cuped": _share(r["cuped"].low <= truth <= r["cuped"].high for r in results),
        "power": _share(r["fixed"].significant for r in results),
        "power_cuped": _share(r["cuped"].significant for r in results),
        "power_msprt_peeking": _share(r["msprt_peeking"] for r in results),
        "promised_power": float(np.mean([r["plan"].promised_power for r in results])),
        "ab_cycles_median": float(np.median([r["plan"].cycles for r in results])),
    }


def _share(flags) -> float:
    flags = [bool(f) for f in flags]
    return sum(flags) / len(flags)


def market(seeds: list[int], days: int, listings: int) -> dict:
    """The optimiser's shop alone through the engine (bench/simulate.py): its oracle ratio and speed."""
    from bench.options import OPTIMISER
    from bench.simulate import figures

    found = figures(days, listings, seeds, strategies=(OPTIMISER,))
    return {"optimizer_oracle_ratio": found["optimizer_oracle_ratio"],
            "optimizer_majority_at_90": found["optimizer_majority_at_90"],
            "simulated_days_per_s": found["simulated_days_per_s"], "market": found}


def main(args) -> int:
    started = time.perf_counter()
    figures = {**aa(args.aa_runs), **ab(args.ab_runs), "alpha": ALPHA, "seconds": 0.0}
    if args.market_seeds:
        figures |= market(args.market_seeds, args.market_days, args.market_listings)
    figures["seconds"] = round(time.perf_counter() - started, 1)
    if args.json:
        print(json.dumps(figures))
    else:
        for name, value in figures.items():
            if name != "market":
                print(f"{name:40s} {value:.4g}" if isinstance(value, float) else f"{name:40s} {value}")
    return 0


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench.experiments", description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true")
    p.add_argument("--aa-runs", type=int, default=1000)
    p.add_argument("--ab-runs", type=int, default=500)
    market_options(p)
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main(arguments()))
