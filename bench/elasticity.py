"""`python -m bench.elasticity`: how well the elasticity estimator finds a known truth, and how fast.

Calibration (bench/demand_shops.py): for each true elasticity -0.5, -1.5, -3 and each seed, one
60-day listing with 3 price levels, NB noise, weekday seasonality and zero-sale days; figures per
regime: the issue's realistic noise (3-20 units/day, NB alpha 0.3-1) and the volume at which the
+-0.15 target is reachable. Figures (pooled over the three truths, refusals excluded and counted):
- elasticity_abs_error_p90: the 90th percentile of |estimate - truth|
- within_015_share: the share of estimates within +-0.15 of the truth
- interval_coverage: the share of 95% intervals that hold the truth
- fits_per_s, cpu_ms_per_fit: estimate_listing() alone on one core (generation excluded)
--sweep fits random thin-to-rich listings with no thresholds and prints coverage and interval width
by days, units, sale days, price span and levels: where EVIDENCE draws its lines.
--retail runs the estimator over every product of the shared history (bench/retail_frames.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, replace

import numpy as np

from bench.demand_shops import HIGH_VOLUME, REALISTIC, ShopSpec, listing, listing_days
from domain.demand.elasticity import (EVIDENCE, Estimate, Evidence, Refusal, _price_levels, estimate_listing,
                                      listing_series)

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


def calibrate(spec: ShopSpec, seeds: int, truths=TRUTHS, evidence: Evidence | None = None,
              first_seed: int = 0) -> Calibration:
    errors, covered, widths, refused, cpu = [], [], [], 0, 0.0
    for index, truth in enumerate(truths):
        for seed in range(first_seed, first_seed + seeds):
            frame = listing(seed * len(truths) + index, truth, spec)
            started = time.process_time()
            result = estimate_listing(frame) if evidence is None else estimate_listing(frame, evidence)
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
        cpu_ms_per_fit=1000 * cpu / fits, fits_per_s=fits / cpu if cpu else nan)


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
            "interval_coverage": round(calibration.interval_coverage, 4),
            "fits_per_s": round(calibration.fits_per_s, 1)}


def regime_figures(seeds: int) -> dict:
    regimes = {"realistic (3-20 units/day, NB alpha 0.3-1, prices +-25%)": REALISTIC,
               "high volume (40-80 units/day, alpha <= 0.02, prices +-35%)": HIGH_VOLUME}
    return {name: calibrate(spec, seeds).__dict__ for name, spec in regimes.items()}


def run(seeds: int, with_sweep: bool, with_retail: bool, retail_path: str | None) -> dict:
    regimes = regime_figures(seeds)
    realistic = next(iter(regimes.values()))
    figures = {**headline(Calibration(**realistic)), "seeds_per_truth": seeds, "truths": list(TRUTHS),
               "cpu_ms_per_fit": round(realistic["cpu_ms_per_fit"], 3), "regimes": regimes}
    if with_sweep:
        figures["sweep"] = sweep(20 * seeds)
    if with_retail:
        from bench.elasticity_retail import retail_figures
        figures.update(retail_figures(retail_path))
    return figures


def report(figures: dict) -> None:
    print(f"elasticity calibration: {figures['seeds_per_truth']} seeds x truths {figures['truths']}, 60 days")
    print(f"  {'regime':<62} {'p90 |err|':>9} {'+-0.15':>7} {'cover95':>7} {'ci width':>8} {'refused':>7} {'ms/fit':>6}")
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
    if "retail_products" in figures:
        print(f"retail: {figures['retail_products']} products, {figures['retail_fits_per_s']} fits/s")
        print(f"  refused by reason: {json.dumps(figures['retail_refused_by_reason'])}")
        print(f"  elasticity quantiles: {json.dumps(figures['retail_elasticity_quantiles'])}")
        for key in ("retail_ci_width_quantiles", "retail_positive_share", "retail_significant_share"):
            if key in figures:
                print(f"  {key}: {json.dumps(figures[key])}")


def _row(name: str, c: dict) -> None:
    print(f"  {name:<62} {c['abs_error_p90']:>9.3f} {c['within_015_share']:>7.1%} {c['interval_coverage']:>7.1%} "
          f"{c['median_ci_width']:>8.2f} {c['refused']:>3}/{c['fits']:<4} {c['cpu_ms_per_fit']:>6.2f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.elasticity", description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=200, help="seeds per true elasticity (default 200)")
    p.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    p.add_argument("--sweep", action="store_true", help="also coverage/error as days, prices and volume thin out")
    p.add_argument("--retail", action="store_true", help="also every product of the shared history")
    p.add_argument("--retail-path", default=None, help="the parquet (default ../shared/data/online_retail.parquet)")
    args = p.parse_args(argv)
    figures = run(args.seeds, args.sweep, args.retail, args.retail_path)
    print(json.dumps(figures, indent=2)) if args.json else report(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
