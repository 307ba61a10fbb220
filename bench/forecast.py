"""`python -m bench.forecast [--json] [--top N] [--workers W]`: demand forecasts on the shared shop
history (../shared/data/online_retail.parquet), judged against seasonal-naive by rolling origin.

- forecast_mase_vs_snaive: the shop's daily units (all products). At each outer origin (7 days
  apart) forecast() sees only the days before it (it runs its own inner backtest to choose a
  model) and forecasts `horizon` days; MASE = mean absolute error on active days over the
  in-sample seasonal-naive error (lag 7) before the origin. The figure is the served model's mean
  MASE over the origins divided by seasonal-naive's: below 0.9 beats it by 10%. Also per horizon.
- forecast_mase_top100_median_ratio: the same ratio per product for the top N products by units
  (fewer outer origins), tier chosen as in production ("auto", or --effort); the median over products.
- per candidate: how often each model was served, and each candidate's inner-backtest MASE ratio
  (what the choice saw), averaged over origins.
Parts can be run alone (--only shop|top|refresh). The MASE figures are deterministic; the times
are not (run several times).
- forecast_listings_per_s: every product of the history forecast 28 days ahead (tier "auto") on
  one core: listings per CPU second; CPU ms per listing by tier; the whole shop's CPU seconds and,
  with --workers W, the wall seconds with W processes. Runs with OPENBLAS_NUM_THREADS=1 unless
  set otherwise: a refresh must run so too (threaded BLAS multiplies the full tier's CPU).
A benchmark never asserts its figures; it measures and prints them.
"""

from __future__ import annotations

import os

# One BLAS thread per process: statsmodels' matrices are tiny, so extra OpenBLAS threads only spin
# (and two workers on two cores fight). Must be set before numpy loads; an explicit setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import multiprocessing  # noqa: E402
import time  # noqa: E402
from collections import Counter, defaultdict  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from bench.common import median, note, print_table, show  # noqa: E402
from bench.retail_frames import DEFAULT_PATH, retail_daily, retail_products, retail_shop_daily  # noqa: E402
from domain.demand.elasticity import Refusal  # noqa: E402
from domain.demand.forecast import Forecast, forecast  # noqa: E402

SEASON = 7


@dataclass(frozen=True)
class Sizes:
    top: int = 100               # products evaluated by rolling origin
    shop_origins: int = 8        # outer origins for the shop total
    product_origins: int = 4     # outer origins per product
    horizon: int = 28            # the headline horizon
    workers: int = 1             # processes for the whole-shop refresh
    effort: str = "auto"         # the top products' tier ("full" scores every candidate on each)


# -- the yardstick, written independently of the module --------------------------------------
def seasonal_naive(units: np.ndarray, active: np.ndarray, horizon: int) -> np.ndarray:
    """Each future day repeats the last active day of its weekday (0 if there is none)."""
    origin = len(units)
    out = np.zeros(horizon)
    for h in range(horizon):
        t = origin + h - SEASON * (h // SEASON + 1)
        while t >= 0 and not active[t]:
            t -= SEASON
        out[h] = units[t] if t >= 0 else 0.0
    return out


def scale(units: np.ndarray, active: np.ndarray) -> float:
    both = active[SEASON:] & active[:-SEASON]
    return float(np.mean(np.abs(units[SEASON:] - units[:-SEASON])[both]))


@dataclass(frozen=True)
class Outcome:
    served: float | None          # the served forecast's MASE (None: refused)
    snaive: float
    model: str | None
    candidates: dict[str, float]  # inner-backtest ratios
    refusal: str | None = None


def outer_origin(frame: pl.DataFrame, origin: int, horizon: int, effort: str) -> Outcome | None:
    """forecast() on the days before `origin`, scored on the `horizon` days after it."""
    past, future = frame.head(origin), frame.slice(origin, horizon)
    units, active = past["units"].cast(pl.Float64).to_numpy(), past["active"].to_numpy()
    truth, scored = future["units"].cast(pl.Float64).to_numpy(), future["active"].to_numpy()
    denominator = scale(units, active)
    if not scored.any() or not denominator > 0:
        return None
    snaive = float(np.mean(np.abs(seasonal_naive(units, active, horizon) - truth)[scored]) / denominator)
    answer = forecast(past, horizon, effort=effort)
    if isinstance(answer, Refusal):
        return Outcome(None, snaive, None, {}, answer.reason)
    mean = np.array([p.units for p in answer.points])
    served = float(np.mean(np.abs(mean - truth)[scored]) / denominator)
    ratios = {c.model: c.ratio_vs_snaive for c in answer.candidates if c.ratio_vs_snaive is not None}
    return Outcome(served, snaive, answer.model, ratios)


def rolling(frame: pl.DataFrame, origins: int, horizon: int, effort: str) -> list[Outcome]:
    n = frame.height
    found = [outer_origin(frame, n - horizon - SEASON * k, horizon, effort) for k in range(origins)]
    return [o for o in found if o is not None]


def summary(outcomes: list[Outcome]) -> dict:
    served = [o for o in outcomes if o.served is not None]
    if not served:
        return {"ratio": None, "origins": 0, "refused": len(outcomes)}
    ratio = np.mean([o.served for o in served]) / np.mean([o.snaive for o in served])
    inner = defaultdict(list)
    for o in served:
        for model, value in o.candidates.items():
            inner[model].append(value)
    return {"ratio": round(float(ratio), 4), "origins": len(served), "refused": len(outcomes) - len(served),
            "mase": round(float(np.mean([o.served for o in served])), 4),
            "snaive_mase": round(float(np.mean([o.snaive for o in served])), 4),
            "served": dict(Counter(o.model for o in served)),
            "inner_ratio": {m: round(float(np.mean(v)), 4) for m, v in inner.items()}}


# -- the measurements -------------------------------------------------------------------------
def measure_shop(path: str, sizes: Sizes) -> dict:
    shop = retail_shop_daily(path)
    by_horizon = {}
    for horizon in sorted({7, sizes.horizon, 90}):
        note(f"shop: horizon {horizon}")
        by_horizon[horizon] = summary(rolling(shop, sizes.shop_origins, horizon, "full"))
    headline = by_horizon[sizes.horizon]
    return {"forecast_mase_vs_snaive": headline["ratio"], "shop_days": shop.height,
            "shop": {str(h): v for h, v in by_horizon.items()}}


def measure_top(daily: pl.DataFrame, path: str, sizes: Sizes) -> dict:
    top = retail_products(path)["listing_id"].head(sizes.top).to_list()
    frames = daily.filter(pl.col("listing_id").is_in(top)).partition_by("listing_id", as_dict=True)
    ratios, served, inner, refused = [], Counter(), defaultdict(list), 0
    for i, listing in enumerate(top, 1):
        note(f"top products: {i}/{len(top)}")
        result = summary(rolling(frames[(listing,)].sort("day"), sizes.product_origins, sizes.horizon, sizes.effort))
        refused += result["refused"]
        if result["ratio"] is None:
            continue
        ratios.append(result["ratio"])
        served.update(result["served"])
        for model, value in result["inner_ratio"].items():
            inner[model].append(value)
    return {"forecast_mase_top100_median_ratio": round(median(ratios), 4) if ratios else None, "top_effort": sizes.effort,
            "top_products": len(ratios), "top_beating_snaive_share": round(float(np.mean(np.array(ratios) < 1)), 3),
            "top_ratio_p25_p75": [round(float(np.percentile(ratios, q)), 4) for q in (25, 75)],
            "top_served": dict(served), "top_refused_origins": refused,
            "top_inner_median_ratio": {m: round(median(v), 4) for m, v in inner.items()}}


def _refresh(frames: list[pl.DataFrame], horizon: int) -> list[tuple[str, float]]:
    """(tier or refusal, CPU seconds) per listing."""
    out = []
    for frame in frames:
        started = time.process_time()
        answer = forecast(frame, horizon)
        spent = time.process_time() - started
        out.append((answer.tier if isinstance(answer, Forecast) else f"refused: {answer.reason.split(':')[0]}", spent))
    return out


def measure_refresh(daily: pl.DataFrame, sizes: Sizes) -> dict:
    frames = [f.sort("day") for f in daily.partition_by("listing_id")]
    note(f"whole shop: {len(frames)} listings, {sizes.workers} worker(s)")
    started = time.perf_counter()
    if sizes.workers > 1:
        chunks = [frames[i::sizes.workers * 8] for i in range(sizes.workers * 8)]
        # spawn, not fork: a forked child of a process that ran polars' thread pool can hang
        with ProcessPoolExecutor(sizes.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            results = [r for part in pool.map(_refresh, chunks, [sizes.horizon] * len(chunks)) for r in part]
    else:
        results = _refresh(frames, sizes.horizon)
    wall = time.perf_counter() - started
    cpu = sum(spent for _, spent in results)
    by_tier = defaultdict(list)
    for tier, spent in results:
        by_tier[tier].append(spent)
    return {"forecast_listings_per_s": round(len(results) / cpu, 1), "listings": len(results),
            "refresh_cpu_s": round(cpu, 2), "refresh_wall_s": round(wall, 2), "workers": sizes.workers,
            "by_tier": {tier: {"listings": len(v), "cpu_ms_mean": round(1000 * float(np.mean(v)), 2),
                               "cpu_ms_p95": round(1000 * float(np.percentile(v, 95)), 2),
                               "cpu_s": round(float(np.sum(v)), 2)}
                        for tier, v in sorted(by_tier.items())}}


PARTS = ("shop", "top", "refresh")


def run(sizes: Sizes, path: str = DEFAULT_PATH, parts: tuple[str, ...] = PARTS) -> dict:
    daily = retail_daily(path)
    figures = {"horizon": sizes.horizon, "cpus": os.cpu_count(),
               "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS")}
    if "shop" in parts:
        figures.update(measure_shop(path, sizes))
    if "top" in parts:
        figures.update(measure_top(daily, path, sizes))
    if "refresh" in parts:
        figures.update(measure_refresh(daily, sizes))
    return figures


def report(figures: dict) -> None:
    rows = []
    if "shop" in figures:
        rows.append(("forecast_mase_vs_snaive", str(figures["forecast_mase_vs_snaive"]),
                     f"shop units, {figures['horizon']} days ahead: served MASE / seasonal-naive MASE"))
    if "top_products" in figures:
        rows += [("forecast_mase_top100_median_ratio", str(figures["forecast_mase_top100_median_ratio"]),
                  f"median over {figures['top_products']} top products"),
                 ("top_beating_snaive_share", str(figures["top_beating_snaive_share"]), "products whose ratio is below 1")]
    if "listings" in figures:
        rows += [("forecast_listings_per_s", str(figures["forecast_listings_per_s"]), "one core, tier auto"),
                 ("refresh_cpu_s", str(figures["refresh_cpu_s"]), f"{figures['listings']} listings"),
                 ("refresh_wall_s", str(figures["refresh_wall_s"]), f"{figures['workers']} worker(s)")]
    print_table("Demand forecasts on the shared shop history", rows)
    for horizon, values in figures.get("shop", {}).items():
        print(f"  shop h={horizon}: {values}")
    if "top_served" in figures:
        print(f"  top served: {figures['top_served']}; inner median ratios: {figures['top_inner_median_ratio']}")
    for tier, values in figures.get("by_tier", {}).items():
        print(f"  tier {tier}: {values}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.forecast", description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--top", type=int, help="products evaluated by rolling origin (default 100)")
    parser.add_argument("--workers", type=int, help="processes for the whole-shop refresh (default 1)")
    parser.add_argument("--effort", choices=("auto", "full", "light"), help="the top products' tier (default auto)")
    parser.add_argument("--data", default=DEFAULT_PATH, help="the shop history (parquet)")
    parser.add_argument("--only", choices=PARTS, action="append", help="measure only this part (repeatable)")
    args = parser.parse_args(argv)
    sizes = Sizes(**{k: v for k, v in (("top", args.top), ("workers", args.workers), ("effort", args.effort))
                     if v is not None})
    return show(run(sizes, args.data, tuple(args.only or PARTS)), args.json, report)


if __name__ == "__main__":
    raise SystemExit(main())
