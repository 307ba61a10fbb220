"""Daily demand forecasts (units and revenue, 1-90 days ahead, 80% and 95% intervals), the model
chosen per series by a rolling-origin backtest against seasonal-naive.

Candidates (weekly seasonality, m = 7, on calendar days):
- seasonal_naive: each day repeats the last active day of the same weekday. Always computed; it is
  the yardstick and what is served when nothing beats it.
- ets_fixed: ETS(A,N,A) with fixed smoothing (alpha 0.1, gamma 0.05), nothing estimated: a
  weekday profile on an exponentially weighted level. Its recursion is statsmodels' ETSModel's
  (tests compare them); run in numpy it costs well under a millisecond, so every series gets it.
- ets (full tier): statsmodels ETSModel ETS(A,N,A), every parameter and initial state estimated.
  Multiplicative forms are not offered: they raise on the zero-sale days daily units are full of.
  The damped-trend variant ETS(A,Ad,A) is not a candidate: it scored like ETS(A,N,A) on the
  shop's history at several times the fitting cost.
- sarimax (full tier): SARIMAX(0,1,1)(0,1,1)7 (the "airline" model) with log price as exogenous
  regressor when the price moved before the first backtest origin, inactive days missing; the
  future log price is held at the current price unless `future_price` is given.

Tiers: the SARIMAX and ETSModel fits cost some hundred times a whole light-tier forecast, and on
low-volume listings the fixed ETS scores as well as the estimated one (bench/forecast.py). So the
full tier runs only on rich series, where estimated models can tell signal from noise and a
refresh of the whole shop stays within budget: >= 16 weeks of active days, sales on >= 80% of
them and >= 50 units per active day (a shop's total; the busiest products). `effort` overrides it.
Processes that refresh many forecasts should run with one BLAS thread (OPENBLAS_NUM_THREADS=1):
statsmodels' matrices are tiny, and BLAS threads only spin, multiplying the full tier's CPU.

Backtest: origins 7 days apart (BACKTEST_ORIGINS of them), the last one leaving the backtest
horizon (the requested horizon, at most 28 days) before the end of the history. Estimated models
are fitted once, at the first origin, and filtered with those parameters at the later ones and
over the whole history for the served forecast: what is served is what was scored, and one
optimisation per candidate is all a forecast pays for. The score is
MASE: mean absolute error on active days over the in-sample seasonal-naive error (lag 7, active
pairs) of the data before each origin, averaged over origins. Lowest MASE wins; ties go to the
simpler model (seasonal-naive first).

Inactive days (listing not on sale, shop closed) are excluded from every error and from SARIMAX's
likelihood (missing values). ETSModel cannot skip values, so it sees them filled with the same
weekday's value a week earlier (0 where the weekday never sold: a shop closed on Saturdays keeps a
zero Saturday). Future days on a weekday without any active day in the last 4 weeks are forecast
as closed (0 units, interval 0-0). Other future days are assumed active.

Intervals: normal-theory from each model (statsmodels' for the estimated ones; the ETS class-1
variance formula for ets_fixed; sigma * sqrt(weeks ahead) for seasonal-naive). Unit forecasts and
bounds are clipped at 0: additive models go below zero on sparse series (the answer says so).

Revenue = units x the price the forecast assumes (future_price, else the current price): the price
is a decision, not a random variable, so revenue intervals are the unit intervals times that
price, and a price scenario moves revenue consistently with the units model. A series without
prices (a shop's total) uses its unit revenue over the last 4 active weeks instead.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Callable, Literal

import numpy as np
import pandas as pd
import polars as pl
from statsmodels.tsa.exponential_smoothing.ets import ETSModel
from scipy.stats import norm
from statsmodels.tsa.statespace.sarimax import SARIMAX

from domain.demand.elasticity import Refusal
from domain.errors import InvalidValue
from domain.money import check_currency, minor_unit

SEASON = 7
MAX_HORIZON = 90
MIN_ACTIVE_DAYS = 28            # four weeks: one weekly pattern to fit, one to score, at least
MAX_HISTORY_DAYS = 730          # older days say little about next month and cost fitting time
BACKTEST_MAX_HORIZON = 28
BACKTEST_ORIGINS = 3
ORIGIN_STEP = 7
MIN_FIT_DAYS = 21               # days before the first origin: three weeks to learn a weekly profile
CLOSED_LOOKBACK = 28            # a weekday with no active day in these last days is closed
PRICE_REVENUE_WINDOW = 28
FIXED_ALPHA, FIXED_GAMMA = 0.1, 0.05
FULL_TIER_MIN_DAYS = 112
FULL_TIER_MIN_SELLING_SHARE = 0.8
FULL_TIER_MIN_UNITS_PER_DAY = 50.0
MAX_ITERATIONS = 50
MIN_LOG_PRICE_SD = 0.01         # below this the price regressor is not identifiable
LIGHT_MODELS = ("seasonal_naive", "ets_fixed")
FULL_MODELS = LIGHT_MODELS + ("ets", "sarimax")
PRICE_AWARE = frozenset({"sarimax"})

Effort = Literal["auto", "full", "light"]


# -- the answer -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Band:
    lower: float
    upper: float


@dataclass(frozen=True, slots=True)
class MoneyBand:
    lower: Decimal
    upper: Decimal


@dataclass(frozen=True, slots=True)
class ForecastPoint:
    day: date
    closed: bool                  # a weekday the listing has not been active on lately: 0 units
    units: float
    units_80: Band
    units_95: Band
    revenue: Decimal
    revenue_80: MoneyBand
    revenue_95: MoneyBand


@dataclass(frozen=True, slots=True)
class CandidateScore:
    model: str
    mase: float | None            # None when the candidate could not be fitted (see failure)
    ratio_vs_snaive: float | None  # mase / seasonal-naive's mase; None where that is 0 or missing
    failure: str | None = None


@dataclass(frozen=True, slots=True)
class Forecast:
    model: str                    # the candidate served
    tier: str                     # "full" or "light": which candidates ran
    mase: float                   # the served model's backtest MASE
    mase_ratio_vs_snaive: float | None
    candidates: tuple[CandidateScore, ...]
    points: tuple[ForecastPoint, ...]
    window: tuple[date, date]     # the history the forecast stands on
    n_active_days: int
    n_days: int
    horizon: int
    backtest_horizon: int
    backtest_origins: tuple[date, ...]  # first day forecast at each origin
    unit_price: Decimal           # the price revenue is computed at (rounded to the minor unit)
    revenue_method: str
    currency: str | None
    notes: tuple[str, ...]


# -- the history, validated -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _History:
    start: date
    units: np.ndarray             # float, calendar days; NaN on inactive days
    active: np.ndarray            # bool
    filled: np.ndarray            # units with inactive days filled (ETS needs every day)
    log_price: np.ndarray | None  # forward/back-filled; None when no price is known
    price_now: float | None       # the last known price
    revenue: np.ndarray           # 0 on inactive days
    weekday: np.ndarray           # 0 = Monday

    @property
    def n(self) -> int:
        return len(self.units)

    def day(self, index: int) -> date:
        return self.start + timedelta(days=int(index))


def _history(series: pl.DataFrame) -> _History | Refusal:
    """The series on a calendar without gaps (a missing day is an inactive one), numpy arrays."""
    problem = _column_problem(series)
    if problem:
        return problem
    if series.height == 0:
        return Refusal("the series has no rows", f"at least {MIN_ACTIVE_DAYS} active days")
    if series["day"].null_count():
        return Refusal("day has nulls", "a date on every row", "day")
    epoch_days = series["day"].to_physical().to_numpy().astype(np.int64)
    order = np.argsort(epoch_days, kind="stable")
    epoch_days = epoch_days[order]
    if np.any(np.diff(epoch_days) == 0):
        return Refusal("day repeats", "one row per calendar day", "day")
    kept = order[epoch_days > epoch_days[-1] - MAX_HISTORY_DAYS]
    epoch_days = epoch_days[epoch_days > epoch_days[-1] - MAX_HISTORY_DAYS]
    index, n = epoch_days - epoch_days[0], int(epoch_days[-1] - epoch_days[0] + 1)
    active = np.zeros(n, dtype=bool)
    active[index] = _column(series, "active", kept, True).astype(bool)
    columns = {name: _on_calendar(_column(series, name, kept, math.nan), index, n) for name in ("units", "revenue")}
    for name, values in columns.items():
        bad = int(np.sum(~np.isfinite(values[active])))
        if bad:
            return Refusal(f"{name} is missing, NaN or infinite on {bad} active days",
                           f"a finite {name} on every active day", name)
    units, revenue = columns["units"], columns["revenue"]
    units[~active] = np.nan
    revenue[~active] = 0.0
    start = date(1970, 1, 1) + timedelta(days=int(epoch_days[0]))
    weekday = (start.weekday() + np.arange(n)) % SEASON
    price = _on_calendar(_column(series, "price", kept, math.nan), index, n) if "price" in series.columns else None
    return _History(start, units, active, _filled(units, active), _log_price(price), _last_price(price),
                    revenue, weekday)


def _column(series: pl.DataFrame, name: str, rows: np.ndarray, missing: float | bool) -> np.ndarray:
    """A column's values at `rows` as floats (bools for active), nulls as `missing`."""
    if name not in series.columns:
        return np.full(len(rows), missing)
    column = series[name]
    column = column.fill_null(missing) if name == "active" else column.cast(pl.Float64)
    return column.to_numpy()[rows]


def _on_calendar(values: np.ndarray, index: np.ndarray, n: int) -> np.ndarray:
    placed = np.full(n, np.nan)
    placed[index] = values
    return placed


def _column_problem(series: pl.DataFrame) -> Refusal | None:
    if not isinstance(series, pl.DataFrame):
        return Refusal("the series must be a polars DataFrame", "columns day, units, revenue", "series")
    for column, kinds in (("day", (pl.Date,)), ("units", None), ("revenue", None)):
        if column not in series.columns:
            return Refusal(f"column {column} is missing", "columns day, units, revenue (price, active optional)", column)
        dtype = series.schema[column]
        if kinds and dtype not in kinds or not kinds and not dtype.is_numeric():
            return Refusal(f"column {column} has type {dtype}", "day a Date; units, revenue numeric", column)
    for column, numeric in (("price", True), ("active", False)):
        dtype = series.schema.get(column)
        if dtype is None or dtype == pl.Null:  # absent, or nothing but nulls: not known
            continue
        if not (dtype.is_numeric() if numeric else dtype == pl.Boolean):
            return Refusal(f"column {column} has type {dtype}", "price numeric, active Boolean", column)
    return None


def _filled(units: np.ndarray, active: np.ndarray) -> np.ndarray:
    filled = np.where(active, units, 0.0)
    for t in np.flatnonzero(~active):
        filled[t] = filled[t - SEASON] if t >= SEASON else 0.0
    return filled


def _log_price(price: np.ndarray | None) -> np.ndarray | None:
    """Log price on every day: unknown or non-positive days carry the last known price forward
    (the first known one backward); None when no day has a price."""
    if price is None:
        return None
    known = np.isfinite(price) & (price > 0)
    if not known.any():
        return None
    positions = np.where(known, np.arange(len(price)), -1)
    carried = np.maximum.accumulate(positions)
    carried[carried < 0] = np.flatnonzero(known)[0]
    return np.log(price[carried])


def _last_price(price: np.ndarray | None) -> float | None:
    known = np.flatnonzero(np.isfinite(price) & (price > 0)) if price is not None else []
    return float(price[known[-1]]) if len(known) else None


def _history_refusal(history: _History) -> Refusal | None:
    active_days = int(history.active.sum())
    if active_days < MIN_ACTIVE_DAYS:
        return Refusal(f"too short: {active_days} active days", f"at least {MIN_ACTIVE_DAYS} active days")
    if not history.active[-CLOSED_LOOKBACK:].any():
        last = history.day(int(np.flatnonzero(history.active)[-1]))
        return Refusal(f"not on sale in the last 4 weeks (last active day {last.isoformat()})",
                       "active days in the last 4 weeks")
    observed = history.units[history.active]
    if not np.any(observed != 0):
        return Refusal("no sales on any active day: nothing to forecast from",
                       "at least one sale in the history")
    if not _scale(history.units, history.active, history.n) > 0:
        return Refusal("units repeat exactly from week to week: the seasonal-naive error that "
                       "scales MASE is zero, so no model can be compared",
                       "a history whose units vary from one week to the next")
    return None


# -- candidates: forecasts from an origin -----------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Path:
    mean: np.ndarray
    sd: np.ndarray | None = None     # for normal intervals
    bands: dict[float, tuple[np.ndarray, np.ndarray]] | None = None  # from statsmodels


def _snaive_sources(units: np.ndarray, active: np.ndarray, origin: int) -> np.ndarray:
    """For each weekday offset after the origin, the last active day of that weekday (or -1)."""
    sources = np.full(SEASON, -1)
    for k in range(SEASON):
        t = origin - SEASON + k
        while t >= 0 and not active[t]:
            t -= SEASON
        sources[k] = t
    return sources


def _snaive(history: _History, origin: int, horizon: int) -> _Path:
    sources = _snaive_sources(history.units, history.active, origin)
    ahead = np.arange(horizon)
    picked = sources[ahead % SEASON]
    mean = np.where(picked >= 0, history.units[np.maximum(picked, 0)], 0.0)
    sigma = math.sqrt(np.mean(_seasonal_differences(history.units, history.active, origin) ** 2))
    return _Path(mean, sigma * np.sqrt(ahead // SEASON + 1))


def _seasonal_differences(units: np.ndarray, active: np.ndarray, end: int) -> np.ndarray:
    both = active[SEASON:end] & active[:end - SEASON]
    return (units[SEASON:end] - units[:end - SEASON])[both]


def _scale(units: np.ndarray, active: np.ndarray, end: int) -> float:
    differences = _seasonal_differences(units, active, end)
    return float(np.mean(np.abs(differences))) if len(differences) else math.nan


def _fixed_ets_states(filled: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ETS(A,N,A) filtered through the whole series: level after each day, the seasonal value each
    day updated, and the one-step errors. Initial states from the first (up to) four weeks."""
    start = filled[:min(len(filled), 4 * SEASON)]
    level = float(start.mean())
    season = [float(start[k::SEASON].mean()) - level for k in range(SEASON)]
    levels, seasonals, errors = (np.empty(len(filled)) for _ in range(3))
    for t, value in enumerate(filled):
        error = value - (level + season[t % SEASON])
        level += FIXED_ALPHA * error
        season[t % SEASON] += FIXED_GAMMA * error
        levels[t], seasonals[t], errors[t] = level, season[t % SEASON], error
    return levels, seasonals, errors


def _ets_fixed(history: _History, origin: int, horizon: int,
               states: tuple[np.ndarray, np.ndarray, np.ndarray]) -> _Path:
    levels, seasonals, errors = states
    ahead = np.arange(horizon)
    profile = seasonals[origin - SEASON:origin]  # the state at the origin, one value per weekday
    mean = levels[origin - 1] + profile[ahead % SEASON]
    scored = history.active[:origin].copy()
    scored[:min(origin, 2 * SEASON)] = False  # the first weeks' errors reflect the initial guess
    sigma = math.sqrt(np.mean(errors[:origin][scored] ** 2)) if scored.any() else math.nan
    weights = FIXED_ALPHA + FIXED_GAMMA * ((np.arange(1, horizon) % SEASON) == 0)
    variance = 1 + np.concatenate([[0.0], np.cumsum(weights ** 2)])
    return _Path(mean, sigma * np.sqrt(variance))


def _price_moves(history: _History, end: int) -> bool:
    return history.log_price is not None and float(np.std(history.log_price[:end])) >= MIN_LOG_PRICE_SD


class _Estimated:
    """A statsmodels candidate: parameters estimated once, at the first origin; every later origin
    and the served forecast filter the data up to them with those parameters, so what is served is
    what the backtest scored (and a second optimisation is saved)."""

    def __init__(self, name: str, history: _History, first_origin: int, future_log_price: float | None):
        self.name, self.history, self.future_log_price = name, history, future_log_price
        self.with_price = name == "sarimax" and _price_moves(history, first_origin)
        self.params: np.ndarray | None = None

    def _model(self, end: int):
        if self.name == "sarimax":
            exog = self.history.log_price[:end] if self.with_price else None
            return SARIMAX(self.history.units[:end], exog=exog, order=(0, 1, 1),
                           seasonal_order=(0, 1, 1, SEASON), concentrate_scale=True)
        return ETSModel(pd.Series(self.history.filled[:end]), error="add", seasonal="add",
                        seasonal_periods=SEASON)

    def result(self, end: int):
        model = self._model(end)
        if self.params is None:
            # no parameter covariance for SARIMAX: nothing here uses it, and its Hessian is half the cost
            options = {"cov_type": "none"} if self.name == "sarimax" else {}
            fitted = model.fit(disp=False, maxiter=MAX_ITERATIONS, **options)
            self.params = np.asarray(fitted.params)
            return fitted
        return model.filter(self.params) if self.name == "sarimax" else model.smooth(self.params)

    def _exog(self, horizon: int, end: int, held: float | None) -> np.ndarray | None:
        if not self.with_price:
            return None
        return np.full((horizon, 1), held if held is not None else self.history.log_price[end - 1])

    def mean(self, end: int, horizon: int) -> np.ndarray:
        """The backtest's forecast: the price held at the origin's (later prices are not known then)."""
        result = self.result(end)
        if self.name == "sarimax":
            return np.asarray(result.forecast(horizon, exog=self._exog(horizon, end, None)))
        return np.asarray(result.forecast(horizon))

    def path(self, end: int, horizon: int) -> _Path:
        result = self.result(end)
        if self.name == "sarimax":
            prediction = result.get_forecast(horizon, exog=self._exog(horizon, end, self.future_log_price))
            columns = ("mean_ci_lower", "mean_ci_upper")
        else:
            prediction = result.get_prediction(start=end, end=end + horizon - 1)
            columns = ("pi_lower", "pi_upper")
        frames = {alpha: prediction.summary_frame(alpha=alpha) for alpha in (0.2, 0.05)}
        bands = {alpha: (frame[columns[0]].to_numpy(), frame[columns[1]].to_numpy())
                 for alpha, frame in frames.items()}
        return _Path(frames[0.05]["mean"].to_numpy(), bands=bands)


# -- the backtest -----------------------------------------------------------------------------
def _origins(n: int, horizon: int) -> tuple[int, list[int]]:
    """(backtest horizon, origins): as many origins as fit, shrinking the horizon to 7 if need be."""
    backtest = min(horizon, BACKTEST_MAX_HORIZON)
    while True:
        origins = [n - backtest - ORIGIN_STEP * k for k in range(BACKTEST_ORIGINS)][::-1]
        origins = [o for o in origins if o >= MIN_FIT_DAYS]
        if origins or backtest <= SEASON:
            return backtest, origins
        backtest = max(SEASON, n - MIN_FIT_DAYS)


def _mase(history: _History, origin: int, mean: np.ndarray) -> float | None:
    window = slice(origin, origin + len(mean))
    scored = history.active[window]
    scale = _scale(history.units, history.active, origin)
    if not scored.any() or not scale > 0:
        return None
    return float(np.mean(np.abs(np.maximum(mean, 0.0) - history.units[window])[scored]) / scale)


def _scores(history: _History, origins: list[int], horizon: int,
            paths: dict[str, Callable[[int], np.ndarray]]) -> dict[str, float | str]:
    """Each candidate's mean MASE over the origins it could be scored at, or why it failed."""
    usable = [o for o in origins if _mase(history, o, np.zeros(horizon)) is not None]
    scores: dict[str, float | str] = {}
    for name, path in paths.items():
        try:
            values = [_mase(history, o, _finite(path(o))) for o in usable]
        except Exception as error:  # statsmodels raises many kinds on degenerate data
            scores[name] = f"{type(error).__name__}: {str(error)[:120]}"
            continue
        scores[name] = float(np.mean(values)) if values else "no origin could be scored"
    return scores


def _finite(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    if not np.all(np.isfinite(values)):
        raise FloatingPointError("the model produced NaN or infinite values")
    return values


# -- the entry point --------------------------------------------------------------------------
def forecast(series: pl.DataFrame, horizon: int, future_price: float | None = None, *,
             effort: Effort = "auto", currency: str | None = None) -> Forecast | Refusal:
    """Daily units and revenue for the `horizon` days after the series' last day.

    series: one row per day with day (Date), units and revenue (numeric); price (numeric) and
    active (Boolean) optional. future_price: the price assumed over the horizon (default: the
    current one). effort: "auto" picks the tier from the data, "full"/"light" force it.
    currency: the revenue's currency (amounts are rounded to its minor unit; 0.01 without one).
    """
    refusal = _argument_refusal(horizon, future_price, effort, currency)
    if refusal:
        return refusal
    history = _history(series)
    if isinstance(history, Refusal):
        return history
    refusal = _history_refusal(history)
    if refusal:
        return refusal
    unit_price = _unit_price(history, future_price)
    if isinstance(unit_price, Refusal):
        return unit_price
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # statsmodels' convergence chatter; failures are caught
        with np.errstate(all="ignore"):
            return _forecast(history, horizon, future_price, _tier(history, effort), unit_price, currency)


def _argument_refusal(horizon, future_price, effort, currency) -> Refusal | None:
    if isinstance(horizon, bool) or not isinstance(horizon, int) or not 1 <= horizon <= MAX_HORIZON:
        return Refusal(f"horizon must be a whole number of days from 1 to {MAX_HORIZON}",
                       f"a horizon of 1 to {MAX_HORIZON} days", "horizon")
    if future_price is not None:
        try:
            value = float(future_price)
        except (TypeError, ValueError):
            value = math.nan
        if isinstance(future_price, bool) or not math.isfinite(value) or value <= 0:
            return Refusal("future_price must be a finite price above zero", "a positive price", "future_price")
    if effort not in ("auto", "full", "light"):
        return Refusal("effort must be auto, full or light", "one of auto, full, light", "effort")
    if currency is not None:
        try:
            check_currency(currency)
        except InvalidValue as error:
            return Refusal(error.detail, "an ISO 4217 currency code", "currency")
    return None


def _tier(history: _History, effort: Effort) -> str:
    if effort != "auto":
        return effort
    observed = history.units[history.active]
    dense = (len(observed) >= FULL_TIER_MIN_DAYS
             and np.mean(observed > 0) >= FULL_TIER_MIN_SELLING_SHARE
             and np.mean(observed) >= FULL_TIER_MIN_UNITS_PER_DAY)
    return "full" if dense else "light"


def _unit_price(history: _History, future_price) -> tuple[float, str] | Refusal:
    if future_price is not None:
        return float(future_price), "units x the future price given"
    if history.price_now is not None:
        return history.price_now, "units x the current price"
    recent = np.flatnonzero(history.active)[-PRICE_REVENUE_WINDOW:]
    for days, label in ((recent, "the last 4 active weeks"), (np.flatnonzero(history.active), "the history")):
        units, revenue = np.sum(history.units[days]), np.sum(history.revenue[days])
        if units > 0 and revenue > 0 and math.isfinite(revenue / units):
            return float(revenue / units), f"units x revenue per unit over {label} (no price in the series)"
    return Refusal("no price and no positive revenue per unit to turn units into revenue",
                   "a price column, or sales with positive revenue", "price")


def _forecast(history: _History, horizon: int, future_price, tier: str,
              unit_price: tuple[float, str], currency: str | None) -> Forecast | Refusal:
    backtest, origins = _origins(history.n, horizon)
    future_log_price = math.log(float(future_price)) if future_price is not None else None
    states = _fixed_ets_states(history.filled)
    paths: dict[str, Callable[[int], np.ndarray]] = {
        "seasonal_naive": lambda o: _snaive(history, o, backtest).mean,
        "ets_fixed": lambda o: _ets_fixed(history, o, backtest, states).mean,
    }
    estimated = {name: _Estimated(name, history, origins[0], future_log_price)
                 for name in FULL_MODELS if name not in LIGHT_MODELS} if tier == "full" and origins else {}
    for name, candidate in estimated.items():
        paths[name] = lambda o, candidate=candidate: candidate.mean(o, backtest)
    scores = _scores(history, origins, backtest, paths)
    if not isinstance(scores["seasonal_naive"], float):
        return Refusal("no backtest origin could be scored: no active day after it, or no week-to-week "
                       "variation before it", "a longer history with sales spread over several weeks")
    ranked = sorted((s, i, name) for i, (name, s) in enumerate(scores.items()) if isinstance(s, float))
    for _, _, name in ranked:
        path = _final_path(name, history, horizon, states, estimated)
        if path is not None:
            return _answer(history, horizon, tier, name, scores, path, backtest, origins, unit_price,
                           currency, future_price, estimated)
    return Refusal("no candidate produced a finite forecast", "a history with finite units")


def _final_path(name: str, history: _History, horizon: int, states, estimated: dict) -> _Path | None:
    try:
        if name == "seasonal_naive":
            path = _snaive(history, history.n, horizon)
        elif name == "ets_fixed":
            path = _ets_fixed(history, history.n, horizon, states)
        else:
            path = estimated[name].path(history.n, horizon)
        return _checked(path)
    except Exception:  # a candidate that fails on the whole history gives way to the next best
        return None


def _checked(path: _Path) -> _Path | None:
    arrays = [path.mean] + ([path.sd] if path.sd is not None else []) + \
        [a for band in (path.bands or {}).values() for a in band]
    return path if all(np.all(np.isfinite(a)) for a in arrays) else None


# -- assembling the answer --------------------------------------------------------------------
def _closed_weekdays(history: _History) -> set[int]:
    """Weekdays without an active day lately (a shop shut on Saturdays)."""
    recent = slice(max(0, history.n - CLOSED_LOOKBACK), history.n)
    open_days = set(history.weekday[recent][history.active[recent]].tolist())
    return set(range(SEASON)) - open_days


def _bands(path: _Path) -> dict[float, tuple[np.ndarray, np.ndarray]]:
    if path.bands is not None:
        return path.bands
    return {alpha: (path.mean - norm.ppf(1 - alpha / 2) * path.sd, path.mean + norm.ppf(1 - alpha / 2) * path.sd)
            for alpha in (0.2, 0.05)}


def _answer(history: _History, horizon: int, tier: str, name: str, scores: dict, path: _Path,
            backtest: int, origins: list[int], unit_price: tuple[float, str], currency: str | None,
            future_price, estimated: dict) -> Forecast:
    price, revenue_method = unit_price
    quantum = minor_unit(currency) if currency else Decimal("0.01")
    closed = _closed_weekdays(history)
    bands = _bands(path)
    open_days = np.array([history.day(history.n + h).weekday() not in closed for h in range(horizon)])
    clipped = bool(np.any(path.mean[open_days] < 0) or any(np.any(lo[open_days] < 0) for lo, _ in bands.values()))
    points = []
    for h in range(horizon):
        day = history.day(history.n + h)
        shut = day.weekday() in closed
        units, (lo80, hi80), (lo95, hi95) = (0.0, (0.0, 0.0), (0.0, 0.0)) if shut else (
            _units(path.mean[h]), (_units(bands[0.2][0][h]), _units(bands[0.2][1][h])),
            (_units(bands[0.05][0][h]), _units(bands[0.05][1][h])))
        points.append(ForecastPoint(
            day, shut, units, Band(lo80, hi80), Band(lo95, hi95), _money(units * price, quantum),
            MoneyBand(_money(lo80 * price, quantum), _money(hi80 * price, quantum)),
            MoneyBand(_money(lo95 * price, quantum), _money(hi95 * price, quantum))))
    snaive = scores["seasonal_naive"]
    candidates = tuple(_score(model, value, snaive) for model, value in scores.items())
    without_price = name == "sarimax" and not estimated["sarimax"].with_price and history.log_price is not None
    notes = _notes(history, name, clipped, closed, future_price, without_price)
    return Forecast(name, tier, float(scores[name]), _ratio(scores[name], snaive), candidates,
                    tuple(points), (history.start, history.day(history.n - 1)),
                    int(history.active.sum()), history.n, horizon, backtest,
                    tuple(history.day(o) for o in origins), _money(price, quantum), revenue_method, currency, notes)


def _units(value: float) -> float:
    return round(max(float(value), 0.0), 4)


def _money(value: float, quantum: Decimal) -> Decimal:
    return Decimal(repr(float(value))).quantize(quantum)


def _ratio(mase: float, snaive: float) -> float | None:
    return mase / snaive if snaive > 0 else None


def _score(model: str, value: float | str, snaive: float) -> CandidateScore:
    if isinstance(value, str):
        return CandidateScore(model, None, None, value)
    return CandidateScore(model, value, _ratio(value, snaive))


def _notes(history: _History, name: str, clipped: bool, closed: set[int], future_price,
           without_price: bool) -> tuple[str, ...]:
    notes = []
    if clipped:
        notes.append("unit forecasts and bounds below 0 were clipped to 0")
    if closed:
        days = ", ".join(date(2024, 1, 1 + d).strftime("%A") for d in sorted(closed))
        notes.append(f"no activity on {days} in the last 4 weeks: forecast as closed (0 units)")
    if future_price is not None and name not in PRICE_AWARE:
        notes.append("the served model does not use price: units do not respond to future_price "
                     "(revenue does); the elasticity estimate answers price questions")
    if without_price:
        notes.append("the price did not move before the first backtest origin: SARIMAX ran without "
                     "the price regressor")
    return tuple(notes)
