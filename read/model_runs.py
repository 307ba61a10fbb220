"""Demand model runs: fitted by a refresh, stored as a read model (migrations/0610), read by the API,
the CLI and the optimise-profit rule. Nothing here fits on a request: reads only select stored runs.

A shop's refresh reads its daily frame (read/demand.py) over the window, fits every listing's
elasticity (own, partially pooled or refused) and the shop's pooled one (domain/demand/elasticity.py,
as estimate_shop composes them, the listings' fits shared between processes), forecasts every
listing and the shop, recommends a price per listing from its current
price and guardrails (replayed from the log), and writes all of it in one transaction that also
points analytics.model_refreshes at the new runs: readers see the previous refresh until it commits,
a crash leaves it served, and a rerun only writes a newer refresh.

The window: WINDOW_DAYS days ending on the shop's last day with a sale, at most yesterday (today is
still filling up; an imported history ends where its sales end). Runs older than RETAIN_DAYS
(forecasts: FORECAST_RETAIN_DAYS) are deleted by the next refresh of their shop, except the ones
its current refresh holds.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Callable, Iterator, Mapping, Sequence
from uuid import UUID

import polars as pl
import psycopg

from codec.time_loaders import reading_adapters
from domain.demand.elasticity import (CAVEAT, EVIDENCE, SHOP_EVIDENCE, THIN_EVIDENCE, Estimate, Refusal,
                                      ShopEstimates, estimate_listing, estimate_pooled, expected_units,
                                      partially_pooled)
from domain.demand.forecast import Forecast, forecast
from domain.demand.frame import DAILY_SCHEMA
from domain.demand.recommend import DEFAULT_STEP_PERCENT, MoneyRange, Outlook, recommend
from domain.listing import Listing
from domain.money import minor_unit
from domain.rules import RecommendationRun
from projections.queries import Query, Result, View, run as run_query
from read.aggregates import fold
from read.demand import EARLIEST_DAY, daily_demand
from read.experiments import EXPERIMENT_CAVEAT, concluded_elasticities, prefer_experiments

log = logging.getLogger(__name__)

WINDOW_DAYS = 365
RETAIN_DAYS = 35                  # elasticity and recommendation runs (which run justified which price)
FORECAST_RETAIN_DAYS = 7          # forecasts are a shop's largest runs (90 days each) and age fastest
FORECAST_HORIZON = 90             # days stored; reads slice it
FULL_FORECASTS = 20               # best sellers offered every candidate where their data qualifies (SARIMAX
                                  # the costly estimated fits); the rest the light tier (docs/performance.md)
LISTING_CHUNK = 250               # listings per fitting task handed to a worker process
PROCESSES = 2                     # fitting processes of a large shop (the machine's two cores)
POOL_MIN_LISTINGS = 200           # below this, fitting in-process is quicker than starting worker processes
KINDS = ("elasticity", "forecast", "recommendation")
SIGNIFICANT = 6                   # digits kept of a model's floats: a run's JSON stays small


FORECAST_CAVEAT = ("Forecast from past sales at past prices: it assumes the listing stays on sale at the price "
                   "the answer names and demand keeps its recent pattern. For what a price change would do, "
                   "read the elasticity (observational: confirm it with a price experiment).")


class Stopped(Exception):
    """The refresh was asked to stop (serve shutting down); the shop in progress was not written."""


@dataclass(frozen=True, slots=True)
class StoredRun:
    run_id: UUID
    refresh_id: UUID
    shop_id: UUID
    listing_id: UUID | None
    kind: str
    created_at: datetime
    first_day: date | None
    last_day: date | None
    model: str
    params: dict
    diagnostics: dict | None
    answer: dict
    refused: bool


@dataclass(frozen=True, slots=True)
class ShopRefreshed:
    shop_id: UUID
    refresh_id: UUID | None           # None: skipped (see `skipped`)
    listings: int
    runs: int
    refused: Mapping[str, int]        # refused runs by kind
    window: tuple[date, date] | None
    seconds: float
    skipped: str | None = None


@dataclass(frozen=True, slots=True)
class RefreshSummary:
    pass_id: UUID
    shops: tuple[ShopRefreshed, ...]
    resumed: bool                     # an unfinished pass was continued: its refreshed shops were skipped
    seconds: float

    def lines(self) -> list[str]:
        done = [s for s in self.shops if s.skipped is None]
        out = [f"refreshed {len(done)} shop(s) in {self.seconds:.1f}s" + (" (resumed an unfinished pass)" if self.resumed else "")]
        for s in self.shops:
            if s.skipped:
                out.append(f"  {s.shop_id}: skipped, {s.skipped}")
                continue
            window = f"{s.window[0]} to {s.window[1]}" if s.window else "no sales yet"
            refused = ", ".join(f"{n} {kind}" for kind, n in sorted(s.refused.items()) if n) or "none"
            out.append(f"  {s.shop_id}: {s.listings} listings, {s.runs} runs (refused: {refused}), window {window},"
                       f" {s.seconds:.1f}s, refresh {s.refresh_id}")
        return out


# -- the refresh -----------------------------------------------------------------------------------
def refresh(source, shop_id: UUID | str | None = None, progress: Callable[[int, int], None] | None = None,
            processes: int = PROCESSES, today: date | None = None,
            should_stop: Callable[[], bool] = lambda: False) -> RefreshSummary:
    """Refit and store the model runs of one shop or of every shop. source: a conninfo or a read pool.

    progress(fits done, fits in all): two per listing (an elasticity and a forecast), as shops are fitted. Resumable: a pass over the same
    scope that did not finish is continued, skipping the shops it already refreshed. Stopped is
    raised when should_stop() turns true (the shop in progress is left as it was)."""
    started = time.monotonic()
    today = today or datetime.now(timezone.utc).date()
    with _connection(source) as conn:
        shops = _shops(conn, shop_id)
        pass_id, resumed_since = _open_pass(conn, "all" if shop_id is None else str(shops[0][0]))
        done_already = _refreshed_since(conn, resumed_since) if resumed_since else set()
        total, finished, results = sum(2 * n for _, n in shops), 0, []
        for shop, listings in shops:
            if should_stop():
                raise Stopped()
            if shop in done_already:
                results.append(ShopRefreshed(shop, None, listings, 0, {}, None, 0.0, "refreshed earlier in this pass"))
            else:
                step = (lambda n, base=finished: progress(base + n, total)) if progress else None
                results.append(refresh_shop(conn, shop, today, processes, step, should_stop))
            finished += 2 * listings
            if progress:
                progress(finished, total)
        _close_pass(conn, pass_id)
    return RefreshSummary(pass_id, tuple(results), resumed_since is not None, time.monotonic() - started)


def refresh_shop(conn: psycopg.Connection, shop_id: UUID, today: date, processes: int = PROCESSES,
                 progress: Callable[[int], None] | None = None,
                 should_stop: Callable[[], bool] = lambda: False) -> ShopRefreshed:
    """Fit and store one shop's runs (one transaction). Skipped while another process refreshes it."""
    started = time.monotonic()
    if not conn.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))", [_LOCK, str(shop_id)]).fetchone()[0]:
        return ShopRefreshed(shop_id, None, 0, 0, {}, None, 0.0, "another process is refreshing it")
    try:
        currency = conn.execute("SELECT currency FROM shop_directory WHERE shop_id = %s", [shop_id]).fetchone()[0]
        window = _window(conn, shop_id, today)
        frame = (daily_demand(conn, shop_id, since=window[0], until=window[1]) if window
                 else pl.DataFrame(schema=DAILY_SCHEMA))
        listings = _listings_now(conn, shop_id)
        fitted = prefer_experiments(fit(frame, currency, processes, progress, should_stop),
                                    concluded_elasticities(conn, shop_id))
        created = datetime.now(timezone.utc)
        refresh_id = uuid.uuid4()
        rows, window = _rows(refresh_id, shop_id, created, currency, frame, listings, fitted)
        _write(conn, refresh_id, shop_id, created, window, len(listings), rows, time.monotonic() - started)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", [_LOCK, str(shop_id)])
    refused = {kind: sum(1 for r in rows if r["kind"] == kind and r["refused"]) for kind in KINDS}
    return ShopRefreshed(shop_id, refresh_id, len(listings), len(rows), refused, window, time.monotonic() - started)


_LOCK = 0x4D4F444C  # "MODL": the advisory lock space of shop refreshes


def _window(conn: psycopg.Connection, shop_id: UUID, today: date) -> tuple[date, date] | None:
    """WINDOW_DAYS ending on the shop's last day with a sale, at most yesterday; None: no sale yet.
    Days before EARLIEST_DAY (facts stored before the commands refused them) are no window's end."""
    last = conn.execute("SELECT max(day) FROM analytics.demand_daily WHERE shop_id = %s AND units_sold > 0"
                        " AND day >= %s AND day < %s", [shop_id, EARLIEST_DAY, today]).fetchone()[0]
    if last is None:
        return None
    return last - timedelta(days=WINDOW_DAYS - 1), last


def _shops(conn: psycopg.Connection, shop_id) -> list[tuple[UUID, int]]:
    """(shop, listings) in shop order: the one asked for, or every shop."""
    rows = conn.execute(
        "SELECT d.shop_id, (SELECT count(*) FROM shop_listings l WHERE l.shop_id = d.shop_id) FROM shop_directory d"
        " WHERE %(shop)s::uuid IS NULL OR d.shop_id = %(shop)s ORDER BY d.shop_id",
        {"shop": None if shop_id is None else UUID(str(shop_id))}).fetchall()
    if shop_id is not None and not rows:
        raise LookupError(f"shop {shop_id} not found")
    return [(shop, int(n)) for shop, n in rows]


def _open_pass(conn: psycopg.Connection, scope: str) -> tuple[UUID, datetime | None]:
    """(pass id, when the resumed pass started, or None for a new pass)."""
    row = conn.execute("SELECT pass_id, started_at FROM analytics.model_refresh_passes WHERE scope = %s"
                       " AND finished_at IS NULL ORDER BY started_at DESC LIMIT 1", [scope]).fetchone()
    if row is not None:
        return row[0], row[1]
    pass_id = uuid.uuid4()
    conn.execute("INSERT INTO analytics.model_refresh_passes (pass_id, scope, started_at) VALUES (%s, %s, now())",
                 [pass_id, scope])
    return pass_id, None


def _refreshed_since(conn: psycopg.Connection, since: datetime) -> set[UUID]:
    return {shop for shop, in conn.execute("SELECT shop_id FROM analytics.model_refreshes WHERE created_at >= %s",
                                           [since])}


def _close_pass(conn: psycopg.Connection, pass_id: UUID) -> None:
    conn.execute("UPDATE analytics.model_refresh_passes SET finished_at = now() WHERE pass_id = %s", [pass_id])


def last_finished(conn: psycopg.Connection) -> datetime | None:
    """When the last refresh of every shop finished (the schedule counts from it)."""
    return conn.execute("SELECT max(finished_at) FROM analytics.model_refresh_passes WHERE scope = 'all'").fetchone()[0]


# -- the shop's listings as the log has them now ----------------------------------------------------
_LISTING_EVENTS = """
    SELECT e.originator_id, e.originator_version, e.topic, e.state FROM shop_listings l
    JOIN pricing_events e ON e.originator_id = l.listing_id
    WHERE l.shop_id = %s ORDER BY e.originator_id, e.originator_version"""


def _listings_now(conn: psycopg.Connection, shop_id: UUID) -> dict[str, Listing]:
    """Every listing of the shop, replayed from its events (all read in one query): price and guardrails."""
    listings = fold(conn.execute(_LISTING_EVENTS, [shop_id]))
    return {str(k): v for k, v in listings.items() if isinstance(v, Listing)}


# -- fitting: in this process for a small shop, in worker processes for a large one -----------------
@dataclass(frozen=True, slots=True)
class Fitted:
    elasticities: ShopEstimates
    forecasts: Mapping[str, dict]      # forecast runs' columns by listing (forecast_record)
    shop_forecast: dict


def fit(frame: pl.DataFrame, currency: str, processes: int = PROCESSES,
        progress: Callable[[int], None] | None = None, should_stop: Callable[[], bool] = lambda: False) -> Fitted:
    """Every model of the shop's daily frame. progress(fits done: one elasticity and one forecast per listing)."""
    tasks = _tasks(frame, currency)
    listings = frame["listing_id"].n_unique() if frame.height else 0
    if processes <= 1 or listings < POOL_MIN_LISTINGS:
        results, done = [], 0
        for _, function, args, weight in tasks:
            if should_stop():
                raise Stopped()
            results.append(function(*args))
            done += weight
            if progress:
                progress(done)
    else:
        results = _in_workers([task[1:] for task in tasks], processes, progress, should_stop)
    by_kind: dict[str, list] = {}
    for (kind, *_), result in zip(tasks, results):
        by_kind.setdefault(kind, []).append(result)
    answers = {listing: answer for chunk in by_kind.get("elasticity", []) for listing, answer in chunk.items()}
    forecasts = {listing: record for chunk in by_kind.get("forecast", []) for listing, record in chunk.items()}
    return Fitted(shop_elasticities(answers, by_kind["pooled"][0]), forecasts, by_kind["shop forecast"][0])


def _tasks(frame: pl.DataFrame, currency: str) -> list[tuple[str, Callable, tuple, int]]:
    """(kind, function, arguments, fits it makes), the longest first so that the processes end
    together: the pooled slope, listings' elasticities, then forecasts. The FULL_FORECASTS best
    sellers get every forecast candidate (where their data qualifies), the rest the light tier."""
    ids = frame["listing_id"].unique(maintain_order=True).to_list() if frame.height else []
    sellers = (frame.group_by("listing_id").agg(pl.col("units").sum()).sort("units", "listing_id", descending=[True, False])
               ["listing_id"].head(FULL_FORECASTS).to_list() if frame.height else [])
    rest = [listing for listing in ids if listing not in set(sellers)]

    def part(chunk: list[str]) -> pl.DataFrame:
        return frame.filter(pl.col("listing_id").is_in(chunk))

    elasticity = [("elasticity", elasticity_listings, (part(chunk),), len(chunk)) for chunk in _chunks(ids)]
    forecasts = [("forecast", forecast_listings, (part(chunk), currency, full), len(chunk))
                 for chunk, full in [(sellers, True)] + [(chunk, False) for chunk in _chunks(rest)] if chunk]
    return [("pooled", estimate_pooled, (frame,), 0), *elasticity, ("shop forecast", forecast_shop, (frame, currency), 0),
            *forecasts]


def _chunks(ids: list[str]) -> list[list[str]]:
    return [ids[i:i + LISTING_CHUNK] for i in range(0, len(ids), LISTING_CHUNK)]


# The shop's elasticities from estimate_shop's public parts, so that processes can share the listings'
# fits: each listing's own answer at EVIDENCE and, when its own data falls short, its fit at
# THIN_EVIDENCE (elasticity_listings, in any process); the shop's pooled slope (estimate_pooled); the
# thin fits shrunk toward it (partially_pooled). A thin fit is tried for every own refusal, where
# estimate_shop tries it only below EVIDENCE's summary thresholds (a fit refused at EVIDENCE may pass
# at THIN_EVIDENCE's lower independent price variation here).
def elasticity_listings(frame: pl.DataFrame) -> dict[str, tuple[Estimate | Refusal, Estimate | None]]:
    answers = {}
    for part in frame.partition_by("listing_id", maintain_order=True):
        own, thin = estimate_listing(part, EVIDENCE), None
        if isinstance(own, Refusal):
            fit = estimate_listing(part, THIN_EVIDENCE)
            thin = replace(fit, method=fit.method + THIN_LABEL) if isinstance(fit, Estimate) else None
        answers[part["listing_id"][0]] = (own, thin)
    return answers


THIN_LABEL = " (thin: below the evidence thresholds alone)"  # as estimate_shop labels a thin listing's own fit


def shop_elasticities(answers: Mapping[str, tuple[Estimate | Refusal, Estimate | None]],
                      pooled: Estimate | Refusal) -> ShopEstimates:
    ordered = sorted(answers.items())  # estimate_shop's order: the shrinkage's sums come out the same
    own = {listing: answer for listing, (answer, _) in ordered}
    thin = {listing: fit for listing, (_, fit) in ordered if fit is not None}
    if isinstance(pooled, Refusal) or not thin:
        why = pooled.reason if isinstance(pooled, Refusal) else "no pooled estimate"
        for listing in thin:
            own[listing] = replace(own[listing], needs=f"{own[listing].needs} (or a shop-level estimate to borrow"
                                                       f" from; the shop's: {why})")
        return ShopEstimates(pooled, own, None)
    fitted = [e for e in own.values() if isinstance(e, Estimate)] + list(thin.values())
    shrunk, between = partially_pooled(thin, pooled, fitted)
    return ShopEstimates(pooled, {**own, **shrunk}, between)


def _in_workers(tasks: list, processes: int, progress: Callable[[int], None] | None,
                should_stop: Callable[[], bool]) -> list:
    # spawn, not fork: the caller may be a server with threads and open connections
    with _one_blas_thread():
        pool = multiprocessing.get_context("spawn").Pool(processes)
    try:
        pending = [(pool.apply_async(function, args), weight) for function, args, weight in tasks]
        done, counted = 0, set()
        while len(counted) < len(pending):
            if should_stop():
                raise Stopped()
            for i, (result, weight) in enumerate(pending):
                if i not in counted and result.ready():
                    counted.add(i)
                    done += weight
                    if progress:
                        progress(done)
            time.sleep(0.05)
        results = [result.get() for result, _ in pending]
        pool.close()
        return results
    finally:
        pool.terminate()  # a stop ends the fits in progress at once


@contextmanager
def _one_blas_thread() -> Iterator[None]:
    """Processes started inside get one BLAS thread unless the environment says otherwise: statsmodels'
    matrices are tiny, and more threads only spin (domain/demand/forecast.py)."""
    unset = [name for name in BLAS_THREADS if name not in os.environ]
    os.environ.update({name: "1" for name in unset})
    try:
        yield
    finally:
        for name in unset:
            os.environ.pop(name, None)


BLAS_THREADS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def forecast_listings(frame: pl.DataFrame, currency: str, full: bool) -> dict[str, dict]:
    """Each listing's forecast run (FORECAST_HORIZON days), made into its columns where it was fitted:
    a worker process sends back plain lists, not a hundred thousand small objects.
    full: every candidate where the data qualifies; else the light tier."""
    records = {}
    for part in frame.partition_by("listing_id", maintain_order=True):
        answer = _forecast(part, currency, "auto" if full else "light")
        records[part["listing_id"][0]] = forecast_record(answer, _active_span(part))
    return records


def forecast_shop(frame: pl.DataFrame, currency: str) -> dict:
    """The shop's daily total (every candidate): units and revenue summed, open when any listing was."""
    totals = (frame.group_by("day").agg(pl.col("units").sum(), pl.col("revenue").sum(), pl.col("active").any())
              .sort("day"))
    return forecast_record(_forecast(totals, currency, "auto"), _active_span(frame))


def _forecast(series: pl.DataFrame, currency: str, effort: str) -> Forecast | Refusal:
    try:
        return forecast(series, FORECAST_HORIZON, effort=effort, currency=currency)
    except Exception as error:  # one series the models choke on must not cost the shop its refresh
        log.warning("forecast failed: %r", error)
        return Refusal(f"the forecast failed ({type(error).__name__})", "a longer or steadier history")


# -- rows ------------------------------------------------------------------------------------------
def _rows(refresh_id: UUID, shop_id: UUID, created: datetime, currency: str, frame: pl.DataFrame,
          listings: Mapping[str, Listing], fitted: Fitted) -> tuple[list[dict], tuple[date, date] | None]:
    """Every run of the refresh, and the shop's data window."""
    windows, from_sales = _listing_windows(frame), _days_priced_from_sales(frame)
    shop_window = (min(w[0] for w in windows.values()), max(w[1] for w in windows.values())) if windows else None
    base = {"refresh_id": refresh_id, "shop_id": shop_id, "created_at": created}
    no_data = Refusal("no days in the window", "sales at several prices in the last year")
    rows = [{**base, "run_id": uuid.uuid4(), "listing_id": None, "kind": "elasticity", "window": shop_window,
             **elasticity_record(fitted.elasticities.pooled, currency, sum(from_sales.values()))},
            {**base, "run_id": uuid.uuid4(), "listing_id": None, "kind": "forecast", **fitted.shop_forecast}]
    for listing_id in sorted(set(listings) | set(fitted.elasticities.listings)):
        window, key, elasticity_run = windows.get(listing_id), UUID(listing_id), uuid.uuid4()
        estimate = fitted.elasticities.listings.get(listing_id) or no_data
        rows += [{**base, "run_id": elasticity_run, "listing_id": key, "kind": "elasticity", "window": window,
                  **elasticity_record(estimate, currency, from_sales.get(listing_id, 0))},
                 {**base, "run_id": uuid.uuid4(), "listing_id": key, "kind": "forecast",
                  **(fitted.forecasts.get(listing_id) or forecast_record(no_data, window))},
                 {**base, "run_id": uuid.uuid4(), "listing_id": key, "kind": "recommendation", "window": window,
                  **recommendation_record(estimate, listings.get(listing_id), currency, elasticity_run)}]
    return rows, shop_window


def _active_span(frame: pl.DataFrame) -> tuple[date, date] | None:
    days = frame.filter(pl.col("active"))["day"]
    return (days.min(), days.max()) if len(days) else None


def _listing_windows(frame: pl.DataFrame) -> dict[str, tuple[date, date]]:
    """Each listing's first and last active day in the frame."""
    if not frame.height:
        return {}
    spans = (frame.filter(pl.col("active")).group_by("listing_id")
             .agg(pl.col("day").min().alias("first"), pl.col("day").max().alias("last")))
    return {row[0]: (row[1], row[2]) for row in spans.iter_rows()}


def _days_priced_from_sales(frame: pl.DataFrame) -> dict[str, int]:
    """Per listing, the active days whose price is the mean paid price (no price history known then)."""
    if "price_from_sales" not in frame.columns:
        return {}
    counts = (frame.filter(pl.col("active") & pl.col("price_from_sales")).group_by("listing_id").len())
    return dict(zip(counts["listing_id"].to_list(), counts["len"].to_list()))


def elasticity_record(result: Estimate | Refusal, currency: str, days_priced_from_sales: int = 0) -> dict:
    """model, params, diagnostics, answer and refused of an elasticity run. days_priced_from_sales:
    days whose price is the day's mean paid price, where no price change was known (said in the answer:
    such prices mix quantity breaks and discounts into the price)."""
    params = {"window_days": WINDOW_DAYS, "evidence": asdict(EVIDENCE), "thin_evidence": asdict(THIN_EVIDENCE),
              "shop_evidence": asdict(SHOP_EVIDENCE)}
    if isinstance(result, Refusal):
        return _refused(params, result)
    label = ("experiment" if result.caveat == EXPERIMENT_CAVEAT else "shop pooled" if result.baseline is None else
             "partially pooled" if result.own_weight is not None else "own")
    answer = {"elasticity": result.elasticity, "ci95": list(result.ci95), "se": result.se, "label": label,
              "method": result.method, "family": result.family, "n_days": result.n_days,
              "distinct_prices": result.distinct_prices,
              "price_range": [_money(p, currency) for p in result.price_range],
              "total_units": result.total_units, "controls": list(result.controls),
              "own_elasticity": result.own_elasticity, "own_weight": result.own_weight,
              "baseline": _baseline(result, currency), "caveat": result.caveat,
              "price_from_sales_days": days_priced_from_sales}
    return _record(f"{result.method} [{result.family}]", params, _diagnostics(result), answer)


def _baseline(estimate: Estimate, currency: str) -> dict | None:
    base = estimate.baseline
    if base is None:
        return None
    units = expected_units(estimate, base.reference_price)
    low, high = (units[1], units[2]) if not isinstance(units, Refusal) else (None, None)
    return {"reference_price": _money(base.reference_price, currency), "units_per_day": base.units_per_day,
            "units_per_day_ci95": [low, high]}


def _diagnostics(estimate: Estimate) -> dict:
    diagnostics = asdict(estimate.diagnostics)
    diagnostics["warnings"] = list(diagnostics["warnings"])
    return diagnostics


def recommendation_record(estimate: Estimate | Refusal, listing: Listing | None, currency: str,
                          elasticity_run: UUID) -> dict:
    """model, params, diagnostics, answer and refused of a recommendation run."""
    if listing is None:
        return _refused({}, Refusal("the listing is not in the shop's log", "the listing's registration"))
    guardrails = listing.guardrails
    params = {"elasticity_run_id": str(elasticity_run), "current_price": str(listing.price.amount),
              "currency": currency, "default_step_percent": str(DEFAULT_STEP_PERCENT),
              "guardrails": {name: None if value is None else str(getattr(value, "amount", value))
                             for name, value in (("floor", guardrails.floor), ("ceiling", guardrails.ceiling),
                                                 ("cost", guardrails.cost), ("min_margin", guardrails.min_margin),
                                                 ("max_step_percent", guardrails.max_step_percent))}}
    if listing.status != "active":
        return _refused(params, Refusal(f"the listing is {listing.status}", "an active listing", "status"))
    result = recommend(estimate, listing.price.amount, guardrails, currency)
    if isinstance(result, Refusal):
        return _refused(params, result)
    answer = {"price": str(result.price.amount), "currency": currency, "moved": result.moved,
              "objective": result.objective, "current_price": str(listing.price.amount),
              "current": _outlook(result.current), "recommended": _outlook(result.recommended),
              "gain_per_day": str(result.gain_per_day.amount),
              "pessimistic_gain_per_day": str(result.pessimistic_gain_per_day.amount),
              "reasons": list(result.reasons), "elasticity": result.estimate.elasticity,
              "ci95": list(result.estimate.ci95), "elasticity_run_id": str(elasticity_run),
              "caveat": result.estimate.caveat}
    return _record(f"constant-elasticity profit optimum within guardrails ({result.estimate.method})", params,
                   None, answer)


def _outlook(outlook: Outlook) -> dict:
    return {"price": str(outlook.price.amount),
            "units_per_day": {"mean": outlook.units_per_day.mean, "low": outlook.units_per_day.low,
                              "high": outlook.units_per_day.high},
            "revenue_per_day": _range(outlook.revenue_per_day),
            "profit_per_day": None if outlook.profit_per_day is None else _range(outlook.profit_per_day)}


def _range(money: MoneyRange) -> dict:
    return {"mean": str(money.mean.amount), "low": str(money.low.amount), "high": str(money.high.amount)}


def forecast_record(result: Forecast | Refusal, window: tuple[date, date] | None) -> dict:
    """window, model, params, diagnostics, answer and refused of a forecast run. The points are stored
    column by column (a quarter of the size of one object per day); public() turns them into days."""
    params = {"horizon": FORECAST_HORIZON, "window_days": WINDOW_DAYS}
    if isinstance(result, Refusal):
        return {"window": window, **_refused(params, result, FORECAST_CAVEAT)}
    points = result.points
    answer = {"model": result.model, "tier": result.tier, "mase": result.mase,
              "mase_ratio_vs_snaive": result.mase_ratio_vs_snaive, "horizon": result.horizon,
              "backtest_horizon": result.backtest_horizon, "n_days": result.n_days,
              "n_active_days": result.n_active_days, "unit_price": _money(result.unit_price, result.currency or "GBP"),
              "revenue_method": result.revenue_method, "currency": result.currency, "notes": list(result.notes),
              "caveat": FORECAST_CAVEAT,
              "first_day": points[0].day.isoformat() if points else None,
              "points": {"closed": [p.closed for p in points], "units": [p.units for p in points],
                         **{f"units_{level}_{end}": [getattr(getattr(p, f"units_{level}"), end) for p in points]
                            for level in (80, 95) for end in ("lower", "upper")},
                         "revenue": [str(p.revenue) for p in points],
                         **{f"revenue_{level}_{end}": [str(getattr(getattr(p, f"revenue_{level}"), end)) for p in points]
                            for level in (80, 95) for end in ("lower", "upper")}}}
    diagnostics = {"candidates": [asdict(c) for c in result.candidates],
                   "backtest_origins": [d.isoformat() for d in result.backtest_origins]}
    return {"window": result.window, **_record(f"{result.model} ({result.tier} tier)", params, diagnostics, answer)}


def _refused(params: dict, refusal: Refusal, caveat: str = CAVEAT) -> dict:
    answer = {"reason": refusal.reason, "needs": refusal.needs, "field": refusal.field, "caveat": caveat}
    return {"model": "refused", "params": params, "diagnostics": None,
            "answer": answer, "refused": True}


def _record(model: str, params: dict, diagnostics: dict | None, answer: dict) -> dict:
    """A run's columns; a non-finite number anywhere makes it a refusal instead (none ever leaves)."""
    try:
        answer, diagnostics = _finite(answer), _finite(diagnostics)
    except ValueError as error:
        return _refused(params, Refusal(f"the model gave a non-finite value ({error})", "more varied data"))
    return {"model": model, "params": params, "diagnostics": diagnostics,
            "answer": answer, "refused": False}


def _finite(value, where: str = ""):
    """The value with floats rounded to SIGNIFICANT digits; ValueError naming a NaN or infinity."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(where or "value")
        return float(f"{value:.{SIGNIFICANT}g}")
    if isinstance(value, dict):
        return {k: _finite(v, k) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v, where) for v in value]
    return value


def _money(value: float, currency: str) -> str:
    return str(Decimal(repr(float(value))).quantize(minor_unit(currency)))


# -- writing ---------------------------------------------------------------------------------------
_COLUMNS = ("run_id", "refresh_id", "shop_id", "listing_id", "kind", "created_at", "first_day", "last_day", "model",
            "params", "diagnostics", "answer", "refused")


def _write(conn: psycopg.Connection, refresh_id: UUID, shop_id: UUID, created: datetime,
           window: tuple[date, date] | None, listings: int, rows: list[dict], seconds: float) -> None:
    """The runs, the shop's pointer to them and the retention, in one transaction."""
    with conn.transaction(), conn.cursor() as cur:
        with cur.copy(f"COPY analytics.model_runs ({', '.join(_COLUMNS)}) FROM STDIN") as copy:
            for row in rows:
                first, last = row["window"] or (None, None)
                copy.write_row((row["run_id"], row["refresh_id"], row["shop_id"], row["listing_id"], row["kind"],
                                row["created_at"], first, last, row["model"], _json(row["params"]),
                                None if row["diagnostics"] is None else _json(row["diagnostics"]),
                                _json(row["answer"]), row["refused"]))
        first, last = window or (None, None)
        cur.execute("""
            INSERT INTO analytics.model_refreshes (shop_id, refresh_id, created_at, first_day, last_day, listings, runs, seconds)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT (shop_id) DO UPDATE SET refresh_id = excluded.refresh_id, created_at = excluded.created_at,
                first_day = excluded.first_day, last_day = excluded.last_day, listings = excluded.listings,
                runs = excluded.runs, seconds = excluded.seconds""",
                    [shop_id, refresh_id, created, first, last, listings, len(rows), seconds])
        cur.execute("DELETE FROM analytics.model_runs WHERE shop_id = %s AND refresh_id <> %s AND created_at <"
                    " CASE kind WHEN 'forecast' THEN %s::timestamptz ELSE %s::timestamptz END",
                    [shop_id, refresh_id, created - timedelta(days=FORECAST_RETAIN_DAYS),
                     created - timedelta(days=RETAIN_DAYS)])


def _json(value) -> str:
    return json.dumps(value, allow_nan=False, separators=(",", ":"))


# -- reading ---------------------------------------------------------------------------------------
_LATEST = """
    SELECT r.run_id, r.refresh_id, r.shop_id, r.listing_id, r.kind, r.created_at, r.first_day, r.last_day,
           r.model, r.params, r.diagnostics, r.answer, r.refused
    FROM analytics.model_refreshes f JOIN analytics.model_runs r ON r.refresh_id = f.refresh_id
    WHERE f.shop_id = %s AND r.kind = %s AND {listing}"""
_LATEST_OF_LISTING = _LATEST.format(listing="r.listing_id = %s")
_LATEST_OF_SHOP = _LATEST.format(listing="r.listing_id IS NULL")
_LATEST_OF_LISTINGS = _LATEST.format(listing="r.listing_id = ANY(%s::uuid[])")


def latest(conn: psycopg.Connection, shop_id: UUID, listing_id: UUID | None, kind: str) -> StoredRun | None:
    """The run of `kind` for the listing (None: the shop level) in the shop's current refresh."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}")
    query, params = ((_LATEST_OF_SHOP, [shop_id, kind]) if listing_id is None
                     else (_LATEST_OF_LISTING, [shop_id, kind, listing_id]))
    row = conn.execute(query, params).fetchone()
    return None if row is None else StoredRun(*row)


def latest_of_listings(conn: psycopg.Connection, shop_id: UUID, listing_ids: Sequence[UUID],
                       kind: str) -> dict[UUID, StoredRun]:
    """The runs of `kind` of these listings in the shop's current refresh, in one query."""
    runs = [StoredRun(*row) for row in conn.execute(_LATEST_OF_LISTINGS, [shop_id, kind, list(listing_ids)])]
    return {run.listing_id: run for run in runs}


def latest_of_shop(conn: psycopg.Connection, shop_id: UUID, kind: str) -> list[StoredRun]:
    """Every run of `kind` in the shop's current refresh: the shop level first, then listings in id order."""
    rows = conn.execute(_LATEST.format(listing="true") + " ORDER BY r.listing_id NULLS FIRST",
                        [shop_id, kind]).fetchall()
    return [StoredRun(*row) for row in rows]


def refreshed_at(conn: psycopg.Connection, shop_id: UUID) -> datetime | None:
    row = conn.execute("SELECT created_at FROM analytics.model_refreshes WHERE shop_id = %s", [shop_id]).fetchone()
    return None if row is None else row[0]


def public(run: StoredRun, horizon: int | None = None) -> dict:
    """The run as the API and the CLI show it: the common fields, then the answer under its kind's name
    (a forecast's first `horizon` days, default all it holds, one object per day)."""
    payload = {"elasticity": "estimate", "forecast": "forecast", "recommendation": "recommendation"}[run.kind]
    answer = dict(run.answer)
    caveat = answer.pop("caveat", CAVEAT)
    if run.kind == "forecast" and not run.refused:
        answer = _forecast_days(answer, horizon)
    return {"run_id": str(run.run_id), "shop_id": str(run.shop_id),
            "listing_id": None if run.listing_id is None else str(run.listing_id), "kind": run.kind,
            "created_at": run.created_at.isoformat(),
            "window": {"first_day": _day(run.first_day), "last_day": _day(run.last_day)},
            "method": run.model, "refused": run.refused,
            "refusal": ({"reason": answer["reason"], "needs": answer["needs"], "field": answer.get("field")}
                        if run.refused else None),
            payload: None if run.refused else answer,
            "diagnostics": run.diagnostics, "params": run.params, "caveat": caveat}


def _forecast_days(answer: dict, horizon: int | None) -> dict:
    columns, first = answer.pop("points"), date.fromisoformat(answer.pop("first_day"))
    count = len(columns["units"]) if horizon is None else min(horizon, len(columns["units"]))
    answer["horizon"] = count
    answer["points"] = [
        {"day": (first + timedelta(days=i)).isoformat(), "closed": columns["closed"][i], "units": columns["units"][i],
         **{f"{what}_{level}": {end: columns[f"{what}_{level}_{end}"][i] for end in ("lower", "upper")}
            for what in ("units", "revenue") for level in (80, 95)},
         "revenue": columns["revenue"][i]}
        for i in range(count)]
    return answer


def _day(value: date | None) -> str | None:
    return None if value is None else value.isoformat()


def recommendation_run(conn: psycopg.Connection, shop_id: UUID, listing_id: UUID) -> RecommendationRun | None:
    """The listing's latest recommendation as the optimise-profit rule reads it (None: no run yet)."""
    stored = latest(conn, shop_id, listing_id, "recommendation")
    if stored is None:
        return None
    return RecommendationRun.from_stored(stored.run_id, stored.created_at, stored.refused, stored.answer)


# -- the elasticities view: every listing's latest elasticity, paged like the analytics views -------
ELASTICITIES = View(
    "elasticities", "analytics.latest_elasticities",
    ("listing_id", "shop_id", "run_id", "created_at", "first_day", "last_day", "refused", "elasticity", "ci95_low",
     "ci95_high", "se", "label", "n_days", "distinct_prices", "total_units", "method", "reason", "needs"),
    (("listing_id", "uuid"),))


def elasticities_page(conn: psycopg.Connection, shop_id: UUID, limit: int, cursor: str | None,
                      cursor_key: bytes) -> Result:
    """One page in listing order; projections.queries.InvalidQuery names a cursor it did not sign."""
    return run_query(conn, Query(ELASTICITIES, shop_id, limit=limit, cursor=cursor, cursor_key=cursor_key))


# -- serve's schedule ------------------------------------------------------------------------------
class ScheduledRefresh:
    """Every `every_hours`, refresh every shop (what InBackground runs: run(stop), close()).

    Due when the last finished pass over all shops is older than the period, or there is none: a
    restarted server refreshes at once only if a refresh is due. After a failure, it tries again
    after RETRY_S (logged)."""

    RETRY_S = 600.0

    def __init__(self, conninfo: str, every_hours: float, processes: int = PROCESSES,
                 after: Callable[[RefreshSummary], object] | None = None):
        """after(summary): what acts on the new runs (the optimise-profit rule's repricing)."""
        self.conninfo, self.period = conninfo, timedelta(hours=every_hours)
        self.processes, self.after = processes, after
        self.last: RefreshSummary | None = None
        self.failures = 0

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                wait = self._seconds_until_due()
                if wait <= 0:
                    self.last = refresh(self.conninfo, processes=self.processes, should_stop=stop.is_set)
                    log.info("demand models refreshed: %s", "; ".join(self.last.lines()))
                    self._act(self.last)
                    continue
            except Stopped:
                return
            except Exception:  # a database away, a model crashing on odd data: the server keeps serving
                self.failures += 1
                log.exception("demand model refresh failed; retrying in %.0f s", self.RETRY_S)
                wait = self.RETRY_S
            stop.wait(min(wait, 60.0))  # the clock may jump; look again at least every minute

    def _act(self, summary: RefreshSummary) -> None:
        if self.after is None:
            return
        try:
            self.after(summary)
        except Exception:  # the runs are stored: whatever acts on them catches up on its next call
            log.exception("acting on the new demand model runs failed")

    def _seconds_until_due(self) -> float:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            finished = last_finished(conn)
        if finished is None:
            return 0.0
        return (finished + self.period - datetime.now(timezone.utc)).total_seconds()

    def close(self) -> None:
        pass


@contextmanager
def _connection(source) -> Iterator[psycopg.Connection]:
    """An autocommit connection from a conninfo or a read pool (transactions are explicit)."""
    if isinstance(source, str):
        with psycopg.connect(source, autocommit=True, context=reading_adapters()) as conn:
            yield conn
    else:
        with source.connection() as conn:
            yield conn
