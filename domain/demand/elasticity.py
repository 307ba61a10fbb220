"""Price elasticity of demand from daily sales: count GLMs of units on log price (statsmodels).

The model: units_t ~ Poisson, or NB2 when overdispersed, with log E[units_t] = a + e * log(price_t)
+ weekday + trend (+ c * log(competitor median) when seen on enough days): `e` is the constant
elasticity and zero-sale days count. Standard errors: Newey-West (floor(n^1/4) lags) on
leverage-adjusted scores; the 95% interval uses Student t on the residual degrees of freedom.

Thresholds (bench/elasticity.py --sweep): coverage stays 92-97% down to 5 sale days and 5 units and
drops to 86-90% below, where THIN_EVIDENCE stops; EVIDENCE is where an estimate alone is narrow
enough to act on (median 95% interval about +-5 from 28 days, 30 units, 10 sale days, a 10% price
span); 3 prices because two are mostly one before/after change the trend cannot tell from others.

Every answer is an Estimate or a Refusal saying what data would fix it; no NaN or inf leaves here.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace
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
                         min_independent_variation=0.01, min_total_units=5, min_sale_days=5)


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
    excluded_never_sold_weekday_days: int = 0  # days of a weekday without one sale in the window


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
    baseline: Baseline | None          # None for the shop's pooled estimate: no one listing's volume
    caveat: str = CAVEAT
    listing_id: str | None = None
    own_elasticity: float | None = None    # partial pooling: the listing's own estimate before shrinking
    own_weight: float | None = None        # partial pooling: the share of the answer from its own data


# -- the data a fit stands on -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Series:
    units: np.ndarray                  # float, clipped at 0
    price: np.ndarray
    controls: tuple[tuple[str, np.ndarray], ...]
    reference_rows: np.ndarray         # rows whose average defines the baseline (recent weekdays)
    reference_price: float             # the price the baseline is stated at (the last one, when dated)
    clipped: int
    excluded_inactive: int
    excluded_unknown_price: int
    time_ordered: bool
    excluded_never_sold_weekday: int = 0


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
    messages = tuple(sorted({str(w.message)[:120] for w in caught}))
    return _estimate(series, outcome, design, centre, names, method, listing_id, independent, messages)


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
    except (ValueError, np.linalg.LinAlgError, FloatingPointError):
        return Refusal("the Poisson fit diverged: a price level with (almost) no sales sends the slope to infinity",
                       "sales on several days at each price")
    if not poisson.converged:
        return Refusal("the Poisson fit did not converge", "more sales days at several prices")
    mu = poisson.fittedvalues
    df = max(len(units) - design.shape[1], 1)
    dispersion = float(((units - mu) ** 2 / mu).sum() / df)
    alpha = float(((units - mu) ** 2 - units).sum() / (mu ** 2).sum())
    result, used_alpha, iterations = poisson, None, int(poisson.fit_history["iteration"])
    if math.isfinite(dispersion) and dispersion > OVERDISPERSED and math.isfinite(alpha) and alpha > 0:
        nb = _negative_binomial(units, design, alpha, poisson.params)
        if nb is None:  # Poisson stays consistent (quasi-likelihood) and the sandwich does not assume its variance
            warnings.warn("NB2 did not converge; Poisson quasi-likelihood with robust standard errors instead")
        else:
            (result, iterations), used_alpha = nb, alpha
    mu = result.fittedvalues
    try:
        cov = _robust_cov(design, units, mu, used_alpha or 0.0, _newey_west_lags(len(units)) if time_ordered else 0)
    except np.linalg.LinAlgError:
        return Refusal("the fit is degenerate (expected sales vanish on most days)", "sales on more days at each price")
    return _Fit(params=np.asarray(result.params), cov=cov, deviance=float(result.deviance), converged=True,
                iterations=iterations,
                df_resid=df, nb_alpha=used_alpha, pearson_dispersion=dispersion)


def _negative_binomial(units: np.ndarray, design: np.ndarray, alpha: float, start: np.ndarray):
    """NB2 with alpha fixed from the Poisson fit: Newton (IRLS cycles between two points on overdispersed
    wholesale-like series), IRLS where Newton overflows; (result, iterations) or None when both fail."""
    family = sm.families.NegativeBinomial(alpha=alpha)
    for method in ("newton", "IRLS"):
        try:
            nb = sm.GLM(units, design, family=family).fit(start_params=start, method=method, maxiter=50, disp=False)
        except (ValueError, np.linalg.LinAlgError, FloatingPointError):
            continue
        if method == "IRLS" and nb.converged and np.isfinite(nb.params).all():
            return nb, int(nb.fit_history["iteration"])
        if method == "newton" and nb.mle_retvals.get("converged", False) and np.isfinite(nb.params).all():
            return nb, int(nb.mle_retvals["iterations"])
    return None


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
            excluded_never_sold_weekday_days=series.excluded_never_sold_weekday,
            excluded_unknown_price_days=series.excluded_unknown_price,
            independent_price_variation=independent, warnings=caught),
        baseline=baseline, listing_id=listing_id)


def _baseline(series: _Series, params: np.ndarray, cov: np.ndarray, design: np.ndarray, centre: float) -> Baseline:
    """Mean expected units over the reference rows, moved to the last price; delta-method log SE."""
    reference_price = series.reference_price
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
    never_sold = _never_sold_weekdays(day, units, known)
    known &= ~never_sold
    units = units[known]
    controls = _calendar_controls(day[known].astype(float)) + _competitor_control(columns["competitor"][known])
    return _Series(units=np.clip(units, 0, None), price=price[known].astype(float), controls=controls,
                   reference_rows=_recent_week(len(units)),
                   reference_price=float(price[known][-1]) if known.any() else 0.0, clipped=int((units < 0).sum()),
                   excluded_inactive=int((~active).sum()),
                   excluded_unknown_price=int((active & ~known & ~never_sold).sum()),
                   time_ordered=True, excluded_never_sold_weekday=int(never_sold.sum()))


def _never_sold_weekdays(day: np.ndarray, units: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Days of a weekday on which the listing never sold in the window (a shop closed on Saturdays):
    their weekday dummy would run to minus infinity and they say nothing about price given it, so
    they are left out, as fixed-effect count models drop separated observations."""
    weekday = (day.astype(int) + 3) % 7
    never = np.zeros(len(day), dtype=bool)
    for d in range(7):
        on = known & (weekday == d)
        if on.any() and not (units[on] > 0).any():
            never |= on
    return never if (known & ~never).any() else np.zeros(len(day), dtype=bool)


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


# -- predictions ----------------------------------------------------------------------------------
def expected_units(estimate: Estimate, price: float) -> tuple[float, float, float] | Refusal:
    """Expected units per day at `price` (mean, 95% low, 95% high) under constant elasticity.

    The interval is for the expected value (baseline and elasticity uncertainty, delta method on the
    log scale), not for one day's sales, which scatter more."""
    if estimate.baseline is None:
        return Refusal("a pooled estimate carries no listing's volume", "a listing's own or partially pooled estimate")
    if not (isinstance(price, (int, float)) and math.isfinite(price) and price > 0):
        return Refusal(f"price {price!r} is not a positive finite number", "a positive price", "price")
    base = estimate.baseline
    shift = math.log(price / base.reference_price)
    log_mean = math.log(base.units_per_day) + estimate.elasticity * shift
    variance = base.log_se ** 2 + shift ** 2 * estimate.se ** 2 + 2 * shift * base.log_cov_elasticity
    spread = 1.959964 * math.sqrt(max(variance, 0.0))
    values = tuple(math.exp(min(v, 700.0)) for v in (log_mean, log_mean - spread, log_mean + spread))
    if not all(math.isfinite(v) for v in values):
        return Refusal(f"the prediction at {price:g} overflows", "a price nearer the observed range", "price")
    return values


# -- the shop: pooled slope, partial pooling for thin listings -------------------------------------
@dataclass(frozen=True, slots=True)
class ShopEvidence:
    """What the shop-level pooled estimate stands on (cluster-robust SEs need enough listings)."""

    min_listings: int = 5                 # listings with sales at 2+ prices
    min_total_units: float = 100


SHOP_EVIDENCE = ShopEvidence()
# Elasticities of different products differ; without this floor a handful of listings can make
# the between-listing spread look 0 and collapse every thin listing onto the pooled interval.
MIN_BETWEEN_LISTING_SD = 0.25
POOLED_METHOD = ("pooled Poisson with listing fixed effects (conditional likelihood), weekday and trend "
                 "controls, one common slope")
SHRUNK_METHOD = "partial pooling (empirical Bayes toward the shop's pooled estimate)"
OWN_METHOD = "count GLM on log price, weekday and trend controls"


@dataclass(frozen=True, slots=True)
class ShopEstimates:
    pooled: Estimate | Refusal
    listings: Mapping[str, Estimate | Refusal]
    between_listing_sd: float | None      # the spread of true elasticities the shrinkage assumed


def estimate_shop(frame: pl.DataFrame, evidence: Evidence = EVIDENCE, thin: Evidence = THIN_EVIDENCE,
                  shop_evidence: ShopEvidence = SHOP_EVIDENCE) -> ShopEstimates:
    """Every listing of a shop's daily frame: its own estimate when it meets `evidence`; when it only
    meets `thin`, its own fit shrunk toward the shop's pooled slope (if the shop has one); else a Refusal."""
    check_daily(frame)
    ordered = frame.sort("listing_id", "day")
    ids = ordered["listing_id"].to_numpy()
    columns = _columns(ordered)
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]) if len(ids) else np.array([], dtype=int)
    bounds = list(zip(starts, np.r_[starts[1:], len(ids)]))
    own: dict[str, Estimate | Refusal] = {}
    weak: dict[str, Estimate] = {}
    for start, stop in bounds:
        listing_id = str(ids[start])
        own[listing_id], fit = _listing_answer({k: v[start:stop] for k, v in columns.items()}, listing_id, evidence, thin)
        if fit is not None:
            weak[listing_id] = fit
    pooled = _pooled(columns, bounds, shop_evidence)
    return _with_partial_pooling(own, weak, pooled)


def _listing_answer(columns: dict[str, np.ndarray], listing_id: str, evidence: Evidence,
                    thin: Evidence) -> tuple[Estimate | Refusal, Estimate | None]:
    """(the listing's own answer, a thin fit to shrink when its own answer is a refusal)."""
    series = _series(columns)
    if isinstance(series, Refusal):
        return series, None
    refusal = _summary_refusal(series, evidence)
    if refusal is None:
        answer = _fit(series, evidence, OWN_METHOD, listing_id)
        return answer, None
    if _summary_refusal(series, thin) is not None:
        return refusal, None
    fit = _fit(series, thin, OWN_METHOD + " (thin: below the evidence thresholds alone)", listing_id)
    return refusal, fit if isinstance(fit, Estimate) else None


def _with_partial_pooling(own: dict[str, Estimate | Refusal], weak: dict[str, Estimate],
                          pooled: Estimate | Refusal) -> ShopEstimates:
    if isinstance(pooled, Refusal) or not weak:
        for listing_id in weak:
            own[listing_id] = _no_borrowing(own[listing_id], pooled)
        return ShopEstimates(pooled, own, None)
    fitted = [e for e in own.values() if isinstance(e, Estimate)] + list(weak.values())
    shrunk, between = partially_pooled(weak, pooled, fitted)
    own.update(shrunk)
    return ShopEstimates(pooled, own, between)


def _no_borrowing(refusal: Refusal, pooled: Estimate | Refusal) -> Refusal:
    why = pooled.reason if isinstance(pooled, Refusal) else "no pooled estimate"
    return replace(refusal, needs=f"{refusal.needs} (or a shop-level estimate to borrow from; the shop's: {why})")


def partially_pooled(thin: Mapping[str, Estimate], pooled: Estimate,
                     fitted: Sequence[Estimate] = ()) -> tuple[dict[str, Estimate], float]:
    """Thin listings' own estimates shrunk toward the pooled slope (empirical Bayes, normal-normal).

    The between-listing sd tau comes from all fitted listings (`fitted`, default `thin`) by
    DerSimonian-Laird, floored at MIN_BETWEEN_LISTING_SD; each listing keeps the weight
    tau^2 / (tau^2 + se^2) on its own estimate. Returns (shrunk estimates, tau)."""
    tau = _between_listing_sd(list(fitted) or list(thin.values()), pooled.elasticity)
    return {listing_id: _shrink(e, pooled, tau) for listing_id, e in thin.items()}, tau


def _between_listing_sd(fits: Sequence[Estimate], centre: float) -> float:
    estimates = np.array([e.elasticity for e in fits])
    weights = 1 / np.array([e.se for e in fits]) ** 2
    if len(fits) < 2:
        return MIN_BETWEEN_LISTING_SD
    q = float((weights * (estimates - centre) ** 2).sum())
    scale = float(weights.sum() - (weights ** 2).sum() / weights.sum())
    tau2 = max(0.0, (q - (len(fits) - 1)) / scale) if scale > 0 else 0.0
    return max(math.sqrt(tau2), MIN_BETWEEN_LISTING_SD)


def _shrink(own: Estimate, pooled: Estimate, tau: float) -> Estimate:
    weight = tau ** 2 / (tau ** 2 + own.se ** 2)
    elasticity = weight * own.elasticity + (1 - weight) * pooled.elasticity
    se = math.sqrt(weight * own.se ** 2 + (1 - weight) ** 2 * pooled.se ** 2)
    critical = 1.959964
    baseline = own.baseline
    if baseline is not None:  # the baseline moves with the slope as the fit's covariance says
        moved = baseline.log_cov_elasticity / own.se ** 2 * (elasticity - own.elasticity)
        log_units = min(max(math.log(baseline.units_per_day) + moved, -50.0), 50.0)  # wild thin fits move far
        baseline = replace(baseline, units_per_day=math.exp(log_units),
                           log_cov_elasticity=baseline.log_cov_elasticity * weight)
    return replace(own, elasticity=elasticity, se=se, ci95=(elasticity - critical * se, elasticity + critical * se),
                   method=f"{SHRUNK_METHOD}; own fit: {own.method}", baseline=baseline,
                   own_elasticity=own.elasticity, own_weight=weight)


def estimate_pooled(frame: pl.DataFrame, shop_evidence: ShopEvidence = SHOP_EVIDENCE) -> Estimate | Refusal:
    """The shop's common elasticity: one slope, listing fixed effects (each listing its own level)."""
    check_daily(frame)
    ordered = frame.sort("listing_id", "day")
    ids = ordered["listing_id"].to_numpy()
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]) if len(ids) else np.array([], dtype=int)
    return _pooled(_columns(ordered), list(zip(starts, np.r_[starts[1:], len(ids)])), shop_evidence)


def _pooled(columns: dict[str, np.ndarray], bounds: list[tuple[int, int]], shop_evidence: ShopEvidence) -> Estimate | Refusal:
    group = np.repeat(np.arange(len(bounds)), [stop - start for start, stop in bounds])
    price, units, day = columns["price"], columns["units"], columns["day"]
    known = columns["active"].astype(bool) & np.isfinite(price) & (price > 0) & np.isfinite(units)
    group, price, raw_units, day = group[known], price[known], units[known], day[known].astype(float)
    units = np.clip(raw_units, 0, None)
    never_sold = _never_sold_weekdays(day, units, np.ones(len(day), dtype=bool))  # the shop's closed weekdays
    group, price, raw_units, units, day = (a[~never_sold] for a in (group, price, raw_units, units, day))
    informative = _informative_listings(group, price, units, len(bounds))
    keep = informative[group]
    if informative.sum() < shop_evidence.min_listings or units[keep].sum() < shop_evidence.min_total_units:
        return Refusal(f"{int(informative.sum())} listings with sales at 2+ prices, {units[keep].sum():g} units",
                       f"at least {shop_evidence.min_listings} listings with sales at 2 or more prices and "
                       f"{shop_evidence.min_total_units:g} units between them")
    group, price, units, day = _compact(group[keep]), price[keep], units[keep], day[keep]
    log_price = np.log(price)
    log_price -= (np.bincount(group, log_price) / np.bincount(group))[group]   # within-listing: FE absorb levels
    controls = _calendar_controls(np.sort(day))                                 # names only; values below
    calendar = _calendar_matrix(day)
    design = np.column_stack([log_price, calendar])
    fit = _conditional_poisson(design, units, group)
    if isinstance(fit, Refusal):
        return fit
    params, cov, iterations, expected = fit
    clusters = int(group.max()) + 1
    elasticity, se = float(params[0]), float(math.sqrt(max(cov[0, 0], 0.0)))
    critical = float(stats.t.ppf(0.975, clusters - 1))
    if not (math.isfinite(elasticity) and math.isfinite(se) and se > 0):
        return Refusal("the pooled fit gave a non-finite value", "more listings with sales at several prices")
    return Estimate(
        elasticity=elasticity, ci95=(elasticity - critical * se, elasticity + critical * se), se=se,
        n_days=len(np.unique(day)), distinct_prices=int(len(np.unique(np.round(price, 2)))),
        price_range=(float(price.min()), float(price.max())), total_units=float(units.sum()),
        method=f"{POOLED_METHOD}; {clusters} listings", family="Poisson (fixed effects)",
        controls=tuple(name for name, _ in controls),
        diagnostics=Diagnostics(
            deviance=_poisson_deviance(units, expected),
            pearson_dispersion=float(((units - expected) ** 2 / expected).sum() / max(len(units) - len(params) - clusters, 1)),
            nb_alpha=None, converged=True,
            iterations=iterations, covariance=f"cluster-robust by listing ({clusters} clusters), t({clusters - 1})",
            clipped_negative_days=int((raw_units < 0).sum()), excluded_inactive_days=int((~columns["active"]).sum()),
            excluded_unknown_price_days=int((columns["active"].astype(bool) & ~known).sum()),
            independent_price_variation=float(np.std(log_price)),
            excluded_never_sold_weekday_days=int(never_sold.sum())),
        baseline=None)


def _informative_listings(group: np.ndarray, price: np.ndarray, units: np.ndarray, count: int) -> np.ndarray:
    """Listings that inform a common slope: some sales and at least two prices."""
    sold = np.bincount(group, units, minlength=count) > 0
    log_price = np.log(price)
    spread = (np.bincount(group, log_price ** 2, minlength=count) / np.maximum(np.bincount(group, minlength=count), 1)
              - (np.bincount(group, log_price, minlength=count) / np.maximum(np.bincount(group, minlength=count), 1)) ** 2)
    return sold & (spread > 1e-8)


def _compact(group: np.ndarray) -> np.ndarray:
    _, compact = np.unique(group, return_inverse=True)
    return compact


def _calendar_matrix(day: np.ndarray) -> np.ndarray:
    """Weekday dummies and a shop-wide linear trend for rows in any order (no intercept: FE hold it)."""
    weekday = (day.astype(int) + 3) % 7
    present = [d for d in range(1, 7) if (weekday == d).any() and (weekday != d).any()]
    span = max(float(day.max() - day.min()), 1.0)
    trend = (day - day.mean()) / span
    return np.column_stack([(weekday == d).astype(float) for d in present] + [trend])


def _conditional_poisson(design: np.ndarray, units: np.ndarray, group: np.ndarray,
                         max_iterations: int = 50) -> tuple[np.ndarray, np.ndarray, int, np.ndarray] | Refusal:
    """Poisson with one intercept per group, the intercepts profiled out (the multinomial conditional
    likelihood): Newton on the common slopes, cluster-robust sandwich by group. Consistent under
    overdispersion and any within-listing correlation, as the cluster sandwich does not assume them."""
    totals = np.bincount(group, units)
    beta = np.zeros(design.shape[1])
    for iteration in range(1, max_iterations + 1):
        share, expected = _group_shares(design, beta, group, totals)
        residual = units - expected
        score = design.T @ residual
        hessian = _conditional_hessian(design, share, totals, group)
        try:
            step = np.linalg.solve(hessian, score)
        except np.linalg.LinAlgError:
            return Refusal("the pooled fit is singular", "more listings with sales at several prices")
        beta = beta + step
        if not np.isfinite(beta).all():
            return Refusal("the pooled fit diverged", "more listings with sales at several prices")
        if np.abs(step).max() < 1e-8:
            break
    else:
        return Refusal("the pooled fit did not converge", "more listings with sales at several prices")
    share, expected = _group_shares(design, beta, group, totals)
    hessian = _conditional_hessian(design, share, totals, group)
    scores = _group_sums(design * (units - expected)[:, None], group)
    clusters = scores.shape[0]
    try:
        bread = np.linalg.inv(hessian)
    except np.linalg.LinAlgError:
        return Refusal("the pooled fit is singular", "more listings with sales at several prices")
    cov = bread @ (scores.T @ scores) @ bread * clusters / max(clusters - 1, 1)
    return beta, cov, iteration, expected


def _group_sums(values: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Column sums per group (rows: groups); bincount is far faster than np.add.at."""
    count = int(group.max()) + 1
    return np.column_stack([np.bincount(group, values[:, j], minlength=count) for j in range(values.shape[1])])


def _poisson_deviance(units: np.ndarray, expected: np.ndarray) -> float:
    ratio = np.where(units > 0, units / np.maximum(expected, 1e-300), 1.0)
    return float(2 * (units * np.log(ratio) - (units - expected)).sum())


def _group_shares(design, beta, group, totals):
    eta = design @ beta
    eta -= (np.bincount(group, eta) / np.bincount(group))[group]     # stabilise exp within each group
    weight = np.exp(np.clip(eta, -50, 50))
    share = weight / np.bincount(group, weight)[group]
    return share, totals[group] * share


def _conditional_hessian(design, share, totals, group):
    """Y_i [sum_t p x x' - (sum_t p x)(sum_t p x)'] summed over groups."""
    weighted = design * (totals[group] * share)[:, None]
    mean_x = _group_sums(design * share[:, None], group)
    return weighted.T @ design - (mean_x * totals[:, None]).T @ mean_x


# -- an analyst's table ----------------------------------------------------------------------------
TABLE_METHOD = "count GLM on log price"


def estimate_table(frame: pl.DataFrame, price: str, quantity: str, date: str | None = None,
                   controls: Sequence[str] = (), evidence: Evidence = EVIDENCE) -> Estimate | Refusal:
    """The same estimator on any table: one row per period (or per observation when undated).

    With `date`: weekday dummies, a trend and HAC standard errors (rows in date order; HC3 when a
    date repeats). Without: HC3 only. Controls enter as given (centred), linearly in log demand.
    Refusals name the offending column in `field`."""
    problem = _table_problem(frame, price, quantity, date, controls)
    if problem is not None:
        return problem
    series = _table_series(frame, price, quantity, date, controls)
    if isinstance(series, Refusal):
        return series
    refusal = _summary_refusal(series, evidence)
    if refusal is not None:
        return replace(refusal, reason=refusal.reason.replace("active days", "rows"),
                       needs=refusal.needs.replace("this listing", "this table").replace("active days", "rows"))
    method = TABLE_METHOD + (", weekday and trend controls" if date else "") + (
        f", controls {', '.join(controls)}" if controls else "")
    return _fit(series, evidence, method)


def _table_problem(frame: pl.DataFrame, price: str, quantity: str, date: str | None,
                   controls: Sequence[str]) -> Refusal | None:
    if not isinstance(frame, pl.DataFrame):
        return Refusal("the table is not a polars DataFrame", "a table with price and quantity columns")
    named = [price, quantity] + ([date] if date else []) + list(controls)
    for column in named:
        if column not in frame.columns:
            return Refusal(f"column {column!r} is missing", f"a column named {column!r}; the table has "
                           f"{', '.join(map(repr, frame.columns[:20])) or 'no columns'}", column)
    if len(set(named)) != len(named):
        return Refusal("a column is named twice among price, quantity, date and controls",
                       "distinct columns for each role", controls[0] if controls else quantity)
    for column in [price, quantity] + list(controls):
        refusal = _numeric_problem(frame, column, positive=column == price)
        if refusal is not None:
            return refusal
    return None


def _numeric_problem(frame: pl.DataFrame, column: str, positive: bool) -> Refusal | None:
    dtype = frame.schema[column]
    if not dtype.is_numeric():
        return Refusal(f"column {column!r} is not numeric ({dtype})", f"numbers in column {column!r}", column)
    values = frame[column].cast(pl.Float64)
    counts = {"missing": values.null_count(), "NaN": int(values.is_nan().sum() or 0),
              "infinite": int(values.is_infinite().sum() or 0)}
    if positive:
        counts["non-positive"] = int((values.fill_nan(None) <= 0).sum() or 0)
    for kind, count in counts.items():
        if count:
            return Refusal(f"column {column!r} has {count} {kind} value{'s' if count > 1 else ''}",
                           f"{'positive ' if positive else ''}finite numbers in every row of {column!r}", column)
    return None


def _table_series(frame: pl.DataFrame, price: str, quantity: str, date: str | None,
                  controls: Sequence[str]) -> _Series | Refusal:
    table = frame.select(pl.col(price).cast(pl.Float64).alias("price"), pl.col(quantity).cast(pl.Float64).alias("units"),
                         *[pl.col(c).cast(pl.Float64).alias(f"control_{i}") for i, c in enumerate(controls)])
    calendar: tuple[tuple[str, np.ndarray], ...] = ()
    time_ordered = False
    if date:
        days = _table_days(frame[date], date)
        if isinstance(days, Refusal):
            return days
        order = np.argsort(days, kind="stable")
        table, days = table[order], days[order]
        calendar = _calendar_controls(days.astype(float))
        time_ordered = bool(len(days) < 2 or (np.diff(days) > 0).all())
    units, prices = table["units"].to_numpy(), table["price"].to_numpy()
    extra = tuple((name, _centred(table[f"control_{i}"].to_numpy())) for i, name in enumerate(controls))
    for name, values in extra:
        if len(values) and values.std() == 0:
            return Refusal(f"column {name!r} is constant", f"a control that varies, or drop {name!r}", name)
    reference = (np.arange(max(len(units) - 7, 0), len(units)) if date else np.arange(len(units)))
    return _Series(units=np.clip(units, 0, None), price=prices, controls=calendar + extra, reference_rows=reference,
                   reference_price=float(prices[-1] if date else np.median(prices)) if len(prices) else 0.0,
                   clipped=int((units < 0).sum()), excluded_inactive=0, excluded_unknown_price=0,
                   time_ordered=time_ordered)


def _centred(values: np.ndarray) -> np.ndarray:
    return values - values.mean() if len(values) else values


def _table_days(column: pl.Series, name: str) -> np.ndarray | Refusal:
    """Days since 1970-01-01 from a Date, Datetime or ISO-date text column."""
    if column.dtype == pl.Date:
        days = column
    elif isinstance(column.dtype, pl.Datetime):
        days = column.dt.date()
    elif column.dtype == pl.Utf8:
        days = column.str.strip_chars().str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False)
        unparsed = int(days.null_count() - column.null_count())
        if unparsed:
            return Refusal(f"column {name!r} has {unparsed} value(s) that are not dates (YYYY-MM-DD)",
                           f"ISO dates in column {name!r}", name)
    else:
        return Refusal(f"column {name!r} is not a date ({column.dtype})", f"dates in column {name!r}", name)
    if days.null_count():
        return Refusal(f"column {name!r} has {days.null_count()} missing value(s)", f"a date in every row of {name!r}", name)
    return days.cast(pl.Int32).to_numpy()
