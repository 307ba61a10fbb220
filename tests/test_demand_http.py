"""Demand intelligence over real HTTP on real PostgreSQL: a shop's history recorded through the
engine, projected, refreshed (read/model_runs.py), then read: a listing sold at three prices
answers an estimate, one price only answers the refusal, a listing with no run yet is a 404 that
says how to refresh, another tenant sees nothing, the elasticities view exports the rows it pages,
a second refresh is served instead of the first (never both), a failed refresh leaves the previous
one served, an interrupted pass resumes, and `serve` refreshes on its schedule."""

from __future__ import annotations

import io
import json
import math
import random
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from uuid import UUID

import httpx
import polars as pl
import psycopg
import pytest

import codec
from api.app import create_app
from api.server import build, running
from api.settings import Settings
from commands.engine import PricingEngine
from conftest import Accounts, listing_spec
from domain.meta import Actor, EventMeta
from domain.money import Money
from projections.projector import InBackground, Projector
from read import model_runs
from read.model_runs import ScheduledRefresh, Stopped, recommendation_run, refresh

DAYS = 70
PRICES = ("16.00", "20.00", "24.00")   # switched every 5 days: a switchback schedule
TRUE_ELASTICITY = -2.0


@dataclass
class World:
    url: str
    engine: PricingEngine
    base: str
    seller: dict
    shop: str
    varied: str        # sold at three prices
    steady: str        # sold at one price only
    accounts: Accounts


def record_history(engine: PricingEngine, api: httpx.Client, shop: str, tenant: str, seed: int = 7) -> tuple[str, str]:
    """Two listings with DAYS days of sales (commands, through the API) ending two days ago; their
    past prices are recorded as an import of past price changes would be (commands stamp a price
    change with the present, and a history needs its own business times)."""
    specs = [listing_spec(i, price="20.00", floor="10.00", ceiling="40.00", cost="6.00") for i in range(2)]
    varied, steady = (x["listing_id"] for x in api.post(f"/shops/{shop}/listings", json={"listings": specs}).json()["listings"])
    start = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=DAYS + 1)
    ctx = engine_context(tenant)
    listings = {key: engine.core.listing(ctx, UUID(shop), UUID(key)) for key in (varied, steady)}

    def meta(day: int) -> EventMeta:
        return EventMeta(shop, "pytest", "user", "import", "price history", uuid.uuid4().hex, "c", "c",
                         start + timedelta(days=day))

    for day in range(0, DAYS, 5):
        listings[varied].change_price(Money.price(PRICES[(day // 5) % 3], "GBP"), meta(day))
    listings[steady].change_price(Money.price("21.00", "GBP"), meta(0))
    engine.core.save(*listings.values())
    rng = random.Random(seed)
    sales = []
    for day in range(DAYS):
        for listing, price in ((varied, float(PRICES[(day // 5) % 3])), (steady, 21.0)):
            expected = 8 * (price / 20) ** TRUE_ELASTICITY
            quantity = sum(rng.random() < expected / 100 for _ in range(100))  # binomial, about Poisson
            if quantity:
                sales.append({"listing_id": listing, "quantity": quantity, "unit_price": f"{price:.2f}",
                              "currency": "GBP", "order_id": f"o{day}", "transaction_id": f"t{day}-{listing}",
                              "sold_at": (start + timedelta(days=day, hours=12)).isoformat()})
    answer = api.post(f"/shops/{shop}/sales", json={"sales": sales})
    assert answer.status_code == 201, answer.text
    return varied, steady


def engine_context(tenant: str):
    from commands.context import CommandContext

    return CommandContext(actor=Actor("pytest"), tenant_id=tenant)


def project(url: str) -> None:
    projector = Projector(url, codec.to_domain_event)
    try:
        projector.catch_up()
    finally:
        projector.close()


@pytest.fixture(scope="module")
def world(new_database):
    url = new_database()
    engine = PricingEngine(url, pool_size=2)
    accounts = Accounts(engine)
    seller = accounts.new("seller")
    with running(create_app(engine)) as base, httpx.Client(base_url=base, headers=seller, timeout=60) as api:
        shop = api.post("/shops", json={"name": "Switchback Pottery", "currency": "GBP"}).json()["shop_id"]
        varied, steady = record_history(engine, api, shop, seller.tenant_id)
        project(url)
        refresh(url, shop, processes=1)
        yield World(url, engine, base, seller, shop, varied, steady, accounts)
    engine.close()


@pytest.fixture
def api(world):
    with httpx.Client(base_url=world.base, headers=world.seller, timeout=60) as client:
        yield client


def strict_json(response: httpx.Response):
    """The body, refusing NaN and Infinity (which Python's parser would otherwise accept)."""
    def refuse(token):
        raise AssertionError(f"{token} in {response.request.url}")
    return json.loads(response.text, parse_constant=refuse)


def common_fields_are_there(body: dict, kind: str) -> None:
    assert body["kind"] == kind and UUID(body["run_id"])
    assert datetime.fromisoformat(body["created_at"]).tzinfo is not None
    assert body["window"]["first_day"] <= body["window"]["last_day"]
    assert body["method"] and "experiment" in body["caveat"]


# -- the answers ------------------------------------------------------------------------------------
def test_a_listing_sold_at_three_prices_answers_an_estimate_a_forecast_and_a_recommendation(api, world):
    base = f"/shops/{world.shop}/listings/{world.varied}"
    elasticity = api.get(f"{base}/elasticity")
    assert elasticity.status_code == 200, elasticity.text
    body = strict_json(elasticity)
    common_fields_are_there(body, "elasticity")
    estimate = body["estimate"]
    low, high = estimate["ci95"]
    assert not body["refused"] and body["refusal"] is None
    assert math.isfinite(low) and math.isfinite(high) and low < TRUE_ELASTICITY < high
    assert low < estimate["elasticity"] < high and estimate["label"] == "own" and estimate["distinct_prices"] == 3
    assert estimate["price_range"] == ["16.00", "24.00"] and body["diagnostics"]["converged"] is True

    forecast = strict_json(api.get(f"{base}/forecast", params={"horizon": 7}))
    common_fields_are_there(forecast, "forecast")
    points = forecast["forecast"]["points"]
    assert len(points) == forecast["forecast"]["horizon"] == 7
    assert forecast["forecast"]["mase"] > 0 and forecast["params"]["horizon"] == 90
    for point in points:
        assert point["units_95"]["lower"] <= point["units_80"]["lower"] <= point["units"] <= point["units_80"]["upper"]
        assert Decimal(point["revenue_95"]["lower"]) <= Decimal(point["revenue"]) <= Decimal(point["revenue_95"]["upper"])
    assert len(strict_json(api.get(f"{base}/forecast", params={"horizon": 90}))["forecast"]["points"]) == 90

    recommendation = strict_json(api.get(f"{base}/recommendation"))
    common_fields_are_there(recommendation, "recommendation")
    advice = recommendation["recommendation"]
    assert Decimal("18.00") <= Decimal(advice["price"]) <= Decimal("22.00")  # one default step (10%) from 20.00
    assert advice["elasticity_run_id"] == body["run_id"] and advice["current_price"] == "20.00"
    assert advice["objective"] == "profit" and advice["current"]["profit_per_day"] is not None


def test_a_listing_sold_at_one_price_answers_the_refusal_and_what_would_fix_it(api, world):
    base = f"/shops/{world.shop}/listings/{world.steady}"
    for kind in ("elasticity", "recommendation"):
        response = api.get(f"{base}/{kind}")
        assert response.status_code == 200, response.text
        body = strict_json(response)
        assert body["refused"] is True and body["method"] == "refused"
        assert body["refusal"]["field"] == "price" and "distinct price" in body["refusal"]["reason"]
        assert "at least 3 distinct prices" in body["refusal"]["needs"]
        assert body["estimate" if kind == "elasticity" else "recommendation"] is None
        common_fields_are_there(body, kind)


def test_a_listing_without_a_run_yet_is_404_saying_how_to_refresh(api, world):
    late = api.post(f"/shops/{world.shop}/listings", json={"listings": [listing_spec(9)]}).json()["listings"][0]
    response = api.get(f"/shops/{world.shop}/listings/{late['listing_id']}/elasticity")
    assert response.status_code == 404 and response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"].endswith("/models-not-refreshed") and "etsypro analyze refresh" in problem["detail"]
    unknown = api.get(f"/shops/{world.shop}/listings/{uuid.uuid4()}/forecast")
    assert unknown.status_code == 404 and unknown.json()["type"].endswith("/not-found")


def test_the_shop_level_answers_its_pooled_elasticity_and_its_own_forecast(api, world):
    pooled = strict_json(api.get(f"/shops/{world.shop}/elasticity"))
    common_fields_are_there(pooled, "elasticity")
    assert pooled["listing_id"] is None
    if pooled["refused"]:  # one listing with varied prices is too few to pool: a reason, never a NaN
        assert pooled["refusal"]["reason"] and pooled["refusal"]["needs"] and pooled["estimate"] is None
    else:
        low, high = pooled["estimate"]["ci95"]
        assert "fixed effects" in pooled["method"] and low <= pooled["estimate"]["elasticity"] <= high
    forecast = strict_json(api.get(f"/shops/{world.shop}/forecast", params={"horizon": 14}))
    common_fields_are_there(forecast, "forecast")
    assert forecast["listing_id"] is None and not forecast["refused"]
    points = forecast["forecast"]["points"]
    assert len(points) == 14 and all(p["units_95"]["lower"] <= p["units"] <= p["units_95"]["upper"] for p in points)
    assert api.get(f"/shops/{world.shop}/forecast", params={"horizon": 91}).json()["field"] == "horizon"


def test_a_shop_never_refreshed_is_404_saying_how(api, world):
    fresh = api.post("/shops", json={"name": "Not yet", "currency": "GBP"}).json()["shop_id"]
    for kind in ("elasticity", "forecast"):
        response = api.get(f"/shops/{fresh}/{kind}")
        assert response.status_code == 404 and response.json()["type"].endswith("/models-not-refreshed")
        assert response.json()["field"] == "shop_id"


def test_another_tenants_listing_is_not_found(world):
    stranger = world.accounts.new("seller")
    with httpx.Client(base_url=world.base, headers=stranger, timeout=60) as other:
        own = other.post("/shops", json={"name": "Elsewhere", "currency": "GBP"}).json()["shop_id"]
        for kind in ("elasticity", "forecast", "recommendation"):
            for shop in (world.shop, own):
                response = other.get(f"/shops/{shop}/listings/{world.varied}/{kind}")
                assert response.status_code == 404, response.text
                assert response.json()["type"].endswith("/not-found")
        assert other.get(f"/shops/{world.shop}/analytics/elasticities").status_code == 404
        for kind in ("elasticity", "forecast"):
            assert other.get(f"/shops/{world.shop}/{kind}").json()["type"].endswith("/not-found")


@pytest.mark.parametrize("horizon", ["0", "91", "x", "-1", "1.5"])
def test_a_horizon_outside_1_to_90_is_422_naming_it(api, world, horizon):
    response = api.get(f"/shops/{world.shop}/listings/{world.varied}/forecast", params={"horizon": horizon})
    assert response.status_code == 422 and response.json()["field"] == "horizon"


# -- the elasticities view ---------------------------------------------------------------------------
def test_the_elasticities_view_exports_the_rows_it_pages(api, world):
    url = f"/shops/{world.shop}/analytics/elasticities"
    page = strict_json(api.get(url, params={"limit": 1000}))
    columns, rows = page["columns"], page["items"]
    ids = [r["listing_id"] for r in rows]
    assert {world.varied, world.steady} <= set(ids) and len(ids) == len(set(ids))  # once each, no shop row
    by_listing = {r["listing_id"]: r for r in rows}
    assert by_listing[world.steady]["refused"] is True and by_listing[world.steady]["elasticity"] is None
    assert by_listing[world.varied]["ci95_low"] < TRUE_ELASTICITY < by_listing[world.varied]["ci95_high"]

    paged, cursor = [], None
    while True:
        one = api.get(url, params={"limit": 1, **({"cursor": cursor} if cursor else {})}).json()
        paged += one["items"]
        cursor = one["next_cursor"]
        if cursor is None:
            break
    assert paged == rows

    csv = pl.read_csv(io.BytesIO(api.get(url, params={"format": "csv"}).content), infer_schema=False)
    parquet = pl.read_parquet(io.BytesIO(api.get(url, params={"format": "parquet"}).content))
    assert csv.columns == parquet.columns == columns
    as_text = [{c: None if r[c] is None else str(r[c]).lower() if isinstance(r[c], bool) else str(r[c]) for c in columns}
               for r in rows]
    from_csv = [{**r, "created_at": str(datetime.fromisoformat(r["created_at"]).isoformat())} for r in csv.to_dicts()]
    assert from_csv == as_text
    assert [{c: r[c].isoformat() if isinstance(r[c], datetime) else r[c] for c in columns}
            for r in parquet.to_dicts()] == rows
    forged = api.get(url, params={"cursor": "forged"})
    assert forged.status_code == 422 and forged.json()["field"] == "cursor"


# -- refreshing ---------------------------------------------------------------------------------------
def served(world) -> dict[str, dict]:
    with httpx.Client(base_url=world.base, headers=world.seller, timeout=60) as client:
        return {kind: client.get(f"/shops/{world.shop}/listings/{world.varied}/{kind}").json()
                for kind in ("elasticity", "forecast", "recommendation")}


def runs_stored(world) -> int:
    with psycopg.connect(world.url) as conn:
        return conn.execute("SELECT count(*) FROM analytics.model_runs WHERE shop_id = %s", [world.shop]).fetchone()[0]


def test_a_second_refresh_is_served_instead_of_the_first_never_both(api, world):
    before, stored = served(world), runs_stored(world)
    refresh(world.url, world.shop, processes=1)
    after = served(world)
    for kind in before:
        assert after[kind]["run_id"] != before[kind]["run_id"] and after[kind]["created_at"] > before[kind]["created_at"]
    assert after["elasticity"]["estimate"] == before["elasticity"]["estimate"]  # same data, same answer
    assert runs_stored(world) > stored  # the earlier runs stay: history of which run said what
    rows = api.get(f"/shops/{world.shop}/analytics/elasticities").json()["items"]
    assert len(rows) == len({r["listing_id"] for r in rows}) and {r["run_id"] for r in rows} >= {
        after["elasticity"]["run_id"]}


def test_a_refresh_that_fails_leaves_the_previous_runs_served(world, monkeypatch):
    before, stored = served(world), runs_stored(world)
    calls = []

    def fail_midway(value):
        calls.append(value)
        if len(calls) == 5:
            raise RuntimeError("disk full")
        return json.dumps(value)

    monkeypatch.setattr(model_runs, "_json", fail_midway)
    with pytest.raises(RuntimeError, match="disk full"):
        refresh(world.url, world.shop, processes=1)
    assert served(world) == before and runs_stored(world) == stored


def test_an_interrupted_pass_resumes_with_the_shops_it_had_not_refreshed(world):
    other = world.accounts.new("seller")
    with httpx.Client(base_url=world.base, headers=other, timeout=60) as client:
        client.post("/shops", json={"name": "Second", "currency": "GBP"})
    started = datetime.now(timezone.utc)

    def stop_once_a_shop_is_written() -> bool:
        with psycopg.connect(world.url) as conn:
            return conn.execute("SELECT count(*) FROM analytics.model_refreshes WHERE created_at >= %s",
                                [started]).fetchone()[0] > 0

    with pytest.raises(Stopped):
        refresh(world.url, should_stop=stop_once_a_shop_is_written, processes=1)
    resumed = refresh(world.url, processes=1)
    assert resumed.resumed
    skipped = [s for s in resumed.shops if s.skipped]
    assert len(skipped) == 1 and skipped[0].skipped == "refreshed earlier in this pass"
    assert all(s.refresh_id is not None for s in resumed.shops if not s.skipped)
    assert not refresh(world.url, processes=1).resumed  # that pass finished: the next one is new


def test_the_rule_reads_the_served_recommendation(world, api):
    advice = api.get(f"/shops/{world.shop}/listings/{world.varied}/recommendation").json()
    with psycopg.connect(world.url) as conn:
        run = recommendation_run(conn, UUID(world.shop), UUID(world.varied))
        refused = recommendation_run(conn, UUID(world.shop), UUID(world.steady))
    assert run.run_id == advice["run_id"] and run.price == Money(Decimal(advice["recommendation"]["price"]), "GBP")
    assert run.refusal is None and run.elasticity_low < run.elasticity < run.elasticity_high
    assert refused.price is None and "distinct price" in refused.refusal


# -- serve ---------------------------------------------------------------------------------------
def test_the_schedule_hands_each_refresh_to_what_acts_on_it(world):
    with psycopg.connect(world.url, autocommit=True) as conn:  # make a whole-shop pass due
        conn.execute("UPDATE analytics.model_refresh_passes SET finished_at = finished_at - interval '2 days'")
    handed = []
    background = InBackground(ScheduledRefresh(world.url, 24, processes=1, after=handed.append), "analyze").start()
    try:
        deadline = time.monotonic() + 60
        while not handed:
            assert time.monotonic() < deadline, "the schedule did not refresh"
            time.sleep(0.05)
    finally:
        background.stop()
    assert UUID(world.shop) in {s.shop_id for s in handed[0].shops if s.refresh_id is not None}
    assert len(handed) == 1  # the next one is due in 24 hours


def test_serve_refreshes_on_its_schedule_and_stops_with_the_app(world, tmp_path):
    settings = Settings.from_env({"ETSYPRO_DATABASE_URL": world.url, "ETSYPRO_DATA_DIR": str(tmp_path),
                                  "ETSYPRO_POOL_SIZE": "1", "ETSYPRO_PROJECTOR": "off", "ETSYPRO_REPRICING": "off",
                                  "ETSYPRO_ANALYZE_EVERY_HOURS": "24"})
    with psycopg.connect(world.url, autocommit=True) as conn:  # no whole-shop pass is recent: one is due
        conn.execute("UPDATE analytics.model_refresh_passes SET finished_at = finished_at - interval '2 days'")
        before = model_runs.refreshed_at(conn, UUID(world.shop))
    engine, app = build(settings, log=lambda *_: None)
    try:
        with running(app):
            deadline = time.monotonic() + 60
            while True:
                with psycopg.connect(world.url) as conn:
                    if model_runs.refreshed_at(conn, UUID(world.shop)) > before:
                        break
                assert time.monotonic() < deadline, "serve did not refresh the models"
                time.sleep(0.1)
            assert app.state.analyzer.follower.failures == 0
        assert not app.state.analyzer._thread.is_alive()  # stopped with the app
    finally:
        engine.close()
    off = Settings.from_env({"ETSYPRO_DATABASE_URL": world.url, "ETSYPRO_DATA_DIR": str(tmp_path),
                             "ETSYPRO_POOL_SIZE": "1", "ETSYPRO_ANALYZE_EVERY_HOURS": "0"})
    engine, app = build(off, log=lambda *_: None)
    engine.close()
    assert app.state.analyzer is None
