"""Analysts' queries over real HTTP: filters, keyset paging, exports that parse back to the same
rows as the database holds, tenant isolation, problem+json for bad filters, the lag endpoint,
and `etsypro serve`'s in-process projector."""

from __future__ import annotations

import io
import json
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from uuid import UUID

import httpx
import polars as pl
import psycopg
import pytest

import codec
from api.server import build, running
from api.settings import Settings
from commands import models
from projections import registry
from projections.projector import InBackground, Projector
from projections.queries import VIEWS
from test_projections_helpers import context

DAY = datetime(2026, 3, 2, tzinfo=timezone.utc)


@pytest.fixture(scope="module", autouse=True)
def projector(database_url, engine):
    """The session database's views, kept current while this module runs."""
    background = InBackground.projector(Projector(database_url, codec.to_domain_event)).start()
    yield
    background.stop()


def wait_visible(api: httpx.Client, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        lag = api.get("/analytics/lag")
        assert lag.status_code == 200, lag.text
        if all(p["events_behind"] == 0 for p in lag.json()["projections"]):
            return
        assert time.monotonic() < deadline, lag.json()
        time.sleep(0.02)


@pytest.fixture
def trading_shop(api, shop):
    """A shop with listings, price changes, competitor observations over two days, sales and a return."""
    listings = [x["listing_id"] for x in api.post(f"/shops/{shop}/listings", json={"listings": [
        {"external_id": f"e{i}", "sku": f"S{i}", "title": f"Vase {i}", "price": "20.00", "currency": "GBP",
         "floor": "10.00", "ceiling": "60.00", "cost": "5.00"} for i in range(3)]}).json()["listings"]]
    assert api.put(f"/shops/{shop}/listings/{listings[0]}/price",
                   json={"price": "24.50", "currency": "GBP", "reason": "spring", "source": "experiment",
                         "rule": "beat-lowest"}).status_code == 200
    observations = [{"listing_id": listings[i % 2], "competitor": f"rival-{i % 4}", "price": f"{18 + i * 0.25:.2f}",
                     "currency": "GBP", "observed_at": (DAY + timedelta(minutes=47 * i)).isoformat()}
                    for i in range(60)]
    assert api.post(f"/shops/{shop}/observations", json={"observations": observations}).status_code == 201
    sales = [{"listing_id": listings[i % 3], "quantity": 1 + i % 2, "unit_price": "24.50", "currency": "GBP",
              "order_id": f"o{i}", "transaction_id": f"t{i}", "sold_at": (DAY + timedelta(hours=5 * i)).isoformat()}
             for i in range(10)]
    sales.append({**sales[0], "quantity": -1, "transaction_id": "t0-return",
                  "sold_at": (DAY + timedelta(hours=30)).isoformat()})
    assert api.post(f"/shops/{shop}/sales", json={"sales": sales}).status_code == 201
    wait_visible(api)
    return shop, listings, observations, sales


def rows_in_database(database_url: str, sql: str, params) -> list[tuple]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(sql, params).fetchall()


def percentile(values: list[Decimal], p: Decimal) -> Decimal:
    """percentile_cont: linear interpolation between closest ranks."""
    ordered = sorted(values)
    pos = p * (len(ordered) - 1)
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (pos - low) * (ordered[high] - ordered[low])


def test_views_answer_with_filters(api, trading_shop):
    shop, listings, observations, sales = trading_shop
    board = api.get(f"/shops/{shop}/analytics/prices").json()
    assert {(i["listing_id"], i["price"]) for i in board["items"]} == {
        (listings[0], "24.50"), (listings[1], "20.00"), (listings[2], "20.00")}

    changes = api.get(f"/shops/{shop}/analytics/price-changes", params={"listing_id": listings[0]}).json()["items"]
    assert [(c["kind"], c["price"], c["previous_price"], c["source"], c["rule"]) for c in changes] == [
        ("registered", "20.00", None, "manual", None), ("changed", "24.50", "20.00", "experiment", "beat-lowest")]

    bands = api.get(f"/shops/{shop}/analytics/competitor-bands",
                    params={"bucket": "day", "listing_id": listings[1]}).json()["items"]
    for band in bands:
        day = datetime.fromisoformat(band["bucket"])
        prices = [Decimal(o["price"]) for o in observations if o["listing_id"] == listings[1]
                  and day <= datetime.fromisoformat(o["observed_at"]) < day + timedelta(days=1)]
        assert band["observations"] == len(prices)
        assert [Decimal(band[k]) for k in ("min_price", "p25", "median", "p75", "max_price")] == [
            min(prices), percentile(prices, Decimal("0.25")), percentile(prices, Decimal("0.5")),
            percentile(prices, Decimal("0.75")), max(prices)]
    assert sum(b["observations"] for b in bands) == 30

    since, until = DAY + timedelta(hours=10), DAY + timedelta(hours=20)
    window = api.get(f"/shops/{shop}/analytics/sales", params={"since": since.isoformat(),
                                                              "until": until.isoformat()}).json()["items"]
    assert sorted(s["transaction_id"] for s in window) == ["t2", "t3"]

    by_shop = api.get(f"/shops/{shop}/analytics/sales-by-shop", params={"bucket": "week"}).json()["items"]
    assert sum(r["units"] for r in by_shop) == sum(s["quantity"] for s in sales)
    assert sum(Decimal(r["revenue"]) for r in by_shop) == sum(s["quantity"] * Decimal(s["unit_price"]) for s in sales)
    assert sum(r["units_returned"] for r in by_shop) == 1

    by_listing = api.get(f"/shops/{shop}/analytics/sales-by-listing",
                         params={"bucket": "day", "listing_id": listings[0]}).json()["items"]
    assert sum(r["units"] for r in by_listing) == sum(s["quantity"] for s in sales if s["listing_id"] == listings[0])


def test_pages_follow_each_other_without_gaps_or_repeats(api, trading_shop):
    shop = trading_shop[0]
    for view, params in (("competitor-observations", {}), ("competitor-bands", {"bucket": "hour"}),
                         ("sales", {}), ("prices", {})):
        everything = api.get(f"/shops/{shop}/analytics/{view}", params={**params, "limit": 1000}).json()
        assert everything["next_cursor"] is None
        paged, cursor = [], None
        while True:
            page = api.get(f"/shops/{shop}/analytics/{view}",
                           params={**params, "limit": 7, **({"cursor": cursor} if cursor else {})}).json()
            paged += page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert paged == everything["items"], view
        assert len(paged) > 0


# -- exports --------------------------------------------------------------------------------
PARSE = {  # how an analyst reads each PostgreSQL type back from CSV or JSON text
    "numeric": Decimal, "int8": int, "int4": int, "int8[]": lambda v: v if isinstance(v, list) else json.loads(v),
    "timestamptz": lambda v: datetime.fromisoformat(v) if ":" in v[-3:] else datetime.strptime(v, "%Y-%m-%dT%H:%M:%S.%f%z"),
    "uuid": UUID, "text": str, "bool": bool, "float8": float,
}


def typed(rows: list[dict], columns: list[str], types: list[str]) -> list[tuple]:
    return [tuple(None if r[c] is None else PARSE[t](r[c]) for c, t in zip(columns, types)) for r in rows]


def database_rows(database_url: str, view: str, shop: str, params: dict) -> list[tuple]:
    """The same rows, straight from the database the projector wrote (not through the API)."""
    v = VIEWS[view]
    keys = ", ".join(k for k, _ in v.keys)
    if v.shop_filter:
        sql = f"SELECT {', '.join(v.columns)} FROM {v.source} WHERE shop_id = %(shop)s ORDER BY {keys}"
    else:
        sql = f"SELECT {', '.join(v.columns)} FROM {v.source} ORDER BY {keys}"
    args = {"shop": shop, "listing": None, "since": None, "until": None,
            "width": {"hour": "1 hour", "day": "1 day", "week": "7 days"}.get(params.get("bucket"))}
    return rows_in_database(database_url, sql, args)


@pytest.mark.parametrize("view,params", [
    ("prices", {}), ("price-changes", {}), ("competitor-observations", {}), ("competitor-bands", {"bucket": "day"}),
    ("sales", {}), ("sales-by-listing", {"bucket": "hour"}), ("sales-by-shop", {"bucket": "day"})])
def test_exports_parse_back_to_the_same_rows(api, trading_shop, database_url, view, params, engine):
    shop = trading_shop[0]
    url = f"/shops/{shop}/analytics/{view}"
    page = api.get(url, params={**params, "limit": 1000}).json()
    columns, types = page["columns"], page["types"]
    expected = engine.identity.vault.reveal(database_rows(database_url, view, shop, params))  # reasons open
    assert len(expected) > 0
    assert typed(page["items"], columns, types) == expected

    csv = api.get(url, params={**params, "limit": 1000, "format": "csv"})
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    from_csv = pl.read_csv(io.BytesIO(csv.content), infer_schema=False)
    assert from_csv.columns == columns
    assert typed(from_csv.to_dicts(), columns, types) == expected

    parquet = api.get(url, params={**params, "limit": 1000, "format": "parquet"})
    assert parquet.status_code == 200 and parquet.headers["content-type"] == "application/vnd.apache.parquet"
    frame = pl.read_parquet(io.BytesIO(parquet.content))
    assert frame.columns == columns
    for name, kind in zip(columns, types):
        if kind == "numeric":
            assert isinstance(frame.schema[name], pl.Decimal), name  # money stays decimal, never float
    from_parquet = [tuple(UUID(v) if t == "uuid" and v is not None else v for v, t in zip(row.values(), types))
                    for row in frame.to_dicts()]
    assert from_parquet == expected


# -- who may see what -----------------------------------------------------------------------
def test_another_tenants_shop_or_listing_is_not_found(api, trading_shop, base_url, accounts):
    shop, listings, _, _ = trading_shop
    stranger = accounts.new("seller")
    with httpx.Client(base_url=base_url, headers=stranger) as other:
        own = other.post("/shops", json={"name": "Elsewhere", "currency": "GBP"}).json()["shop_id"]
        for view, params in (("prices", {}), ("sales-by-shop", {"bucket": "day"}), ("sales", {"format": "csv"})):
            response = other.get(f"/shops/{shop}/analytics/{view}", params=params)
            assert response.status_code == 404, response.text
            assert response.headers["content-type"] == "application/problem+json"
        foreign_listing = other.get(f"/shops/{own}/analytics/sales", params={"listing_id": listings[0]})
    assert foreign_listing.status_code == 404 and foreign_listing.json()["field"] == "listing_id"


def test_an_analyst_of_the_tenant_may_read_its_analytics(trading_shop, base_url, accounts, tenant):
    shop = trading_shop[0]
    analyst = accounts.new("analyst", tenant.tenant_id)
    with httpx.Client(base_url=base_url, headers=analyst) as client:
        assert client.get(f"/shops/{shop}/analytics/prices").status_code == 200
        assert client.post("/shops", json={"name": "x", "currency": "GBP"}).status_code == 403


@pytest.mark.parametrize("view,params,field", [
    ("competitor-bands", {"bucket": "month"}, "bucket"),
    ("competitor-bands", {}, "bucket"),
    ("sales", {"since": "2026-03-02T10:00:00"}, "since"),
    ("sales", {"since": "2026-03-03T00:00:00Z", "until": "2026-03-02T00:00:00Z"}, "until"),
    ("sales", {"cursor": "not-a-cursor"}, "cursor"),
    ("sales", {"limit": 0}, "limit"),
    ("sales", {"format": "xlsx"}, "format"),
    ("sales", {"listing_id": "nope"}, "listing_id"),
])
def test_bad_filters_answer_422_naming_the_field(api, shop, view, params, field):
    response = api.get(f"/shops/{shop}/analytics/{view}", params=params)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["field"] == field


def test_lag_endpoint_reports_events_and_seconds_behind(api, trading_shop):
    body = api.get("/analytics/lag").json()
    assert {p["projection"] for p in body["projections"]} == {p.name for p in registry.ALL}
    for p in body["projections"]:
        assert p["events_behind"] >= 0 and p["seconds_behind"] >= 0 and p["parked"] == 0
        assert "log_position" not in p and "head" not in p  # whole-log figures are for operators


# -- etsypro serve runs the projector -------------------------------------------------------
def test_serve_runs_the_projector_in_process_unless_told_not_to(new_database, tmp_path):
    url = new_database()
    settings = Settings.from_env({"ETSYPRO_DATABASE_URL": url, "ETSYPRO_DATA_DIR": str(tmp_path),
                                  "ETSYPRO_POOL_SIZE": "2"})
    engine, app = build(settings, log=lambda *_: None)
    assert app.state.projector is not None
    ctx = context("t-serve")
    with running(app):
        shop = engine.listings.open_shop(ctx, models.OpenShop(name="Served", currency="GBP")).body["shop_id"]
        deadline = time.monotonic() + 20
        while not rows_in_database(url, "SELECT 1 FROM analytics.shops WHERE shop_id = %s", [shop]):
            assert time.monotonic() < deadline, "the in-process projector did not project the new shop"
            time.sleep(0.02)
    assert not app.state.projector._thread.is_alive()  # stopped with the app
    engine.close()

    off = Settings.from_env({"ETSYPRO_DATABASE_URL": url, "ETSYPRO_DATA_DIR": str(tmp_path),
                             "ETSYPRO_POOL_SIZE": "1", "ETSYPRO_PROJECTOR": "off"})
    engine, app = build(off, log=lambda *_: None)
    assert app.state.projector is None
    engine.close()
    with pytest.raises(ValueError, match="ETSYPRO_PROJECTOR"):
        Settings.from_env({"ETSYPRO_PROJECTOR": "sometimes"})
