"""`python -m bench.elasticity`: how well the elasticity estimator finds a known truth, and how fast.

Calibration (bench/demand_shops.py): for each true elasticity -0.5, -1.5, -3 and each seed, one
60-day listing with 3 price levels, NB noise, weekday seasonality and zero-sale days; figures per
regime: the issue's realistic noise (3-20 units/day, NB alpha 0.3-1) and the volume at which the
+-0.15 target is reachable. Figures (pooled over the three truths, refusals excluded and counted):
- elasticity_abs_error_p90: the 90th percentile of |estimate - truth|
- within_015_share: the share of estimates within +-0.15 of the truth
- interval_coverage: the share of 95% intervals that hold the truth
- fits_per_s, cpu_ms_per_fit: estimate_listing() alone on one core (generation excluded)
--sweep prints coverage and error by days, price levels, spread and volume with no evidence
thresholds: where they break down is where EVIDENCE draws its lines.
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

from bench.demand_shops import HIGH_VOLUME, REALISTIC, ShopSpec, listing
from domain.demand.elasticity import Estimate, Evidence, Refusal, estimate_listing

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


def sweep(seeds: int) -> list[tuple[str, Calibration]]:
    """Coverage and error as the data thins out, with no thresholds (what EVIDENCE is chosen from)."""
    cells = []
    for days in (14, 21, 28, 42, 60):
        cells.append((f"days={days}", replace(REALISTIC, days=days)))
    for levels in (2, 3):
        cells.append((f"levels={levels} (60 days)", replace(REALISTIC, price_levels=levels)))
    for spread in (0.025, 0.05, 0.1):
        cells.append((f"spread=+-{spread:.0%} (60 days)", replace(REALISTIC, price_spread=spread)))
    for low, high in ((0.3, 1.0), (0.5, 1.0), (1.0, 2.0)):
        cells.append((f"units/day {low}-{high} (60 days)", replace(REALISTIC, mean_units=(low, high))))
    for low, high in ((0.3, 1.0),):
        cells.append((f"units/day {low}-{high}, 28 days", replace(REALISTIC, mean_units=(low, high), days=28)))
    for units, alpha in (((20.0, 40.0), (0.0, 0.05)), ((40.0, 80.0), (0.0, 0.02)), ((40.0, 80.0), (0.3, 1.0))):
        cells.append((f"units/day {units[0]:g}-{units[1]:g}, alpha {alpha[0]}-{alpha[1]}",
                      replace(REALISTIC, mean_units=units, dispersion=alpha)))
    cells.append(("high volume, spread +-35% (HIGH_VOLUME)", HIGH_VOLUME))
    return [(label, calibrate(spec, seeds, evidence=NO_THRESHOLDS)) for label, spec in cells]


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
        figures["sweep"] = {label: c.__dict__ for label, c in sweep(max(seeds // 2, 20))}
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
        print("sweep (no evidence thresholds; realistic noise unless stated):")
        for name, c in figures["sweep"].items():
            _row(name, c)
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
