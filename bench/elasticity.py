"""`python -m bench.elasticity`: how well the elasticity estimator finds a known truth, and how fast.

Calibration (bench/demand_shops.py): for each true elasticity -0.5, -1.5, -3 and each seed, one
60-day listing with 3 price levels, NB noise, weekday seasonality and zero-sale days; figures per
regime: the issue's realistic noise (3-20 units/day, NB alpha 0.3-1) and the volume and noise at
which the +-0.15 target is reached (bench/demand_shops.py HIGH_VOLUME). Figures (pooled over the three truths, refusals excluded and counted):
- elasticity_abs_error_p90: the 90th percentile of |estimate - truth|
- within_015_share: the share of estimates within +-0.15 of the truth
- interval_coverage: the share of 95% intervals that hold the truth
- oracle_within_015_share: the most any unbiased estimator could reach: each listing's Cramer-Rao
  standard error (bench/demand_shops.py oracle_sd: the Fisher information of an oracle that knows the
  demand shocks and the dispersion) turned into P(|error| <= 0.15), averaged; oracle_sd_median its scale.
  At realistic noise NB2 information per day is capped at 1/alpha whatever the volume, so no estimator
  reaches the +-0.15 target in 60 days; HIGH_VOLUME is where the bound allows it
- fits_per_s, cpu_ms_per_fit: estimate_listing() alone on one core (generation excluded)
--sweep fits random thin-to-rich listings with no thresholds and prints coverage and interval width
by days, units, sale days, price span and levels: where EVIDENCE draws its lines.
pooling: shops mixing rich and thin listings around a common centre: the pooled slope's coverage and
the thin listings' errors before and after empirical-Bayes shrinkage.
--retail runs estimate_shop over every product of the shared history (bench/retail_frames.py):
elasticity quantiles, refusals by reason, products per CPU second.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, replace

import numpy as np
import polars as pl
from scipy import stats

from bench.demand_shops import HIGH_VOLUME, REALISTIC, ShopSpec, drawn, listing_days, oracle_sd
from domain.demand.elasticity import (EVIDENCE, Estimate, Evidence, Refusal, _price_levels, estimate_listing,
                                      estimate_shop, listing_series)

TRUTHS = (-0.5, -1.5, -3.0)
NO_THRESHOLDS = Evidence(min_days=1, min_distinct_prices=2, min_days_per_price=1, min_price_variation=0.0,
                         min_independent_variation=0.0, min_total_units=1, min_sale_days=1)


@dataclass(frozen=True)
class Calibration:
    fits: int
    refused: int
    abs_error_p90: float
    within_015_share: float
    interval_coverage: float
    median_ci_width: float
    cpu_ms_per_fit: float
    fits_per_s: float
    oracle_sd_median: float
    oracle_within_015_share: float


def calibrate(spec: ShopSpec, seeds: int, truths=TRUTHS, evidence: Evidence | None = None,
              first_seed: int = 0) -> Calibration:
    errors, covered, widths, refused, cpu, bounds = [], [], [], 0, 0.0, []
    for index, truth in enumerate(truths):
        for seed in range(first_seed, first_seed + seeds):
            listing = drawn(seed * len(truths) + index, truth, spec)
            bounds.append(oracle_sd(listing))
            started = time.process_time()
            result = estimate_listing(listing.frame, evidence or EVIDENCE)
            cpu += time.process_time() - started
            if isinstance(result, Refusal):
                refused += 1
                continue
            errors.append(abs(result.elasticity - truth))
            covered.append(result.ci95[0] <= truth <= result.ci95[1])
            widths.append(result.ci95[1] - result.ci95[0])
    fits = len(truths) * seeds
    nan = float("nan")
    return Calibration(
        fits=fits, refused=refused,
        abs_error_p90=float(np.percentile(errors, 90)) if errors else nan,
        within_015_share=float(np.mean(np.array(errors) <= 0.15)) if errors else nan,
        interval_coverage=float(np.mean(covered)) if covered else nan,
        median_ci_width=float(np.median(widths)) if widths else nan,
        cpu_ms_per_fit=1000 * cpu / fits, fits_per_s=fits / cpu if cpu else nan,
        oracle_sd_median=float(np.median(bounds)),
        oracle_within_015_share=float(np.mean([2 * stats.norm.cdf(0.15 / sd) - 1 for sd in bounds])))


SWEEP_BUCKETS = {
    "days": (10, 14, 21, 28, 42, 61),
    "total_units": (0, 5, 10, 20, 30, 50, 100, 1e9),
    "sale_days": (0, 3, 5, 10, 15, 30, 61),
    "price_variation": (0, 0.03, 0.05, 0.1, 0.2, 1.0),
    "price_levels": (1, 2, 3, 4),
}


def sweep(listings: int, seed: int = 1) -> dict[str, dict[str, dict]]:
    """Random thin-to-rich listings (10-60 days, 0.05-20 units/day, +-1-35% prices, 2-3 levels) fitted
    with no thresholds, bucketed by what EVIDENCE can see: coverage and interval width per bucket."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(listings):
        low = float(np.exp(rng.uniform(np.log(0.05), np.log(20.0))))
        spec = replace(REALISTIC, days=int(rng.integers(10, 61)), mean_units=(low, 1.5 * low),
                       price_spread=float(rng.uniform(0.01, 0.35)), price_levels=int(rng.integers(2, 4)))
        truth = float(rng.choice(TRUTHS))
        frame = listing_days(rng, truth, spec)
        series = listing_series(frame)
        result = estimate_listing(frame, NO_THRESHOLDS)
        seen = {"days": len(series.units), "total_units": float(series.units.sum()),
                "sale_days": int((series.units > 0).sum()),
                "price_variation": float(np.ptp(series.price) / np.median(series.price)) if len(series.units) else 0.0,
                "price_levels": _price_levels(series.price, EVIDENCE.min_days_per_price)}
        fitted = isinstance(result, Estimate)
        rows.append((seen, fitted and result.ci95[0] <= truth <= result.ci95[1],
                     result.ci95[1] - result.ci95[0] if fitted else None))
    return {name: _bucketed(rows, name, edges) for name, edges in SWEEP_BUCKETS.items()}


def _bucketed(rows, name: str, edges) -> dict[str, dict]:
    table = {}
    for low, high in zip(edges[:-1], edges[1:]):
        inside = [(covered, width) for seen, covered, width in rows if low <= seen[name] < high]
        fitted = [(covered, width) for covered, width in inside if width is not None]
        if inside:
            table[f"[{low:g}, {high:g})"] = {
                "listings": len(inside), "not_fitted": len(inside) - len(fitted),
                "coverage": round(float(np.mean([c for c, _ in fitted])), 3) if fitted else None,
                "median_ci_width": round(float(np.median([w for _, w in fitted])), 2) if fitted else None}
    return table


def headline(calibration: Calibration) -> dict:
    return {"elasticity_abs_error_p90": round(calibration.abs_error_p90, 4),
            "within_015_share": round(calibration.within_015_share, 4),
            "oracle_within_015_share": round(calibration.oracle_within_015_share, 4),
            "interval_coverage": round(calibration.interval_coverage, 4),
            "fits_per_s": round(calibration.fits_per_s, 1)}


def regime_figures(seeds: int, first_seed: int = 0) -> dict:
    regimes = {"realistic (3-20 units/day, NB alpha 0.3-1, prices +-25%)": REALISTIC,
               "high volume (80-160 units/day, alpha <= 0.02, prices +-35%)": HIGH_VOLUME}
    return {name: calibrate(spec, seeds, first_seed=first_seed).__dict__ for name, spec in regimes.items()}


def run(seeds: int, with_sweep: bool, with_retail: bool, retail_path: str | None, first_seed: int = 0) -> dict:
    regimes = regime_figures(seeds, first_seed)
    realistic = next(iter(regimes.values()))
    figures = {**headline(Calibration(**realistic)), "seeds_per_truth": seeds, "truths": list(TRUTHS),
               "cpu_ms_per_fit": round(realistic["cpu_ms_per_fit"], 3), "regimes": regimes}
    if with_sweep:
        figures["sweep"] = sweep(20 * seeds)
    figures["pooling"] = pooling_figures(max(seeds // 2, 10), first_seed)
    if with_retail:
        figures.update(retail_figures(retail_path))
    return figures


def pooling_figures(shops: int, first_seed: int = 0) -> dict:
    """Shops of 4 realistic and 8 thin listings (42 days, 0.5-3 units/day, 2 prices), true elasticities
    spread N(centre, 0.3) around -0.5, -1.5 or -3: the pooled slope's coverage of the centre, and the
    thin listings' errors before and after shrinking, with the shrunk intervals' coverage."""
    thin = replace(REALISTIC, days=42, mean_units=(0.5, 3.0), price_levels=2)
    pooled_covered, own_errors, shrunk_errors, shrunk_covered = [], [], [], []
    for seed in range(shops):
        rng = np.random.default_rng(10_000 + first_seed + seed)
        centre = float(rng.choice(TRUTHS))
        truths = centre + rng.normal(0.0, 0.3, 12)
        frames = [listing_days(rng, t, REALISTIC if i < 4 else thin, listing_id=f"l{i:02d}") for i, t in enumerate(truths)]
        answers = estimate_shop(pl.concat(frames))
        if isinstance(answers.pooled, Estimate):
            pooled_covered.append(answers.pooled.ci95[0] <= centre <= answers.pooled.ci95[1])
        for i, truth in enumerate(truths):
            answer = answers.listings[f"l{i:02d}"]
            if isinstance(answer, Estimate) and answer.own_weight is not None:
                own_errors.append(abs(answer.own_elasticity - truth))
                shrunk_errors.append(abs(answer.elasticity - truth))
                shrunk_covered.append(answer.ci95[0] <= truth <= answer.ci95[1])
    return {"shops": shops, "pooled_coverage_of_centre": _share(pooled_covered),
            "thin_listings_shrunk": len(shrunk_errors),
            "thin_own_abs_error_median": _quantile(own_errors, 50), "thin_own_abs_error_p90": _quantile(own_errors, 90),
            "thin_shrunk_abs_error_median": _quantile(shrunk_errors, 50),
            "thin_shrunk_abs_error_p90": _quantile(shrunk_errors, 90), "thin_shrunk_coverage": _share(shrunk_covered)}


def retail_figures(path: str | None) -> dict:
    """Every product of the shared history through estimate_shop: own estimates, shrunk ones, refusals."""
    from bench.retail_frames import DEFAULT_PATH, retail_daily

    frame = retail_daily(path or DEFAULT_PATH)
    started, wall = time.process_time(), time.perf_counter()
    answers = estimate_shop(frame)
    cpu, wall = time.process_time() - started, time.perf_counter() - wall
    own = [a for a in answers.listings.values() if isinstance(a, Estimate) and a.own_weight is None]
    shrunk = [a for a in answers.listings.values() if isinstance(a, Estimate) and a.own_weight is not None]
    refused = Counter(re.sub(r"-?\d+(\.\d+)?", "N", a.reason)
                      for a in answers.listings.values() if isinstance(a, Refusal))
    products = len(answers.listings)
    pooled = answers.pooled
    return {
        "retail_products": products, "retail_own_estimates": len(own), "retail_shrunk_estimates": len(shrunk),
        "retail_refused": sum(refused.values()), "retail_refused_by_reason": dict(refused.most_common()),
        "retail_elasticity_quantiles": {f"p{q}": _quantile([a.elasticity for a in own], q) for q in (5, 10, 25, 50, 75, 90, 95)},
        "retail_shrunk_elasticity_quantiles": {f"p{q}": _quantile([a.elasticity for a in shrunk], q) for q in (10, 50, 90)},
        "retail_ci_width_quantiles": {f"p{q}": _quantile([a.ci95[1] - a.ci95[0] for a in own], q) for q in (10, 50, 90)},
        "retail_negative_and_significant_share": _share([a.ci95[1] < 0 for a in own]),
        "retail_positive_share": _share([a.elasticity > 0 for a in own]),
        "retail_family_counts": dict(Counter(a.family for a in own)),
        "retail_pooled": ({"elasticity": round(pooled.elasticity, 3), "ci95": [round(v, 3) for v in pooled.ci95],
                           "between_listing_sd": round(answers.between_listing_sd or 0.0, 3)}
                          if isinstance(pooled, Estimate) else {"refused": pooled.reason}),
        "retail_fits_per_s": round(products / cpu, 1), "retail_cpu_s": round(cpu, 2), "retail_wall_s": round(wall, 2)}


def _quantile(values, q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if len(values) else None


def _share(flags) -> float | None:
    return round(float(np.mean(flags)), 4) if len(flags) else None


def report(figures: dict) -> None:
    print(f"elasticity calibration: {figures['seeds_per_truth']} seeds x truths {figures['truths']}, 60 days")
    print(f"  {'regime':<62} {'p90 |err|':>9} {'+-0.15':>7} {'bound':>7} {'cover95':>7} {'ci width':>8} "
          f"{'refused':>7} {'ms/fit':>6}")
    for name, c in figures["regimes"].items():
        _row(name, c)
    if "sweep" in figures:
        print("sweep: random listings fitted with no thresholds, by what the evidence thresholds see")
        for name, buckets in figures["sweep"].items():
            print(f"  {name}")
            for bucket, b in buckets.items():
                print(f"    {bucket:<14} listings {b['listings']:>5}  not fitted {b['not_fitted']:>4}  "
                      f"coverage {b['coverage']}  median 95% width {b['median_ci_width']}")
    print(f"headline (realistic): abs-error p90 {figures['elasticity_abs_error_p90']}, within +-0.15 "
          f"{figures['within_015_share']:.1%}, 95% coverage {figures['interval_coverage']:.1%}, "
          f"{figures['fits_per_s']} fits/s, {figures['cpu_ms_per_fit']} CPU ms per fit")
    print(f"pooling: {json.dumps(figures['pooling'])}")
    if "retail_products" in figures:
        print(f"retail: {figures['retail_products']} products, {figures['retail_fits_per_s']} products/s "
              f"(CPU {figures['retail_cpu_s']} s, wall {figures['retail_wall_s']} s)")
        for key, value in figures.items():
            if key.startswith("retail_") and key not in ("retail_products", "retail_fits_per_s", "retail_cpu_s",
                                                         "retail_wall_s"):
                print(f"  {key}: {json.dumps(value)}")


def _row(name: str, c: dict) -> None:
    print(f"  {name:<62} {c['abs_error_p90']:>9.3f} {c['within_015_share']:>7.1%} {c['oracle_within_015_share']:>7.1%} "
          f"{c['interval_coverage']:>7.1%} "
          f"{c['median_ci_width']:>8.2f} {c['refused']:>3}/{c['fits']:<4} {c['cpu_ms_per_fit']:>6.2f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.elasticity", description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=200, help="seeds per true elasticity (default 200)")
    p.add_argument("--first-seed", type=int, default=0, help="start of the seed range (another set of shops)")
    p.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    p.add_argument("--sweep", action="store_true", help="also coverage/error as days, prices and volume thin out")
    p.add_argument("--retail", action="store_true", help="also every product of the shared history")
    p.add_argument("--retail-path", default=None, help="the parquet (default ../shared/data/online_retail.parquet)")
    args = p.parse_args(argv)
    figures = run(args.seeds, args.sweep, args.retail, args.retail_path, args.first_seed)
    print(json.dumps(figures, indent=2)) if args.json else report(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
