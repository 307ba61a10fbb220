"""`python -m bench.simulate` (`etsypro bench simulate`): the market simulator's evidence (issue 17).

- optimizer_oracle_ratio: the optimiser's profit over the oracle's (the best fixed price per
  listing knowing the true curve) on a --days x --listings market, per seed (--seeds), and whether
  it reaches 0.9 in a majority of them (optimizer_majority_at_90);
- the other strategies' ratios beside it (hold, beat_lowest) from the same runs;
- simulated_days_per_s: simulated days per wall-clock second of each run (every strategy's shop
  stepped through the engine together), and the seconds of the whole run; with --optimiser-only, a
  run of the optimiser's shop alone (the issue's 180 days x 50 listings in <= 60 s target).
Each run in a fresh database, through the real engine (bench/market.py).
"""

from __future__ import annotations

import argparse
import sys
import time

from bench.common import fresh_database, note, print_table, show
from bench.market import simulate
from bench.options import OPTIMISER, STRATEGIES, simulate_options

TARGET_RATIO = 0.9


def run(days: int, listings: int, seed: int, strategies=STRATEGIES) -> tuple[dict, float]:
    with fresh_database("etsypro_sim") as (url, _):
        started = time.perf_counter()
        result = simulate(url, days, listings, seed, strategies)
        return result, time.perf_counter() - started


def figures(days: int, listings: int, seeds: list[int], optimiser_only: bool = False,
            strategies: tuple[str, ...] = STRATEGIES) -> dict:
    if OPTIMISER not in strategies:
        raise ValueError("the figures compare the optimiser with the oracle: include it")
    per_seed, seconds = [], []
    for seed in seeds:
        note(f"simulating seed {seed}: {listings} listings x {days} days, strategies {', '.join(strategies)}")
        result, took = run(days, listings, seed, strategies)
        seconds.append(took)
        per_seed.append({"seed": seed, "seconds": round(took, 1),
                         **{f"{name}_oracle_ratio": s["oracle_profit_ratio"] for name, s in result["strategies"].items()}})
    ratios = [s[f"{OPTIMISER}_oracle_ratio"] for s in per_seed]
    out = {"days": days, "listings": listings, "seeds": seeds, "strategies": list(strategies), "per_seed": per_seed,
           "optimizer_oracle_ratio": sorted(ratios)[len(ratios) // 2],
           "optimizer_seeds_at_90": sum(r is not None and r >= TARGET_RATIO for r in ratios),
           "optimizer_majority_at_90": sum(r is not None and r >= TARGET_RATIO for r in ratios) * 2 > len(ratios),
           "simulated_days_per_s": round(days * len(seeds) / sum(seconds), 3),
           "run_seconds_max": round(max(seconds), 1)}
    if optimiser_only:
        note(f"simulating the optimiser alone: seed {seeds[0]}")
        _, took = run(days, listings, seeds[0], (OPTIMISER,))
        out |= {"optimiser_only_seconds": round(took, 1), "optimiser_only_days_per_s": round(days / took, 3)}
    return out


def report(f: dict) -> None:
    rows = [(f"seed {s['seed']}", ", ".join(f"{k.removesuffix('_oracle_ratio')} {v}" for k, v in s.items()
                                            if k.endswith("_oracle_ratio")), f"{s['seconds']} s") for s in f["per_seed"]]
    rows += [("optimizer_oracle_ratio (median)", str(f["optimizer_oracle_ratio"]), f">= {TARGET_RATIO} in "
              f"{f['optimizer_seeds_at_90']} of {len(f['seeds'])} seeds"),
             ("simulated_days_per_s", str(f["simulated_days_per_s"]),
              f"{f['listings']} listings, strategies {', '.join(f['strategies'])} stepped together")]
    if "optimiser_only_seconds" in f:
        rows.append(("optimiser alone", f"{f['optimiser_only_seconds']} s", f"{f['optimiser_only_days_per_s']} days/s"))
    print_table(f"market simulator: {f['listings']} listings x {f['days']} days", rows)


def main(args: argparse.Namespace) -> int:
    f = figures(args.days, args.listings, args.seeds, args.optimiser_only, tuple(args.strategies or STRATEGIES))
    return show(f, args.json, report)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="bench.simulate")
    simulate_options(parser)
    parser.add_argument("--json", action="store_true")
    sys.exit(main(parser.parse_args()))
