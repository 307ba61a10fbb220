"""Command-line options that a benchmark and `etsypro bench` share (argparse only: cheap to import)."""

from __future__ import annotations

import argparse


def market_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--market-seeds", type=int, nargs="*", default=[1, 2, 3],
                   help="seeds of the simulated market for the optimiser's oracle ratio (none: skip it)")
    p.add_argument("--market-days", type=int, default=180, help="simulated days (default 180)")
    p.add_argument("--market-listings", type=int, default=50, help="simulated listings (default 50)")

