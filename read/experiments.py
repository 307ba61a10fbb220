"""Experiments as readers see them (replayed from the log), and what their analysis reads: the
pre-period's daily metric (the power calculation's input, from the daily demand frame) and each
period's metric from the hourly sales view, kept only where the listings' prices were the arm's
throughout the period's used part (after the burn-in). The maths is domain/experiment_analysis.py.
"""

from __future__ import annotations

import math
from dataclasses import replace
from bisect import bisect_right
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from uuid import UUID

import polars as pl

from domain.demand.elasticity import Baseline, Diagnostics, Estimate
from domain.experiment import Experiment, describe_experiment
from domain.experiment_analysis import (Period, PowerPlan, analyse, cycle_matrix, elasticity_from_arms)
from read.aggregates import AggregateReader, fold
from read.demand import daily_demand
from read.pool import ReadPool
from read.shops import ShopDirectory, Viewer

PRE_DAYS = 56                     # the pre-period: the power calculation's and CUPED's days
SETTLE = timedelta(minutes=15)    # the policy starts a period within seconds of its start: its change may trail it


# A shop's experiments replayed from the log in one query (the experiments table is their index).
_SHOP_EXPERIMENTS = ("SELECT e.originator_id, e.originator_version, e.topic, e.state FROM experiments x"
                     " JOIN pricing_events e ON e.originator_id = x.experiment_id WHERE x.shop_id = %s ORDER BY 1, 2")


class ExperimentReader:
    def __init__(self, pool: ReadPool, shops: ShopDirectory):
        self.pool, self.shops = pool, shops
        self.aggregates = AggregateReader(pool, shops)

    # -- the experiments ---------------------------------------------------------------------
    def of_shop(self, viewer: Viewer, shop_id: UUID) -> list[dict]:
        self.shops.facts(viewer, shop_id)
        found = fold(self.pool.rows(_SHOP_EXPERIMENTS, [shop_id]))
        return [describe_experiment(x) for x in found.values() if isinstance(x, Experiment) and x.shop_id == shop_id]

    def experiment(self, viewer: Viewer, shop_id: UUID, experiment_id: UUID) -> Experiment:
        return self.aggregates.in_shop(viewer, shop_id, experiment_id, Experiment, "experiment")

    # -- the pre-period ------------------------------------------------------------------------
    def pre_period(self, viewer: Viewer, shop_id: UUID, listings: dict[UUID, Decimal | None], metric: str,
                   before: date) -> list[float]:
        """The listings' metric per day together, over the PRE_DAYS days before `before` on which
        any of them was on sale. listings: id -> cost (profit needs it)."""
        self.shops.facts(viewer, shop_id)
        frame = daily_demand(self.pool, shop_id, since=before - timedelta(days=PRE_DAYS),
                             until=before - timedelta(days=1))
        return daily_metric(frame, listings, metric).get_column("metric").to_list()

    # -- the analysis --------------------------------------------------------------------------
    def analysis(self, viewer: Viewer, shop_id: UUID, experiment_id: UUID, now: datetime | None = None) -> dict:
        x = self.experiment(viewer, shop_id, experiment_id)
        return analyse_experiment(x, self._prices(x), self._sales(x), self._covariates(x), now)

    def _prices(self, x: Experiment) -> dict[str, list[tuple[datetime, Decimal]]]:
        rows = self.pool.rows("SELECT listing_id::text, occurred_at, price FROM analytics.price_changes"
                              " WHERE listing_id = ANY(%s::uuid[]) AND occurred_at < %s"
                              " ORDER BY listing_id, occurred_at, version", [_ids(x), x.period_start(x.periods)])
        prices: dict[str, list] = {}
        for listing_id, at, price in rows:
            prices.setdefault(listing_id, []).append((at, price))
        return prices

    def _sales(self, x: Experiment) -> dict[tuple[str, datetime], tuple[int, Decimal]]:
        rows = self.pool.rows("SELECT listing_id::text, bucket, units, revenue FROM analytics.sales_by_listing_hour"
                              " WHERE listing_id = ANY(%s::uuid[]) AND bucket >= %s AND bucket < %s",
                              [_ids(x), x.starts_at - timedelta(hours=1), x.period_start(x.periods)])
        return {(listing_id, bucket): (units, revenue) for listing_id, bucket, units, revenue in rows}

    def _covariates(self, x: Experiment) -> dict[int, float]:
        """The pre-period's mean metric per weekday (0 = Monday): CUPED's covariate of a period."""
        if not x.cuped:
            return {}
        frame = daily_demand(self.pool, x.shop_id, since=x.starts_at.date() - timedelta(days=PRE_DAYS),
                             until=x.starts_at.date() - timedelta(days=1))
        daily = daily_metric(frame, _costs(x), x.metric)
        means = daily.group_by(pl.col("day").dt.weekday()).agg(pl.col("metric").mean())
        return {int(weekday) - 1: float(value) for weekday, value in means.iter_rows()}


def concluded_elasticities(conn, shop_id: UUID) -> dict[str, dict]:
    """listing -> its entry of the analysis' elasticities (plus experiment_id) from the shop's latest
    concluded experiment that measured one for it: what the demand models prefer to their observational estimate."""
    found = fold(conn.execute(_SHOP_EXPERIMENTS, [shop_id]).fetchall())
    concluded = sorted((x for x in found.values() if isinstance(x, Experiment) and x.conclusion),
                       key=lambda x: x.ended_at)
    measured = {}
    for x in concluded:  # later conclusions overwrite earlier ones
        for e in x.conclusion.get("elasticities") or ():
            if e.get("elasticity") is not None and e.get("ci95") and None not in e["ci95"]:
                measured[e["listing_id"]] = {**e, "experiment_id": str(x.id), "periods_days": x.period_hours / 24
                                             * len(x.schedule)}
    return measured


def prefer_experiments(fitted, measured: dict[str, dict]):
    """The demand models' fits (read/model_runs.py Fitted) with each listing's elasticity from its
    concluded switchback experiment (concluded_elasticities) in place of the observational one: with
    the observational baseline volume where there is one (its longer history), else with the
    experiment's control arm as the baseline."""
    listings = dict(fitted.elasticities.listings)
    for listing_id, e in measured.items():
        low, high = e["ci95"]
        observed = listings.get(listing_id)
        if isinstance(observed, Estimate) and observed.baseline is not None:
            listings[listing_id] = replace(
                observed, elasticity=e["elasticity"], ci95=(low, high), se=(high - low) / 3.92, own_elasticity=None,
                own_weight=None, method=f"switchback experiment {e['experiment_id']}", caveat=EXPERIMENT_CAVEAT)
        elif e.get("units_per_day_at_base"):
            listings[listing_id] = experimental_estimate(listing_id, e)
    return replace(fitted, elasticities=replace(fitted.elasticities, listings=listings))


def experimental_estimate(listing_id: str, e: dict) -> Estimate:
    """An experiment's elasticity as the demand models' Estimate, its control arm the baseline."""
    low, high = e["ci95"]
    prices = [float(p) for p in e["arm_prices"]]
    days = float(e.get("periods_days") or 0)
    diagnostics = Diagnostics(0.0, 1.0, None, True, 0, "randomised switchback: arms compared within cycles",
                              0, 0, 0, 1.0)
    baseline = Baseline(float(e["base_price"]), float(e["units_per_day_at_base"]), float(e["units_log_se"] or 0), 0.0)
    return Estimate(e["elasticity"], (low, high), (high - low) / 3.92, int(days), len(set(prices)),
                    (min(prices), max(prices)), float(e["units_per_day_at_base"]) * days,
                    f"switchback experiment {e['experiment_id']}", "experiment", (), diagnostics, baseline,
                    EXPERIMENT_CAVEAT, listing_id)


EXPERIMENT_CAVEAT = ("Experimental estimate: measured by a switchback price experiment (prices alternated on a "
                     "randomised schedule), so prices that reacted to demand do not bias it.")


def _ids(x: Experiment) -> list[str]:
    return [e["listing_id"] for e in x.listings]


def _costs(x: Experiment) -> dict[UUID, Decimal | None]:
    return {UUID(e["listing_id"]): None if e.get("cost") is None else e["cost"].amount for e in x.listings}


def daily_metric(frame: pl.DataFrame, listings: dict[UUID, Decimal | None], metric: str) -> pl.DataFrame:
    """day, metric: the listings' units, revenue or profit (revenue - units x cost) summed per day,
    on the days any of them was on sale."""
    costs = pl.DataFrame({"listing_id": [str(k) for k in listings],
                          "cost": [float(v or 0) for v in listings.values()]}, schema={"listing_id": pl.Utf8, "cost": pl.Float64})
    rows = frame.filter(pl.col("active")).join(costs, on="listing_id")
    value = {"units": pl.col("units").cast(pl.Float64), "revenue": pl.col("revenue"),
             "profit": pl.col("revenue") - pl.col("units") * pl.col("cost")}[metric]
    return rows.group_by("day").agg(metric=value.sum()).sort("day")


# -- pure: the experiment and what was read -> the analysis ---------------------------------------
def analyse_experiment(x: Experiment, prices: dict, sales: dict, covariates: dict[int, float],
                       now: datetime | None = None) -> dict:
    now = now or datetime.now(timezone.utc)
    plan = PowerPlan(**x.plan)
    periods, dropped, units = _periods(x, prices, sales, covariates, now)
    result = analyse(periods, len(x.arms), plan, x.mode, cuped=x.cuped, seed=x.seed)
    return {
        "experiment": describe_experiment(x),
        "mode": result.mode,
        "peeking": ("fixed horizon: the verdict waits for the planned cycles" if result.mode == "fixed_horizon"
                    else "mSPRT truncated at the planned horizon: valid at every look up to it"),
        "verdict_allowed": result.verdict_allowed, "verdict": result.verdict,
        "cycles_complete": result.cycles_complete, "cycles_planned": result.cycles_planned,
        "periods_used": len(periods), "periods_dropped": dropped,
        "control_mean_per_day": _finite(result.control_mean),
        "arms": [{"arm": e.arm, "name": x.arms[e.arm]["name"], "effect_per_day": _finite(e.effect),
                  "relative": _finite(e.relative), "ci95": [_finite(e.low), _finite(e.high)],
                  "p_value": _finite(e.p_value), "cycles": e.cycles, "significant": e.significant}
                 for e in result.arms],
        "cuped": {"asked": x.cuped, "applied": result.cuped, "theta": _finite(result.cuped_theta)},
        "randomisation": result.randomisation, "metric": x.metric, "plan": dict(x.plan),
        "elasticities": _elasticities(x, units),
    }


def _periods(x: Experiment, prices: dict, sales: dict, covariates: dict[int, float], now: datetime):
    """The periods whose used part is over and ran at the arm's prices; the others with why they were dropped."""
    periods, dropped, units = [], [], {e["listing_id"]: [] for e in x.listings}
    last = min(x.period, x.periods - 1)
    end_of_trust = x.ended_at if x.ended_at is not None else None
    if x.paused is not None:
        end_of_trust = datetime.fromisoformat(x.paused["at"])
    for p in range(last + 1):
        start, end = x.period_start(p) + timedelta(hours=x.burn_in_hours), x.period_start(p + 1)
        if end > now or (end_of_trust is not None and end > end_of_trust):
            break
        wrong = [lid for lid in _ids(x) if not _held(prices.get(lid, []), x.price_of(lid, p).amount, start, end)]
        if wrong:
            dropped.append({"period": p, "why": f"listing {wrong[0]} was not at the arm's price throughout"})
            continue
        days = (end - start).total_seconds() / 86400
        value, per_listing = _metric(x, sales, start, end)
        periods.append(Period(p, x.schedule[p], value / days, covariates.get(x.period_start(p).weekday())))
        for lid, sold in per_listing.items():
            units[lid].append(Period(p, x.schedule[p], sold / days))
    return periods, dropped, units


def _held(changes: list[tuple[datetime, Decimal]], price: Decimal, start: datetime, end: datetime) -> bool:
    """The price in force from start (after SETTLE) to end was `price`, unchanged."""
    times = [at for at, _ in changes]
    settled = start + SETTLE if end - start > SETTLE else start
    i = bisect_right(times, settled) - 1
    if i < 0 or changes[i][1] != price:
        return False
    return i + 1 >= len(changes) or changes[i + 1][0] >= end


def _metric(x: Experiment, sales: dict, start: datetime, end: datetime) -> tuple[float, dict[str, float]]:
    total, per_listing = 0.0, {}
    for entry in x.listings:
        lid, cost = entry["listing_id"], entry.get("cost")
        sold, revenue, hour = 0, Decimal(0), start
        while hour < end:
            u, r = sales.get((lid, hour), (0, Decimal(0)))
            sold, revenue, hour = sold + u, revenue + r, hour + timedelta(hours=1)
        per_listing[lid] = float(sold)
        total += {"units": float(sold), "revenue": float(revenue),
                  "profit": float(revenue - sold * (cost.amount if cost is not None else 0))}[x.metric]
    return total, per_listing


def _elasticities(x: Experiment, units: dict[str, list[Period]]) -> list[dict]:
    out = []
    for entry in x.listings:
        lid = entry["listing_id"]
        prices = [float(x.arm(a).price(entry["base_price"]).amount) for a in range(len(x.arms))]
        found = elasticity_from_arms(cycle_matrix(units[lid], len(x.arms)), prices)
        out.append({"listing_id": lid, "source": "experiment",
                    **({"elasticity": None, "ci95": None, "cycles": 0, "refusal": "an arm sold nothing, or too few "
                        "cycles: no experimental elasticity"} if found is None else
                       {"elasticity": _finite(found.elasticity), "ci95": [_finite(found.low), _finite(found.high)],
                        "cycles": found.cycles, "refusal": None, "base_price": str(entry["base_price"].amount),
                        "arm_prices": prices, "units_per_day_at_base": _finite(found.control_units),
                        "units_log_se": _finite(found.control_log_se)})})
    return out


def _finite(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None

