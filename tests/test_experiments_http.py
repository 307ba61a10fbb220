"""Switchback experiments over real HTTP and PostgreSQL: creation (power calculation on the
listings' own history) and its refusals, the policy starting periods as automated changes with
source `experiment`, a manual change pausing it, the analysis, and stop, conclude, abandon."""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta, timezone
from uuid import UUID

import httpx
import pytest

from api.app import create_app
from api.server import running
from commands.engine import PricingEngine
from streams.repricing import RepricingPolicy, tend_experiments
from tests.conftest import Accounts, listing_spec, price_changes
from read.model_runs import refresh
from tests.test_demand_http import project

DAYS = 30


@pytest.fixture(scope="module")
def world(new_database):
    """A shop with four listings sold at one price on each of the last DAYS days (for the power calculation)."""
    url = new_database()
    engine = PricingEngine(url, pool_size=2)
    accounts = Accounts(engine)
    seller = accounts.new("seller")
    with running(create_app(engine)) as base, httpx.Client(base_url=base, headers=seller, timeout=60) as api:
        shop = api.post("/shops", json={"name": "Switchback Pottery", "currency": "GBP"}).json()["shop_id"]
        specs = [listing_spec(i, price="20.00", floor="10.00", ceiling="40.00", cost="6.00") for i in range(4)]
        listings = [x["listing_id"] for x in api.post(f"/shops/{shop}/listings", json={"listings": specs}).json()["listings"]]
        start = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=DAYS)
        rng, sales = random.Random(3), []
        for day in range(DAYS):
            for listing in listings:
                quantity = sum(rng.random() < 0.08 for _ in range(100))
                if quantity:
                    sales.append({"listing_id": listing, "quantity": quantity, "unit_price": "20.00", "currency": "GBP",
                                  "order_id": f"o{day}", "transaction_id": f"t{day}-{listing}",
                                  "sold_at": (start + timedelta(days=day, hours=12)).isoformat()})
        assert api.post(f"/shops/{shop}/sales", json={"sales": sales}).status_code == 201
        project(url)
        yield {"url": url, "engine": engine, "base": base, "seller": seller, "shop": shop, "listings": listings,
               "accounts": accounts}
    engine.close()


@pytest.fixture
def api(world):
    with httpx.Client(base_url=world["base"], headers=world["seller"], timeout=60) as client:
        yield client


def design(listings: list[str], **overrides) -> dict:
    body = {"name": "plus ten", "listing_ids": listings, "period_hours": 24, "burn_in_hours": 2, "metric": "profit",
            "arms": [{"name": "control", "kind": "relative", "value": "0"},
                     {"name": "plus-10", "kind": "relative", "value": "10"}],
            "mde": "0.3", "seed": 42}
    body.update(overrides)
    return body


def problem_field(response: httpx.Response) -> str:
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    return response.json()["field"]


@pytest.mark.parametrize("overrides, field", [
    ({"arms": [{"name": "control", "kind": "relative", "value": "0"},
               {"name": "way-up", "kind": "absolute", "value": "45.00"}]}, "arms[1].value"),   # above the ceiling 40
    ({"arms": [{"name": "only", "kind": "relative", "value": "0"}]}, "arms"),
    ({"horizon_cycles": 1}, "horizon_cycles"),
    ({"burn_in_hours": 24}, "burn_in_hours"),
    ({"listing_ids": [str(uuid.uuid4())]}, "listing_ids[0]"),
    ({"mde": "0"}, "mde"),
    ({"arms": [{"name": "control", "kind": "relative", "value": "0"},
               {"name": "sub-penny", "kind": "absolute", "value": "20.001"}]}, "arms[1].value"),
    ({"arms": [{"name": "control", "kind": "relative", "value": "0"},
               {"name": "huge", "kind": "absolute", "value": "1e30"}]}, "arms[1].value"),
    ({"arms": [{"name": "control", "kind": "relative", "value": "0"},
               {"name": "control", "kind": "relative", "value": "5"}]}, "arms[1].name"),
])
def test_a_design_it_cannot_run_is_refused_naming_the_field(api, world, overrides, field, count_events):
    response = api.post(f"/shops/{world['shop']}/experiments", json=design(world["listings"][2:3], **overrides))
    assert response.status_code == 422, response.text
    assert problem_field(response) == field


def test_a_period_shorter_than_the_cooldown_is_refused(api, world):
    listing = world["listings"][2]
    limits = api.put(f"/shops/{world['shop']}/listings/{listing}/automation", json={"cooldown_minutes": 2 * 60})
    assert limits.status_code == 200, limits.text
    try:
        response = api.post(f"/shops/{world['shop']}/experiments", json=design([listing], period_hours=1, burn_in_hours=0))
        assert response.status_code == 422 and problem_field(response) == "period_hours"
        assert "cooldown" in response.json()["detail"]
    finally:
        api.put(f"/shops/{world['shop']}/listings/{listing}/automation", json={"cooldown_minutes": None})


def test_an_experiment_runs_its_periods_pauses_on_a_manual_change_and_ends(api, world):
    shop, (first, second) = world["shop"], world["listings"][:2]
    engine: PricingEngine = world["engine"]
    created = api.post(f"/shops/{shop}/experiments", json=design([first, second], horizon_cycles=3))
    assert created.status_code == 201, created.text
    x = created.json()
    assert x["status"] == "running" and x["seed"] == 42 and len(x["schedule"]) == 6
    assert sorted(x["schedule"][:2]) == [0, 1] and x["plan"]["cycles"] == 3 and 0 < x["plan"]["promised_power"] <= 1
    assert x["plan"]["days_observed"] >= 14

    overlapping = api.post(f"/shops/{shop}/experiments", json=design([second]))
    assert overlapping.status_code == 422 and problem_field(overlapping) == "listing_ids[0]"
    assert "one experiment per listing" in overlapping.json()["detail"]

    # The policy starts each period when it is due: the listings' prices are the arm's, source experiment.
    experiments, starts = engine.experiments, datetime.fromisoformat(x["starts_at"])
    for period in range(2):
        at = starts + timedelta(hours=24 * period, minutes=1)
        [result] = [r for r in tend_experiments(experiments, at) if r["experiment_id"] == x["experiment_id"]]
        assert result["outcome"] == "period_started" and result["period"] == period, result
        expected = "22.00" if x["schedule"][period] == 1 else "20.00"
        listing = api.get(f"/shops/{shop}/listings/{first}").json()
        assert listing["price"] == expected
        assert experiments.tend(UUID(x["experiment_id"]), at)["outcome"] == "waiting"  # once per period
    changes = [c for c in price_changes(engine, first) if c.meta.source == "experiment"]
    assert changes and changes[-1].automation.experiment.startswith(x["experiment_id"])
    assert changes[-1].meta.causation_id.startswith(f"experiment:{x['experiment_id']}/")

    explained = api.get(f"/shops/{shop}/listings/{first}/explain")
    assert explained.status_code == 200, explained.text
    assert f'"experiment_id":"{x["experiment_id"]}"' in explained.text.replace(" ", "")

    project(world["url"])
    analysis = api.get(f"/shops/{shop}/experiments/{x['experiment_id']}/analysis")
    assert analysis.status_code == 200, analysis.text
    body = analysis.json()
    assert body["mode"] == "fixed_horizon" and body["verdict_allowed"] is False
    assert "no verdict before the planned horizon" in body["verdict"]
    early = api.post(f"/shops/{shop}/experiments/{x['experiment_id']}/conclude", json={})
    assert early.status_code == 422 and problem_field(early) == "horizon"

    # A seller's own price change pauses the experiment, and the pause says whose change it was.
    assert api.put(f"/shops/{shop}/listings/{second}/price", json={"price": "25.00", "currency": "GBP"}).status_code == 200
    paused = experiments.tend(UUID(x["experiment_id"]), starts + timedelta(hours=30))
    assert paused["outcome"] == "paused" and paused["listing_id"] == second and "manual" in paused["reason"]
    got = api.get(f"/shops/{shop}/experiments/{x['experiment_id']}").json()
    assert got["status"] == "paused" and got["paused"]["listing_id"] == second
    assert experiments.tend(UUID(x["experiment_id"]), starts + timedelta(hours=49))["outcome"] == "paused"

    stopped = api.post(f"/shops/{shop}/experiments/{x['experiment_id']}/stop", json={"reason": "seller took over"})
    assert stopped.status_code == 200 and stopped.json()["status"] == "stopped"
    assert api.get(f"/shops/{shop}/listings/{second}").json()["price"] == "25.00"  # the seller's price stands
    assert api.post(f"/shops/{shop}/experiments/{x['experiment_id']}/stop", json={}).status_code == 422
    again = api.post(f"/shops/{shop}/experiments", json=design([second], name="second try"))
    assert again.status_code == 201, again.text  # the listing is free again
    assert api.post(f"/shops/{shop}/experiments/{again.json()['experiment_id']}/abandon", json={}).json()["status"] == "abandoned"
    listed = api.get(f"/shops/{shop}/experiments").json()["experiments"]
    assert {e["experiment_id"] for e in listed} >= {x["experiment_id"], again.json()["experiment_id"]}


def test_the_emergency_stop_refuses_a_period_and_the_record_says_why(api, world):
    shop, listing = world["shop"], world["listings"][2]
    engine: PricingEngine = world["engine"]
    arms = [{"name": "plus-5", "kind": "relative", "value": "5"}, {"name": "plus-10", "kind": "relative", "value": "10"}]
    x = api.post(f"/shops/{shop}/experiments", json=design([listing], name="under a stop", arms=arms)).json()
    assert api.post(f"/shops/{shop}/automation/stop", json={"reason": "incident"}).status_code == 200
    try:
        starts = datetime.fromisoformat(x["starts_at"])
        result = engine.experiments.tend(UUID(x["experiment_id"]), starts + timedelta(minutes=1))
        said = engine.identity.vault.reveal(result["listings"][listing])  # the stop's reason is sealed (erasable)
        assert said.startswith("refused: ") and "incident" in said
        assert api.get(f"/shops/{shop}/listings/{listing}").json()["price"] == "20.00"
        refused = [e for e in engine.core.events.get(UUID(listing)) if type(e).__name__ == "AutomatedChangeRefused"]
        assert refused[-1].automation.experiment == f"{x['experiment_id']}/0" and refused[-1].meta.source == "experiment"
    finally:
        assert api.post(f"/shops/{shop}/automation/resume", json={"reason": "incident over"}).status_code == 200
        assert api.post(f"/shops/{shop}/experiments/{x['experiment_id']}/abandon", json={}).status_code == 200


def test_other_tenants_and_read_only_roles_cannot_touch_it(api, world):
    shop = world["shop"]
    x = api.post(f"/shops/{shop}/experiments", json=design(world["listings"][2:3], name="guarded", seed=8)).json()
    stranger = world["accounts"].new("seller")
    analyst = world["accounts"].new("analyst", world["seller"].tenant_id)
    base = world["base"]
    path = f"/shops/{shop}/experiments/{x['experiment_id']}"
    assert httpx.get(base + path, headers=stranger).status_code == 404
    assert httpx.post(base + path + "/stop", headers=stranger, json={}).status_code == 404
    assert httpx.get(base + path + "/analysis", headers=analyst).status_code == 200
    assert httpx.post(base + path + "/abandon", headers=analyst, json={}).status_code == 403
    assert api.post(path + "/abandon", json={}).status_code == 200


def test_a_concluded_experiment_gives_the_demand_models_an_elasticity_they_prefer(api, world):
    """One-hour periods that began hours ago (business time), sales recorded in each at its arm's price:
    the horizon is past, so the analysis gives a verdict, conclude records it, and the next refresh
    serves the experimental elasticity where the listing's one-price history gave none."""
    shop, listing, engine = world["shop"], world["listings"][3], world["engine"]
    starts = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - timedelta(hours=8)
    body = design([listing], name="hourly", period_hours=1, burn_in_hours=0, metric="units", horizon_cycles=3,
                  starts_at=starts.isoformat(), seed=5,
                  arms=[{"name": "control", "kind": "relative", "value": "0"},
                        {"name": "plus-20", "kind": "relative", "value": "20"}])
    x = api.post(f"/shops/{shop}/experiments", json=body).json()
    experiments, sales = engine.experiments, []
    for period, arm in enumerate(x["schedule"]):
        at = starts + timedelta(hours=period, minutes=1)
        assert experiments.tend(UUID(x["experiment_id"]), at)["outcome"] == "period_started"
        quantity = (30 + period % 2) if arm == 0 else (21 + period % 3)  # -30 % units at +20 %: elasticity about -1.9
        sales.append({"listing_id": listing, "quantity": quantity, "unit_price": "20.00" if arm == 0 else "24.00",
                      "currency": "GBP", "order_id": f"x{period}", "transaction_id": f"x{period}",
                      "sold_at": (at + timedelta(minutes=20)).isoformat()})
    assert experiments.tend(UUID(x["experiment_id"]), starts + timedelta(hours=6, minutes=1))["period"] == 6
    assert api.get(f"/shops/{shop}/experiments/{x['experiment_id']}").json()["status"] == "completed"
    assert api.get(f"/shops/{shop}/listings/{listing}").json()["price"] == "20.00"  # back to the base after the horizon
    assert api.post(f"/shops/{shop}/sales", json={"sales": sales}).status_code == 201
    project(world["url"])

    found = api.get(f"/shops/{shop}/experiments/{x['experiment_id']}/analysis").json()
    assert found["verdict_allowed"] and found["cycles_complete"] == 3 and found["periods_dropped"] == [], found
    [arm] = found["arms"]
    assert arm["effect_per_day"] < 0 and arm["ci95"][0] <= arm["effect_per_day"] <= arm["ci95"][1]
    assert found["randomisation"].startswith("exact: all 8")
    [measured] = found["elasticities"]
    assert -2.6 < measured["elasticity"] < -1.4

    concluded = api.post(f"/shops/{shop}/experiments/{x['experiment_id']}/conclude", json={"reason": "done"})
    assert concluded.status_code == 200, concluded.text
    assert concluded.json()["status"] == "concluded" and concluded.json()["conclusion"]["elasticities"][0]["elasticity"]
    refresh(world["url"], shop, processes=1)
    run = api.get(f"/shops/{shop}/listings/{listing}/elasticity")
    assert run.status_code == 200, run.text
    estimate = run.json()["estimate"]
    assert estimate["label"] == "experiment" and estimate["elasticity"] == pytest.approx(measured["elasticity"], rel=1e-4)
    assert x["experiment_id"] in estimate["method"]
    other = api.get(f"/shops/{shop}/listings/{world['listings'][0]}/elasticity").json()
    assert other["refused"]  # one price, no experiment: still the observational refusal


def test_a_retried_create_with_its_idempotency_key_answers_the_first_experiment(api, world):
    body, key = design(world["listings"][2:3], name="retried", seed=None), {"Idempotency-Key": f"k-{uuid.uuid4().hex}"}
    body.pop("seed")
    first = api.post(f"/shops/{world['shop']}/experiments", json=body, headers=key)
    again = api.post(f"/shops/{world['shop']}/experiments", json=body, headers=key)
    assert first.status_code == 201 and again.status_code == 201, again.text
    assert again.headers.get("Idempotent-Replayed") == "true" and again.json() == first.json()
    assert api.post(f"/shops/{world['shop']}/experiments/{first.json()['experiment_id']}/abandon", json={}).status_code == 200


def test_the_repricing_policy_tends_experiments_from_its_loop_at_most_every_30_seconds(api, world):
    shop, listing, engine = world["shop"], world["listings"][2], world["engine"]
    x = api.post(f"/shops/{shop}/experiments", json=design([listing], name="from the loop", seed=3)).json()
    starts = datetime.fromisoformat(x["starts_at"])
    policy = RepricingPolicy(engine.rules, world["url"], clock=lambda: starts + timedelta(minutes=2))
    try:
        first = [r for r in policy.tend_experiments_when_due() if r["experiment_id"] == x["experiment_id"]]
        assert [r["outcome"] for r in first] == ["period_started"]
        assert policy.tend_experiments_when_due() == []  # throttled: periods last hours
        arm = x["arms"][x["schedule"][0]]["value"]
        assert api.get(f"/shops/{shop}/listings/{listing}").json()["price"] == ("22.00" if arm == "10" else "20.00")
    finally:
        policy.close()
        api.post(f"/shops/{shop}/experiments/{x['experiment_id']}/abandon", json={})


def test_an_msprt_experiment_answers_a_verdict_at_any_look_and_says_so(api, world):
    shop, listing, engine = world["shop"], world["listings"][0], world["engine"]
    starts = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - timedelta(hours=5)
    arms = [{"name": "plus-5", "kind": "relative", "value": "5"}, {"name": "plus-15", "kind": "relative", "value": "15"}]
    body = design([listing], name="sequential", period_hours=1, burn_in_hours=0, metric="revenue", mode="msprt",
                  cuped=True, horizon_cycles=20, starts_at=starts.isoformat(), arms=arms)
    x = api.post(f"/shops/{shop}/experiments", json=body).json()
    for period in range(4):
        engine.experiments.tend(UUID(x["experiment_id"]), starts + timedelta(hours=period, minutes=1))
    project(world["url"])
    found = api.get(f"/shops/{shop}/experiments/{x['experiment_id']}/analysis").json()
    assert found["mode"] == "msprt" and "every look" in found["peeking"]
    assert found["verdict_allowed"] and found["cycles_complete"] == 2 and found["cycles_planned"] == 20
    assert found["cuped"]["asked"] and found["cuped"]["applied"]
    assert 0 < found["arms"][0]["p_value"] <= 1 and found["arms"][0]["significant"] is not None
    assert api.post(f"/shops/{shop}/experiments/{x['experiment_id']}/abandon", json={}).json()["status"] == "abandoned"
