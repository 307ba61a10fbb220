"""`python -m bench.analyze` (`etsypro bench analyze`): the demand models where they run.

- fit_listings_per_s, fit_seconds: read/model_runs.fit() over every product of the shared history
  (bench/retail_frames.py: paid prices as the price in force), the refresh's own fitting: every
  listing's elasticity with the shop's pooled one and partial pooling, every listing's forecast and
  the shop's, in PROCESSES worker processes.
- shop_refresh_seconds: a whole refresh of a synthetic shop recorded through the engine (frame from
  the database, fits, recommendations, one transaction); with --retail-url, also of the imported
  shared shop (`etsypro import online-retail` then `etsypro project --once` into that database).
- read_p95_ms per GET (elasticity, forecast?horizon=30, recommendation) over a real HTTP server,
  with its raw baseline in the same run: raw_select_p95_ms, the stored run selected over psycopg
  (read/model_runs.latest), and the ratio.
- elasticity_abs_error_p90, interval_coverage: bench/elasticity.calibrate() on realistic synthetic
  listings (--seeds per true elasticity).
- forecast_mase_vs_snaive: the shared history's shop total, 28 days ahead from --origins outer
  origins (bench/forecast.py rolling): the served model's MASE over seasonal-naive's (below 1: better).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from uuid import UUID

import httpx
import psycopg

import codec
from api.app import create_app
from api.auth import issue_access_token
from api.server import running
from bench.common import fresh_database, note, percentile, print_table, show
from commands import models
from commands.context import CommandContext
from commands.engine import PricingEngine
from domain.meta import Actor, EventMeta
from domain.money import Money
from projections.projector import Projector
from read import model_runs

ROUTES = ("elasticity", "forecast", "recommendation")
PRICES = ("16.00", "20.00", "24.00")


def fit_figures() -> dict:
    from bench.retail_frames import retail_daily

    frame = retail_daily()
    listings = frame["listing_id"].n_unique()
    started = time.perf_counter()
    fitted = model_runs.fit(frame, "GBP", processes=model_runs.PROCESSES)
    seconds = time.perf_counter() - started
    estimated = sum(not isinstance(e, model_runs.Refusal) for e in fitted.elasticities.listings.values())
    forecast = sum(not isinstance(f, model_runs.Refusal) for f in fitted.forecasts.values())
    return {"fit_listings_per_s": round(listings / seconds, 1), "fit_seconds": round(seconds, 2),
            "fit_listings": listings, "fit_estimated": estimated, "fit_forecast": forecast,
            "fit_processes": model_runs.PROCESSES}


# -- a synthetic shop, recorded through the engine ---------------------------------------------------
def record_shop(engine: PricingEngine, url: str, listings: int, days: int = 70) -> tuple[UUID, list[UUID], str]:
    """A shop of `listings` listings sold over `days` days at three prices in turn (elasticity -2):
    sales through the commands, past prices as an import would record them (a command's business
    time is now). Returns (shop, listings, tenant)."""
    tenant = f"bench-{uuid.uuid4().hex[:8]}"
    ctx = CommandContext(actor=Actor("bench"), tenant_id=tenant)
    shop = UUID(engine.listings.open_shop(ctx, models.OpenShop(name="Bench", currency="GBP")).body["shop_id"])
    specs = [{"external_id": f"b{i}", "sku": f"B{i}", "title": f"Bowl {i}", "price": "20.00", "currency": "GBP",
              "floor": "10.00", "ceiling": "40.00", "cost": "6.00"} for i in range(listings)]
    ids = [UUID(x["listing_id"]) for x in engine.listings.register_listings(
        ctx, shop, models.RegisterListings.model_validate({"listings": specs})).body["listings"]]
    start = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=days + 1)
    aggregates = [engine.core.listing(ctx, shop, i) for i in ids]
    for n, listing in enumerate(aggregates):
        for day in range(0, days, 5):
            meta = EventMeta(str(shop), "bench", "user", "import", "history", uuid.uuid4().hex, "c", "c",
                             start + timedelta(days=day))
            listing.change_price(Money.price(PRICES[(day // 5 + n) % 3], "GBP"), meta)
    engine.core.save(*aggregates)
    rng, sales = random.Random(1), []
    for day in range(days):
        for n, listing in enumerate(ids):
            price = float(PRICES[(day // 5 + n) % 3])
            quantity = sum(rng.random() < 6 * (price / 20) ** -2 / 60 for _ in range(60))
            if quantity:
                sales.append({"listing_id": str(listing), "quantity": quantity, "unit_price": f"{price:.2f}",
                              "currency": "GBP", "order_id": f"o{day}", "transaction_id": f"t{day}-{n}",
                              "sold_at": (start + timedelta(days=day, hours=12)).isoformat()})
    for i in range(0, len(sales), 5000):
        engine.listings.record_sales(ctx, shop, models.RecordSales.model_validate({"sales": sales[i:i + 5000]}))
    projector = Projector(url, codec.to_domain_event)
    try:
        projector.catch_up()
    finally:
        projector.close()
    return shop, ids, tenant


def bearer(engine: PricingEngine, tenant: str) -> dict:
    ctx = CommandContext(actor=Actor("bench"), tenant_id=tenant)
    password = f"bench {uuid.uuid4().hex}"
    engine.identity.create_account(ctx, "reader", "user", password, {"analyst": None})
    session = engine.identity.login("reader", password, "bench", tenant)
    return {"Authorization": f"Bearer {issue_access_token(engine.identity.secrets, session, timedelta(minutes=30))}"}


def read_figures(url: str, requests: int, listings: int) -> dict:
    engine = PricingEngine(url, pool_size=2)
    try:
        shop, ids, tenant = record_shop(engine, url, listings)
        started = time.perf_counter()
        summary = model_runs.refresh(url, shop)
        refresh_seconds = time.perf_counter() - started
        figures = {"shop_refresh_seconds": round(refresh_seconds, 3), "shop_refresh_listings": listings,
                   "shop_refresh_runs": summary.shops[0].runs}
        figures.update(_latencies(engine, url, shop, ids, tenant, requests))
    finally:
        engine.close()
    return figures


def _latencies(engine: PricingEngine, url: str, shop: UUID, ids: list[UUID], tenant: str, requests: int) -> dict:
    headers = bearer(engine, tenant)
    http: dict[str, list[float]] = {route: [] for route in ROUTES}
    raw: dict[str, list[float]] = {route: [] for route in ROUTES}
    with running(create_app(engine)) as base, httpx.Client(base_url=base, headers=headers, timeout=30) as client:
        for route in ROUTES:  # warm: connections, caches
            assert client.get(f"/shops/{shop}/listings/{ids[0]}/{route}").status_code == 200
        for i in range(requests):
            listing = ids[i % len(ids)]
            for route in ROUTES:
                params = {"horizon": 30} if route == "forecast" else None
                started = time.perf_counter()
                response = client.get(f"/shops/{shop}/listings/{listing}/{route}", params=params)
                http[route].append(time.perf_counter() - started)
                assert response.status_code == 200, response.text
    with psycopg.connect(url, autocommit=True) as conn:
        for i in range(requests):
            for route in ROUTES:
                started = time.perf_counter()
                model_runs.latest(conn, shop, ids[i % len(ids)], route)
                raw[route].append(time.perf_counter() - started)
    p95 = {route: 1000 * percentile(http[route], 95) for route in ROUTES}
    raw95 = {route: 1000 * percentile(raw[route], 95) for route in ROUTES}
    return {"read_p95_ms": round(max(p95.values()), 2),
            "read_p95_ms_by_route": {r: round(v, 2) for r, v in p95.items()},
            "raw_select_p95_ms": round(max(raw95.values()), 2),
            "raw_select_p95_ms_by_route": {r: round(v, 2) for r, v in raw95.items()},
            "read_vs_raw_ratio": round(max(p95.values()) / max(raw95.values()), 1), "read_requests_per_route": requests}


def retail_refresh_figures(url: str) -> dict:
    """The whole refresh of the imported shared shop (the database's largest shop)."""
    with psycopg.connect(url, autocommit=True) as conn:
        shop = conn.execute("SELECT shop_id FROM shop_listings GROUP BY shop_id ORDER BY count(*) DESC LIMIT 1"
                            ).fetchone()[0]
    started = time.perf_counter()
    summary = model_runs.refresh(url, shop)
    done = summary.shops[0]
    return {"retail_refresh_seconds": round(time.perf_counter() - started, 2), "retail_refresh_listings": done.listings,
            "retail_refresh_runs": done.runs, "retail_refused": dict(done.refused)}


def model_figures(seeds: int, origins: int) -> dict:
    from bench.demand_shops import REALISTIC
    from bench.elasticity import calibrate
    from bench.forecast import rolling, summary
    from bench.retail_frames import retail_shop_daily

    calibration = calibrate(REALISTIC, seeds)
    shop = summary(rolling(retail_shop_daily(), origins, 28, "full"))
    return {"elasticity_abs_error_p90": round(calibration.abs_error_p90, 4),
            "within_015_share": round(calibration.within_015_share, 4),
            "oracle_within_015_share": round(calibration.oracle_within_015_share, 4),
            "interval_coverage": round(calibration.interval_coverage, 4), "calibration_fits": calibration.fits,
            "calibration_refused": calibration.refused,
            "forecast_mase_vs_snaive": shop["ratio"], "forecast_origins": shop["origins"],
            "forecast_served": shop.get("served")}


def run(seeds: int, origins: int, requests: int, listings: int, retail_url: str | None) -> dict:
    note("fitting every product of the shared history ...")
    figures = fit_figures()
    note("recording a shop, refreshing it, timing reads ...")
    with fresh_database("etsypro_bench_analyze") as (url, _):
        figures.update(read_figures(url, requests, listings))
    if retail_url:
        note("refreshing the imported shared shop ...")
        figures.update(retail_refresh_figures(retail_url))
    note("calibration and the shop forecast ...")
    figures.update(model_figures(seeds, origins))
    return figures


def report(f: dict) -> None:
    rows = [("fit_listings_per_s", f"{f['fit_listings_per_s']:,}",
             f"{f['fit_listings']} products in {f['fit_seconds']} s, {f['fit_processes']} processes "
             f"({f['fit_estimated']} elasticities, {f['fit_forecast']} forecasts)"),
            ("shop_refresh_seconds", str(f["shop_refresh_seconds"]),
             f"a {f['shop_refresh_listings']}-listing shop from the database, {f['shop_refresh_runs']} runs written")]
    if "retail_refresh_seconds" in f:
        rows.append(("retail_refresh_seconds", str(f["retail_refresh_seconds"]),
                     f"the imported shop: {f['retail_refresh_listings']} listings, {f['retail_refresh_runs']} runs"))
    rows += [("read_p95_ms", str(f["read_p95_ms"]), f"slowest GET's p95: {f['read_p95_ms_by_route']}"),
             ("raw_select_p95_ms", str(f["raw_select_p95_ms"]), f"latest() over psycopg: {f['raw_select_p95_ms_by_route']}"),
             ("read_vs_raw_ratio", str(f["read_vs_raw_ratio"]), "HTTP p95 / raw SELECT p95"),
             ("elasticity_abs_error_p90", str(f["elasticity_abs_error_p90"]), f"{f['calibration_fits']} synthetic listings"),
             ("within_015_share", str(f["within_015_share"]),
              f"within +-0.15 of the truth; the Cramer-Rao bound allows {f['oracle_within_015_share']}"),
             ("interval_coverage", str(f["interval_coverage"]), "share of 95% intervals holding the truth"),
             ("forecast_mase_vs_snaive", str(f["forecast_mase_vs_snaive"]),
              f"shop total, 28 days ahead, {f['forecast_origins']} origins; served {f['forecast_served']}")]
    print_table("demand models", rows)


def main(args) -> int:
    figures = run(args.seeds or 20, getattr(args, "origins", None) or 4, args.requests or 300,
                  getattr(args, "listings", None) or 20, getattr(args, "retail_url", None))
    return show(figures, args.json, report)


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="python -m bench.analyze", description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    p.add_argument("--seeds", type=int, help="seeds per true elasticity for the calibration (default 20)")
    p.add_argument("--origins", type=int, help="outer origins of the shop forecast's backtest (default 4)")
    p.add_argument("--requests", type=int, help="GETs measured per route (default 300)")
    p.add_argument("--listings", type=int, help="listings of the synthetic shop (default 20)")
    p.add_argument("--retail-url", help="a database holding the imported shared shop: time its whole refresh")
    sys.exit(main(p.parse_args()))
