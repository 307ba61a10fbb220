"""Price elasticity of demand from daily sales: count GLMs of units on log price (statsmodels).

The model: units_t ~ Poisson or NB2 with log E[units_t] = a + e * log(price_t) + weekday + trend
(+ c * log(competitor median) when seen on enough days), so `e` is the constant elasticity and
zero-sale days count. Standard errors are Newey-West (HAC, Bartlett, 3 lags at 60 days); the
interval uses Student t on the residual degrees of freedom.

Evidence thresholds (EVIDENCE) come from bench/elasticity.py --sweep: below 28 days, 3 prices held
2+ days, a 10% price range or 30 units the 95% interval's coverage falls under 90% or errors explode.

Every answer is an Estimate or a Refusal saying what data would fix it; no NaN or inf leaves here.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace
from datetime import date
from typing import Mapping, Sequence

import numpy as np
import polars as pl
import statsmodels.api as sm
from scipy import stats

from domain.demand.frame import check_daily

CAVEAT = ("Observational estimate: it reads demand off the prices this listing happened to have, so "
          "prices that reacted to demand (raised when busy, cut when slow) bias it. Confirm it with a "
          "price experiment: alternate prices over time (switchbacks) and compare sales.")
# NB2 instead of Poisson above this Pearson dispersion: the Poisson fit's SEs would still be valid
# under HAC, but NB weights noisy high days less and tightens the interval.
OVERDISPERSED = 1.2
# Competitor prices enter only when seen on this share of the fitted days (gaps are carried over).
COMPETITOR_COVERAGE = 0.8


@dataclass(frozen=True, slots=True)
class Evidence:
    """The least data an estimate stands on; below any of these the answer is a Refusal."""

    min_days: int = 28                    # active days with a known price
    min_distinct_prices: int = 3          # price levels held on at least min_days_per_price days
    min_days_per_price: int = 2
    min_price_variation: float = 0.10     # (highest - lowest) / median price
    min_independent_variation: float = 0.03  # sd of log price left after weekday, trend and competitor
    min_total_units: float = 30           # net units, negative days clipped to 0
    min_sale_days: int = 10


EVIDENCE = Evidence()
# What a thin listing needs for its own fit to be shrunk toward the shop's pooled estimate.
THIN_EVIDENCE = Evidence(min_days=14, min_distinct_prices=2, min_days_per_price=2, min_price_variation=0.03,
                         min_independent_variation=0.01, min_total_units=5, min_sale_days=3)


@dataclass(frozen=True, slots=True)
class Refusal:
    """No estimate: why, and what data would make one possible."""

    reason: str
    needs: str
    field: str | None = None


@dataclass(frozen=True, slots=True)
class Baseline:
    """Expected units per day at `reference_price` on an average weekday at the end of the window
    (log scale SE, and its covariance with the elasticity), so units at any price can be predicted."""

    reference_price: float
    units_per_day: float
    log_se: float
    log_cov_elasticity: float


@dataclass(frozen=True, slots=True)
class Diagnostics:
    deviance: float
    pearson_dispersion: float          # of the Poisson fit: > OVERDISPERSED chose NB2
    nb_alpha: float | None             # NB2 dispersion (variance mu + alpha mu^2), None for Poisson
    converged: bool
    iterations: int
    covariance: str                    # "HAC (Newey-West, 2 lags), HC3 leverage-adjusted", "cluster-robust"...
    clipped_negative_days: int         # days with net returns, counted as 0 units by the count model
    excluded_inactive_days: int
    excluded_unknown_price_days: int
    independent_price_variation: float
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Estimate:
    elasticity: float
    ci95: tuple[float, float]
    se: float
    n_days: int
    distinct_prices: int
    price_range: tuple[float, float]
    total_units: float
    method: str
    family: str
    controls: tuple[str, ...]
    diagnostics: Diagnostics
    baseline: Baseline
    caveat: str = CAVEAT
    listing_id: str | None = None


# -- the data a fit stands on -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Series:
    units: np.ndarray                  # float, clipped at 0
    price: np.ndarray
    controls: tuple[tuple[str, np.ndarray], ...]
    reference_rows: np.ndarray         # rows whose average defines the baseline (recent weekdays)
    clipped: int
    excluded_inactive: int
    excluded_unknown_price: int
    time_ordered: bool


def _summary_refusal(series: _Series, evidence: Evidence) -> Refusal | None:
    """The first threshold the data misses, as a Refusal (cheap: no fit)."""
    n, units, price = len(series.units), series.units, series.price
    if n == 0:
        return Refusal("no active days with a known price", "daily sales on days the listing was on sale, with its price")
    total = float(units.sum())
    if total <= 0:
        return Refusal("no sales in the window", "sales at several different prices")
    levels = _price_levels(price, evidence.min_days_per_price)
    if levels < evidence.min_distinct_prices:
        return Refusal(f"{levels} distinct price(s) held {evidence.min_days_per_price}+ days",
                       f"at least {evidence.min_distinct_prices} distinct prices held {evidence.min_days_per_price}+ "
                       f"days each; this listing has {levels}", "price")
    if n < evidence.min_days:
        return Refusal(f"only {n} active days with a known price",
                       f"at least {evidence.min_days} active days; this listing has {n}")
    variation = (price.max() - price.min()) / float(np.median(price))
    if variation < evidence.min_price_variation:
        return Refusal(f"prices vary by {variation:.1%} only",
                       f"prices at least {evidence.min_price_variation:.0%} apart (highest vs lowest); "
                       f"this listing's span {variation:.1%}", "price")
    if total < evidence.min_total_units:
        return Refusal(f"only {total:g} units sold", f"at least {evidence.min_total_units:g} units sold in the window; "
                       f"this listing sold {total:g}")
    sale_days = int((units > 0).sum())
    if sale_days < evidence.min_sale_days:
        return Refusal(f"sales on {sale_days} days only",
                       f"sales on at least {evidence.min_sale_days} days; this listing sold on {sale_days}")
    return None


def _price_levels(price: np.ndarray, min_days: int) -> int:
    """Distinct prices (to the cent) held on at least min_days days: one-day blends of a change day don't count."""
    _, counts = np.unique(np.round(price, 2), return_counts=True)
    return int((counts >= min_days).sum())


# -- the fit --------------------------------------------------------------------------------------
def _newey_west_lags(n: int) -> int:
    """floor(n^(1/4)): 2 lags at 28-80 days. More lags only shrank the SEs further in calibration."""
    return max(1, int(n ** 0.25))


def _fit(series: _Series, evidence: Evidence, method: str, listing_id: str | None = None) -> Estimate | Refusal:
    names = tuple(name for name, _ in series.controls)
    log_price = np.log(series.price)
    centre = float(log_price.mean())
    columns = [np.ones_like(log_price), log_price - centre] + [values for _, values in series.controls]
    design = np.column_stack(columns)
    independent = _independent_variation(design)
    if independent < evidence.min_independent_variation:
        return Refusal(f"price moved with the weekday, trend or competitor controls (independent variation "
                       f"{independent:.3f})", "prices that go up and down over time, not one steady move",
                       "price")
    if np.linalg.matrix_rank(design) < design.shape[1]:
        return Refusal("the controls are collinear with price", "more varied days or fewer controls")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outcome = _glm(series.units, design, series.time_ordered)
    if isinstance(outcome, Refusal):
        return outcome
    return _estimate(series, outcome, design, centre, names, method, listing_id, independent, tuple(sorted({str(w.message)[:120] for w in caught})))


def _independent_variation(design: np.ndarray) -> float:
    """sd of log price after regressing it on the intercept and controls: what identifies the slope."""
    others = np.delete(design, 1, axis=1)
    coef, *_ = np.linalg.lstsq(others, design[:, 1], rcond=None)
    return float(np.std(design[:, 1] - others @ coef))


@dataclass(frozen=True, slots=True)
class _Fit:
    params: np.ndarray
    cov: np.ndarray
    deviance: float
    converged: bool
    iterations: int
    df_resid: int
    nb_alpha: float | None
    pearson_dispersion: float


def _glm(units: np.ndarray, design: np.ndarray, time_ordered: bool) -> _Fit | Refusal:
    """Poisson first; NB2 with the Cameron-Trivedi moment alpha when overdispersed; robust covariance."""
    try:
        poisson = sm.GLM(units, design, family=sm.families.Poisson()).fit()
    except (ValueError, np.linalg.LinAlgError, FloatingPointError) as error:
        return Refusal(f"the Poisson fit failed ({type(error).__name__})", "more varied data")
    if not poisson.converged:
        return Refusal("the Poisson fit did not converge", "more sales days at several prices")
    mu = poisson.fittedvalues
    df = max(len(units) - design.shape[1], 1)
    dispersion = float(((units - mu) ** 2 / mu).sum() / df)
    alpha = float(((units - mu) ** 2 - units).sum() / (mu ** 2).sum())
    result, used_alpha = poisson, None
    if math.isfinite(dispersion) and dispersion > OVERDISPERSED and math.isfinite(alpha) and alpha > 0:
        try:
            result = sm.GLM(units, design, family=sm.families.NegativeBinomial(alpha=alpha)).fit(
                start_params=poisson.params)
        except (ValueError, np.linalg.LinAlgError, FloatingPointError) as error:
            return Refusal(f"the negative binomial fit failed ({type(error).__name__})", "more varied data")
        if not result.converged:
            return Refusal("the negative binomial fit did not converge", "more sales days at several prices")
        used_alpha = alpha
    mu = result.fittedvalues
    cov = _robust_cov(design, units, mu, used_alpha or 0.0, _newey_west_lags(len(units)) if time_ordered else 0)
    return _Fit(params=np.asarray(result.params), cov=cov, deviance=float(result.deviance),
                converged=bool(result.converged), iterations=int(result.fit_history.get("iteration", 0)),
                df_resid=df, nb_alpha=used_alpha, pearson_dispersion=dispersion)


def _robust_cov(design: np.ndarray, units: np.ndarray, mu: np.ndarray, alpha: float, lags: int) -> np.ndarray:
    """Newey-West sandwich on leverage-adjusted scores (HC3-style, (y - mu) / (1 - h)).

    Plain HAC/HC1 gave 85-90% coverage at 60 days and 10 parameters: small-sample sandwiches shrink
    the variance by about the leverage; dividing by 1 - h restores 92-95% (bench/elasticity.py)."""
    weight = mu / (1 + alpha * mu)                             # IRLS weight of the log link
    bread = np.linalg.inv((design * weight[:, None]).T @ design)
    root = design * np.sqrt(weight)[:, None]
    leverage = np.minimum(np.einsum("ij,jk,ik->i", root, bread, root), 0.9)  # a day that alone fits a dummy
    scores = design * ((units - mu) / (1 + alpha * mu) / (1 - leverage))[:, None]
    meat = scores.T @ scores
    for lag in range(1, lags + 1):
        cross = scores[lag:].T @ scores[:-lag]
        meat += (1 - lag / (lags + 1)) * (cross + cross.T)
    return bread @ meat @ bread


def _estimate(series: _Series, fit: _Fit, design: np.ndarray, centre: float, names: tuple[str, ...],
              method: str, listing_id: str | None, independent: float, caught: tuple[str, ...]) -> Estimate | Refusal:
    params, cov = fit.params, fit.cov
    elasticity, se = float(params[1]), float(math.sqrt(max(cov[1, 1], 0.0)))
    critical = float(stats.t.ppf(0.975, fit.df_resid))
    baseline = _baseline(series, params, cov, design, centre)
    values = (elasticity, se, critical, fit.deviance, baseline.units_per_day, baseline.log_se,
              baseline.log_cov_elasticity)
    if not all(math.isfinite(float(v)) for v in values) or se <= 0:
        return Refusal("the fit gave a non-finite or degenerate value", "more sales days at several prices")
    covariance = (f"HAC (Newey-West, {_newey_west_lags(len(series.units))} lags), HC3 leverage-adjusted"
                  if series.time_ordered else "HC3 (no time order: no HAC)")
    return Estimate(
        elasticity=elasticity, ci95=(elasticity - critical * se, elasticity + critical * se), se=se,
        n_days=len(series.units), distinct_prices=int(len(np.unique(np.round(series.price, 2)))),
        price_range=(float(series.price.min()), float(series.price.max())), total_units=float(series.units.sum()),
        method=method, family="negative binomial (NB2)" if fit.nb_alpha is not None else "Poisson", controls=names,
        diagnostics=Diagnostics(
            deviance=fit.deviance, pearson_dispersion=fit.pearson_dispersion, nb_alpha=fit.nb_alpha,
            converged=fit.converged, iterations=fit.iterations,
            covariance=covariance, clipped_negative_days=series.clipped,
            excluded_inactive_days=series.excluded_inactive,
            excluded_unknown_price_days=series.excluded_unknown_price,
            independent_price_variation=independent, warnings=caught),
        baseline=baseline, listing_id=listing_id)


def _baseline(series: _Series, params: np.ndarray, cov: np.ndarray, design: np.ndarray, centre: float) -> Baseline:
    """Mean expected units over the reference rows, moved to the last price; delta-method log SE."""
    reference_price = float(series.price[-1])
    rows = design[series.reference_rows].copy()
    rows[:, 1] = math.log(reference_price) - centre
    mu = np.exp(np.clip(rows @ params, -50, 50))
    weights = mu / mu.sum()
    gradient = weights @ rows                      # d log(mean mu) / d params
    return Baseline(reference_price=reference_price, units_per_day=float(mu.mean()),
                    log_se=float(math.sqrt(max(gradient @ cov @ gradient, 0.0))),
                    log_cov_elasticity=float(gradient @ cov[:, 1]))


# -- a listing from the shared daily frame ---------------------------------------------------------
def listing_series(frame: pl.DataFrame) -> _Series | Refusal:
    """Active days with a known positive price, in day order, with weekday/trend/competitor controls."""
    frame = check_daily(frame)
    if frame.height and not (frame["listing_id"] == frame["listing_id"][0]).all():
        return Refusal("the frame holds several listings", "one listing's days (or use estimate_shop)", "listing_id")
    return _series(_columns(frame.sort("day")))


def _columns(frame: pl.DataFrame) -> dict[str, np.ndarray]:
    """The frame's columns as numpy arrays in one pass (days as integers since 1970-01-01)."""
    table = frame.select(
        pl.col("day").cast(pl.Int32).alias("day"),
        pl.col("units").cast(pl.Float64).fill_null(float("nan")).alias("units"),
        pl.col("price").fill_null(float("nan")).alias("price"),
        pl.col("competitor_median").fill_null(float("nan")).alias("competitor"),
        pl.col("active").fill_null(False).alias("active"))
    return {name: table[name].to_numpy() for name in table.columns}


def _series(columns: dict[str, np.ndarray]) -> _Series | Refusal:
    day = columns["day"]
    if len(day) > 1 and (np.diff(day) <= 0).any():
        return Refusal("a day appears twice", "one row per day", "day")
    active = columns["active"].astype(bool)
    price, units = columns["price"], columns["units"]
    known = active & np.isfinite(price) & (price > 0) & np.isfinite(units)
    units = units[known]
    controls = _calendar_controls(day[known].astype(float)) + _competitor_control(columns["competitor"][known])
    return _Series(units=np.clip(units, 0, None), price=price[known].astype(float), controls=controls,
                   reference_rows=_recent_week(len(units)), clipped=int((units < 0).sum()),
                   excluded_inactive=int((~active).sum()), excluded_unknown_price=int((active & ~known).sum()),
                   time_ordered=True)


def _calendar_controls(days: np.ndarray) -> tuple[tuple[str, np.ndarray], ...]:
    """Weekday dummies (Monday the base) and a linear trend over the window."""
    if len(days) == 0:
        return ()
    weekday = (days.astype(int) + 3) % 7              # 1970-01-01, day 0, was a Thursday (Monday = 0)
    dummies = tuple((f"weekday_{label}", (weekday == d).astype(float))
                    for d, label in enumerate(("mon", "tue", "wed", "thu", "fri", "sat", "sun"))
                    if d > 0 and (weekday == d).any() and (weekday != d).any())
    span = max(days[-1] - days[0], 1.0)
    return dummies + (("trend", (days - days.mean()) / span),)


def _competitor_control(competitor: np.ndarray) -> tuple[tuple[str, np.ndarray], ...]:
    """log competitor median (centred), gaps carried over, when seen on enough days and moving.

    Its own regressor rather than log(competitor/price): then the price coefficient stays the own-price
    elasticity holding competitors fixed, and the competitor's coefficient is free to be estimated."""
    seen = np.isfinite(competitor) & (competitor > 0)
    if len(competitor) == 0 or seen.sum() < COMPETITOR_COVERAGE * len(competitor):
        return ()
    last_seen = np.maximum.accumulate(np.where(seen, np.arange(len(seen)), -1))
    last_seen[last_seen < 0] = int(np.argmax(seen))      # before the first sighting: the first one
    values = np.log(competitor[last_seen])
    if values.std() < 1e-3:
        return ()
    return (("log_competitor_median", values - values.mean()),)


def _recent_week(n: int) -> np.ndarray:
    """The last 7 fitted days (every weekday once when the listing was active all week)."""
    return np.arange(max(n - 7, 0), n)


def estimate_listing(frame: pl.DataFrame, evidence: Evidence = EVIDENCE) -> Estimate | Refusal:
    """One listing's elasticity from its daily frame (DAILY_SCHEMA), or a Refusal saying what is missing."""
    series = listing_series(frame)
    if isinstance(series, Refusal):
        return series
    refusal = _summary_refusal(series, evidence)
    if refusal is not None:
        return refusal
    listing_id = frame["listing_id"][0] if frame.height else None
    return _fit(series, evidence, "count GLM on log price, weekday and trend controls", listing_id)
