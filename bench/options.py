"""Command-line options that a benchmark and `etsypro bench` share (argparse only: cheap to import)."""

from __future__ import annotations

import argparse

HOLD, BEAT_LOWEST, OPTIMISER, OPTIMISER_EXPERIMENTS = "hold", "beat_lowest", "optimiser", "optimiser_experiments"
STRATEGIES = (HOLD, BEAT_LOWEST, OPTIMISER)          # the simulator's default
ALL_STRATEGIES = (*STRATEGIES, OPTIMISER_EXPERIMENTS)


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def market_size(p: argparse.ArgumentParser) -> None:
    """The simulated market's size (etsypro simulate, bench simulate)."""
    p.add_argument("--days", type=positive, default=180, help="simulated days (default 180)")
    p.add_argument("--listings", type=positive, default=50, help="simulated listings (default 50)")


def simulate_options(p: argparse.ArgumentParser) -> None:
    """bench simulate's options."""
    market_size(p)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--optimiser-only", action="store_true", help="also time a run of the optimiser's shop alone")
    p.add_argument("--strategies", nargs="+", choices=ALL_STRATEGIES, help=f"default: {', '.join(STRATEGIES)}")


def market_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--market-seeds", type=int, nargs="*", default=[1, 2, 3],
                   help="seeds of the simulated market for the optimiser's oracle ratio (none: skip it)")
    p.add_argument("--market-days", type=positive, default=180, help="simulated days (default 180)")
    p.add_argument("--market-listings", type=positive, default=50, help="simulated listings (default 50)")

