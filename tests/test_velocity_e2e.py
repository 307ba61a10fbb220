"""Stock counts over HTTP (tenant, role, hostile input answered as problem+json naming the field) and
the velocity rules end to end on real PostgreSQL: a stock_runway and a stale_listing rule change
prices through the repricing policy, sales after a count reduce the stock the rule sees, a new
forecast run acts once, and `explain` cites what each change read."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from types import SimpleNamespace
from uuid import UUID, uuid4

import httpx
import psycopg
import pytest
from psycopg.types.json import Jsonb

import codec
from commands import models
from commands import rule_models as m
from commands.context import CommandContext
from commands.engine import PricingEngine
from commands.stock import CountStock
from conftest import listing_spec
from domain.listing import Listing
from domain.meta import Actor
from projections.projector import Projector
from read.dry_run import ListingPage, dry_run, saved_rule
from read.explain import as_text, explain
from read.side import ReadSide
from streams.repricing import RepricingPolicy, act_on_new_runs
from projections.velocity import velocities
from test_commands_http import assert_problem


# -- the stock route ---------------------------------------------------------------------------------
def test_a_count_is_recorded_and_answered(api, shop, listing, engine):
    restock = (date.today() + timedelta(days=10)).isoformat()
    response = api.put(f"/shops/{shop}/listings/{listing}/stock", json={"quantity": 12, "restock_on": restock})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["listing_id"], body["quantity"], body["restock_on"]) == (listing, 12, restock)
    again = api.put(f"/shops/{shop}/listings/{listing}/stock", json={"quantity": 0})
    assert (again.json()["quantity"], again.json()["restock_on"], again.json()["version"]) == (0, None, body["version"] + 1)
    counted = [e for e in engine.core.events.get(UUID(listing)) if isinstance(e, Listing.StockCounted)]
    assert [(e.quantity, e.restock_on) for e in counted] == [(12, restock), (0, None)]
    now = api.get(f"/shops/{shop}/listings/{listing}/stock")
    assert now.status_code == 200, now.text
    assert {k: now.json()[k] for k in ("quantity", "sold_since_count", "on_hand")} == {
        "quantity": 0, "sold_since_count": 0, "on_hand": 0}


@pytest.mark.parametrize("body, field", [
    ({"quantity": -1}, "quantity"),
    ({"quantity": "NaN"}, "quantity"),
    ({"quantity": float("inf")}, "quantity"),
    ({"quantity": 1.5}, "quantity"),
    ({"quantity": "12"}, "quantity"),
    ({"quantity": True}, "quantity"),
    ({"quantity": 10**12}, "quantity"),
    ({"quantity": None}, "quantity"),
    ({}, "quantity"),
    ({"quantity": 3, "restock_on": "next week"}, "restock_on"),
    ({"quantity": 3, "restock_on": 20261221}, "restock_on"),
    ({"quantity": 3, "restock_on": "2020-01-01"}, "restock_on"),
    ({"quantity": 3, "expected_version": 99}, "expected_version"),
    ({"quantity": 3, "colour": "red"}, "colour"),
])
def test_hostile_counts_are_refused_naming_the_field(api, shop, listing, body, field):
    if body.get("quantity") == float("inf"):
        response = api.put(f"/shops/{shop}/listings/{listing}/stock", content=b'{"quantity": Infinity}',
                           headers={"content-type": "application/json"})
    else:
        response = api.put(f"/shops/{shop}/listings/{listing}/stock", json=body)
    assert_problem(response, 409 if field == "expected_version" else 422, field)


def test_another_tenants_listing_and_a_reader_are_refused(api, shop, listing, accounts, base_url, tenant):
    with httpx.Client(base_url=base_url, headers=accounts.new("seller"), timeout=30) as stranger:
        assert_problem(stranger.put(f"/shops/{shop}/listings/{listing}/stock", json={"quantity": 1}), 404)
        own = stranger.post("/shops", json={"name": "Other", "currency": "GBP"}).json()["shop_id"]
        assert_problem(stranger.put(f"/shops/{own}/listings/{listing}/stock", json={"quantity": 1}), 404)
        assert_problem(stranger.get(f"/shops/{shop}/listings/{listing}/stock"), 404)
    with httpx.Client(base_url=base_url, headers=accounts.new("analyst", tenant.tenant_id), timeout=30) as reader:
        assert_problem(reader.put(f"/shops/{shop}/listings/{listing}/stock", json={"quantity": 1}), 403)
    assert_problem(api.put(f"/shops/{shop}/listings/{uuid4()}/stock", json={"quantity": 1}), 404)


# -- end to end under the policy ---------------------------------------------------------------------
@pytest.fixture
def world(new_database):
    """One shop: a under 'stock runway' (5 % up), b under 'stale listing' (10 % down after 14 days);
    the policy's clock 30 days after the listings were registered."""
    url = new_database()
    engine = PricingEngine(url, pool_size=2)
    ctx = CommandContext(actor=Actor("pytest"), tenant_id="t-velocity")
    shop = UUID(engine.listings.open_shop(ctx, models.OpenShop(name="Velocity", currency="GBP")).body["shop_id"])
    registered = engine.listings.register_listings(ctx, shop, models.RegisterListings.model_validate(
        {"listings": [listing_spec(0), listing_spec(1)]}))
    a, b = (UUID(x["listing_id"]) for x in registered.body["listings"])
    runway = UUID(engine.rules.define_rule(ctx, shop, m.DefineRule(name="runway", kind="stock_runway",
                                                                  percent="5")).body["rule_id"])
    stale = UUID(engine.rules.define_rule(ctx, shop, m.DefineRule(name="stale", kind="stale_listing", percent="10",
                                                                 days=14)).body["rule_id"])
    now = datetime.now(timezone.utc) + timedelta(days=30)
    projector, reads = Projector(url, codec.to_domain_event), ReadSide(url, pool_size=2)
    policy = RepricingPolicy(engine.rules, url, clock=lambda: now)
    yield SimpleNamespace(url=url, engine=engine, ctx=ctx, shop=shop, a=a, b=b, runway=runway, stale=stale, now=now,
                          policy=policy, projector=projector, reads=reads)
    policy.close()
    reads.close()
    projector.close()
    engine.close()


def write_forecast(w, per_day: float, listings: list[UUID]) -> dict[UUID, str]:
    """A new refresh of the shop with a forecast run per listing, in read/model_runs.py's stored form."""
    refresh_id, created = uuid4(), w.now - timedelta(hours=1)
    answer = {"first_day": w.now.date().isoformat(), "model": "ets", "points": {
        "units": [per_day] * 90, "units_80_lower": [0.0] * 90, "units_80_upper": [per_day * 1.5] * 90}}
    runs = {listing_id: uuid4() for listing_id in listings}
    with psycopg.connect(w.url) as conn:
        for listing_id, run_id in runs.items():
            conn.execute("INSERT INTO analytics.model_runs (run_id, refresh_id, shop_id, listing_id, kind, created_at,"
                         " model, params, answer, refused) VALUES (%s, %s, %s, %s, 'forecast', %s, 'ets', %s, %s, false)",
                         [run_id, refresh_id, w.shop, listing_id, created, Jsonb({}), Jsonb(answer)])
        conn.execute("INSERT INTO analytics.model_refreshes (shop_id, refresh_id, created_at, listings, runs, seconds)"
                     " VALUES (%s, %s, %s, 1, 1, 0) ON CONFLICT (shop_id) DO UPDATE SET refresh_id = excluded.refresh_id,"
                     " created_at = excluded.created_at", [w.shop, refresh_id, created])
    return {listing_id: str(run_id) for listing_id, run_id in runs.items()}


def sell(w, listing_id: UUID, quantity: int, at: datetime) -> None:
    w.engine.listings.record_sales(w.ctx, w.shop, models.RecordSales.model_validate({"sales": [{
        "listing_id": str(listing_id), "quantity": quantity, "unit_price": "20.00", "currency": "GBP",
        "order_id": f"o-{uuid4().hex[:8]}", "transaction_id": f"t-{uuid4().hex[:8]}", "sold_at": at.isoformat()}]}))


def automated(w, listing_id: UUID) -> list:
    return [e for e in w.engine.core.events.get(listing_id)
            if isinstance(e, Listing.PriceChanged) and e.automation is not None]


def test_both_kinds_change_prices_through_the_policy_and_explain_says_why(world):
    w = world
    restock = w.now.date() + timedelta(days=20)
    before_count = datetime.now(timezone.utc) - timedelta(hours=1)
    w.engine.stock.count_stock(w.ctx, w.shop, w.a, CountStock(quantity=30, restock_on=restock))
    sell(w, w.a, 4, before_count)                          # before the count: already in it
    last_sold = datetime.now(timezone.utc)
    sell(w, w.a, 12, last_sold)                            # after it: 18 left
    sell(w, w.a, -2, datetime.now(timezone.utc))          # a return puts 2 back: 20 on hand
    runs = write_forecast(w, 2.0, [w.a, w.b])              # 40 wanted over the 20 days to the restock
    w.projector.catch_up()
    seen = velocities(psycopg.connect(w.url).cursor(), [w.a, w.b])
    assert (seen[w.a].stock, seen[w.a].restock_on, seen[w.a].last_sale_on) == (20, restock, last_sold.date())
    assert (seen[w.b].counted, seen[w.b].last_sale_on) == (None, None)
    tried = saved_rule(w.reads.aggregates, w.ctx, w.shop, w.runway, None)
    dry = dry_run(w.reads.aggregates, w.ctx, w.shop, tried, ListingPage([w.a, w.b]), lambda wanted: {}, now=w.now)
    assert [(x["outcome"], x["price_after"]) for x in dry["listings"]] == [("changed", "21.00"), ("held", "20.00")]
    assert dry["listings"][0]["inputs"]["forecast_run"] == runs[w.a]
    assert "no stock count recorded" in dry["listings"][1]["reasons"][0]

    w.engine.rules.assign_rule(w.ctx, w.shop, m.AssignRule(rule_id=w.runway, listing_ids=[w.a]))
    w.engine.rules.assign_rule(w.ctx, w.shop, m.AssignRule(rule_id=w.stale, listing_ids=[w.b]))
    w.projector.catch_up()
    w.policy.catch_up()
    [raised], [lowered] = automated(w, w.a), automated(w, w.b)
    assert (str(raised.price.amount), str(lowered.price.amount)) == ("21.00", "18.00")
    assert raised.automation.inputs["forecast_run"] == runs[w.a] and raised.automation.inputs["stock_on_hand"] == "20"
    assert lowered.automation.inputs["days_without_sale"] == "30"

    report = explain(w.reads.aggregates, w.ctx, w.shop, w.a)
    step = report["chain"][0]["automation"]
    assert step["inputs"]["sold_since_count"] == "10" and step["rule"]["kind"] == "stock_runway"
    text = as_text(report)
    assert f"forecast run {runs[w.a]}: 40.0 units until the restock (80% upper bound 60.0)" in text
    assert "stock on hand 20 (counted 30" in text and f"read: forecast run {runs[w.a]}" in text
    assert "no sale since it was listed" in as_text(explain(w.reads.aggregates, w.ctx, w.shop, w.b))

    # The next day's refresh: one more look each, a change once however often it is acted on; the
    # stale listing's clock restarted at its step, so it waits another 14 days without a sale.
    second = write_forecast(w, 2.0, [w.a, w.b])
    for _ in range(2):
        acted = act_on_new_runs(w.engine.rules, w.url, w.shop, now=w.now + timedelta(days=1))
    assert ([(r.listing_id, r.outcome) for r in acted.results], acted.failed, acted.already) == (
        [(str(w.b), "held")], [], 1)
    assert "1 day(s) counted; the rule waits for 14: holding" in acted.results[0].reasons
    assert [str(c.price.amount) for c in automated(w, w.a)] == ["21.00", "22.05"]
    assert automated(w, w.a)[-1].meta.causation_id == f"model_run:{second[w.a]}"
    write_forecast(w, 2.0, [w.a, w.b])
    act_on_new_runs(w.engine.rules, w.url, w.shop, now=w.now + timedelta(days=15))
    assert [str(c.price.amount) for c in automated(w, w.b)] == ["18.00", "16.20"]


def test_stops_and_guardrails_hold_velocity_rules_like_every_rule(world):
    w = world
    w.engine.stock.count_stock(w.ctx, w.shop, w.a, CountStock(quantity=1, restock_on=w.now.date() + timedelta(days=9)))
    write_forecast(w, 3.0, [w.a, w.b])
    w.engine.rules.stop_shop_automation(w.ctx, w.shop, m.StopAutomation(reason="checking stock"))
    w.engine.rules.assign_rule(w.ctx, w.shop, m.AssignRule(rule_id=w.runway, listing_ids=[w.a]))
    w.engine.rules.assign_rule(w.ctx, w.shop, m.AssignRule(rule_id=w.stale, listing_ids=[w.b]))
    w.projector.catch_up()
    w.policy.catch_up()
    refused = [e for listing_id in (w.a, w.b) for e in w.engine.core.events.get(listing_id)
               if isinstance(e, Listing.AutomatedChangeRefused)]
    assert len(refused) == 2 and all("checking stock" in e.reason for e in refused)
    assert automated(w, w.a) == automated(w, w.b) == []
    assert refused[0].automation.inputs["stock_on_hand"] == "1"


# -- the rule kinds over HTTP ------------------------------------------------------------------------
def test_the_kinds_are_defined_over_http_and_their_fields_belong_to_them(api, shop):
    stale = api.post(f"/shops/{shop}/rules", json={"name": "stale", "kind": "stale_listing", "percent": "10", "days": 14})
    assert stale.status_code == 201, stale.text
    assert (stale.json()["summary"], stale.json()["days"]) == ("lower by 10% after 14 days without a sale", 14)
    runway = api.post(f"/shops/{shop}/rules", json={"name": "runway", "kind": "stock_runway", "percent": "5",
                                                    "max_run_age_hours": 24})
    assert runway.status_code == 201 and "days" not in runway.json(), runway.text
    for body, field in [({"kind": "stale_listing", "percent": "10", "days": "14"}, "days"),
                        ({"kind": "stale_listing", "percent": "10"}, "days"),
                        ({"kind": "stock_runway", "percent": "5", "days": 3}, "days"),
                        ({"kind": "stock_runway"}, "percent"),
                        ({"kind": "stock_runway", "percent": "NaN"}, "percent")]:
        assert_problem(api.post(f"/shops/{shop}/rules", json={"name": "bad", **body}), 422, field)
