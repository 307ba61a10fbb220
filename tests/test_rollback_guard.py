"""The rollback guard: a deliberately bad rule (a 40 % price cut on an inelastic product) is rolled
back within the shop's configured periods, automation stops for the listing, the evidence is in the
events and explain shows it, and a restart (or a trip acted on again) rolls back nothing twice.
Real PostgreSQL, the real refresh, policy and projector, on a simulated clock."""

from __future__ import annotations

import time
from datetime import date, timedelta
from decimal import Decimal
from types import SimpleNamespace
from uuid import UUID, uuid4

import httpx
import numpy as np
import psycopg
import pytest

import codec
from api.server import build, running
from api.settings import Settings
from bench.market import Clock
from commands import experiment_models as em
from commands import models
from commands import rule_models as rm
from commands.clocked import ClockedContext
from commands.engine import PricingEngine
from commands.rollback_guard import ConfigureGuard
from domain.errors import DomainError
from domain.listing import Listing
from domain.meta import Actor
from domain.rollback_guard import GuardSettings, Period, RollbackGuard, breach, guard_id
from projections.projector import Projector
from read import model_runs
from read.explain import explain
from read.side import ReadSide
from streams.repricing import RepricingPolicy, tend_experiments
from streams.rollback_guard import RollbackGuardFollower

HISTORY = 42
WEEKDAY = (0.95, 0.85, 0.85, 0.95, 1.05, 1.25, 1.10)
BASE_UNITS = 80.0
ELASTICITY = -0.5  # inelastic: a 40 % cut sells only 29 % more, so revenue falls by a quarter


# -- the decision ----------------------------------------------------------------------------------
def days(*below: bool) -> list[Period]:
    start = date(2026, 1, 1)
    return [Period(start + timedelta(days=i), Decimal(1 if b else 3), Decimal(2), Decimal(4)) for i, b in enumerate(below)]


@pytest.mark.parametrize("below, needed, first", [
    ((True, True, True), 3, 0),
    ((True, True, False, True), 3, None),
    ((False, True, True, True, True), 3, 1),
    ((True, False, True, False), 1, 0),
    ((), 1, None),
    ((True, True), 3, None),
])
def test_a_breach_is_the_first_run_of_consecutive_days_below_the_lower_bound(below, needed, first):
    periods = days(*below)
    found = breach(periods, needed)
    assert (None if found is None else periods.index(found[0])) == first
    assert found is None or (len(found) == needed and all(p.below for p in found))


@pytest.mark.parametrize("settings, field", [
    (GuardSettings(metric="profit"), "metric"),
    (GuardSettings(level=90), "level"),
    (GuardSettings(periods=0), "periods"),
    (GuardSettings(periods=31), "periods"),
])
def test_settings_out_of_range_are_refused_naming_the_field(settings, field):
    with pytest.raises(DomainError) as refused:
        settings.check()
    assert refused.value.field == field


# -- end to end ------------------------------------------------------------------------------------
@pytest.fixture
def world(new_database):
    url = new_database()
    start = date.today() - timedelta(days=HISTORY + 10)
    clock = Clock(None)
    clock.at(start, 6)
    engine = PricingEngine(url, pool_size=2)
    ctx = ClockedContext(actor=Actor("pytest"), tenant_id=f"t-guard-{uuid4().hex[:6]}", clock=clock)
    shop = UUID(engine.listings.open_shop(ctx, models.OpenShop(name="Guarded", currency="GBP")).body["shop_id"])
    listing = UUID(engine.listings.register_listings(ctx, shop, models.RegisterListings.model_validate({"listings": [{
        "external_id": "g-1", "sku": "G-1", "title": "inelastic mug", "price": "20.00", "currency": "GBP",
        "floor": "5.00", "ceiling": "40.00", "cost": "4.00"}]})).body["listings"][0]["listing_id"])
    projector, reads = Projector(url, codec.to_domain_event), ReadSide(url, pool_size=1)
    policy = RepricingPolicy(engine.rules, url, clock=clock)
    guards = engine.guards
    w = SimpleNamespace(url=url, engine=engine, ctx=ctx, shop=shop, listing=listing, clock=clock, start=start,
                        projector=projector, reads=reads, policy=policy, guards=guards,
                        follower=RollbackGuardFollower(guards, url, clock, business_clock=True),
                        rng=np.random.default_rng(17))
    yield w
    policy.close()
    reads.close()
    projector.close()
    engine.close()


def sell(w, t: int, price: Decimal) -> None:
    day = w.start + timedelta(days=t)
    mu = BASE_UNITS * float(price / Decimal(20)) ** ELASTICITY * WEEKDAY[day.weekday()]
    w.clock.at(day, 20)
    units = int(w.rng.poisson(mu))
    w.engine.listings.record_sales(w.ctx, w.shop, models.RecordSales(sales=[models.SaleIn(
        listing_id=w.listing, quantity=units, unit_price=price, currency="GBP", order_id=f"o-{t}",
        transaction_id=f"t-{t}", sold_at=w.clock())]))


def price_events(w) -> list:
    return [e for e in w.engine.core.events.get(w.listing) if isinstance(e, Listing.PriceChanged)]


def bad_rule(w) -> None:
    """A fixed price 40 % below, assigned on day HISTORY at 09:00 (the policy makes the change)."""
    w.clock.at(w.start + timedelta(days=HISTORY), 9)
    rule = UUID(w.engine.rules.define_rule(w.ctx, w.shop, rm.DefineRule(name="cut", kind="fixed", amount="12.00")).body["rule_id"])
    w.engine.rules.assign_rule(w.ctx, w.shop, rm.AssignRule(rule_id=rule, listing_ids=[w.listing]))
    w.projector.catch_up()
    w.policy.catch_up()


def bad_experiment(w) -> None:
    """An A/A switchback whose both arms are 40 % below, from day HISTORY at 00:00 (tended by the policy)."""
    starts = w.clock.at(w.start + timedelta(days=HISTORY), 0)
    arms = [em.ArmSpec(name=n, kind="relative", value="-40") for n in ("cut", "cut-again")]
    w.policy.experiments.create(w.ctx, w.shop, em.CreateExperiment(
        name="bad", listing_ids=[w.listing], arms=arms, period_hours=24, metric="revenue", mde="0.2",
        horizon_cycles=4, seed=1, starts_at=starts), [1600.0] * 28, starts)
    tend_experiments(w.policy.experiments, w.clock())


@pytest.mark.parametrize("make_the_cut", [bad_rule, bad_experiment])
def test_a_forty_percent_cut_on_an_inelastic_product_is_rolled_back_within_the_configured_periods(world, make_the_cut):
    w = world
    for t in range(HISTORY):
        sell(w, t, Decimal("20.00"))
    w.projector.catch_up()
    model_runs.refresh(w.url, w.shop, today=w.start + timedelta(days=HISTORY))
    periods = 3
    configured = w.guards.configure(w.ctx, w.shop, ConfigureGuard(metric="revenue", level=80, periods=periods))
    assert configured.body["configured"] and configured.body["changed"]

    make_the_cut(w)
    [cut] = [e for e in price_events(w) if e.meta.source in ("rule", "experiment")]
    assert cut.price.amount == Decimal("12.00")

    tripped_on = None
    for t in range(HISTORY, HISTORY + 8):
        price = w.engine.core.repository.get(w.listing).price.amount
        sell(w, t, price)
        w.projector.catch_up()
        w.clock.at(w.start + timedelta(days=t + 1), 2)  # the next morning: day t is complete
        tend_experiments(w.policy.experiments, w.clock())  # the experiment's next period (same price)
        if w.follower.check() and tripped_on is None:
            tripped_on = t
    # The days compared start the day after the change: tripped once `periods` days were complete.
    assert tripped_on == HISTORY + periods, "tripped after the configured number of days below the forecast"

    listing = w.engine.core.repository.get(w.listing)
    assert listing.price.amount == Decimal("20.00") and listing.rule_id is None  # rolled back, automation stopped
    assert w.policy.experiments.experiment_of(w.listing) is None  # an experiment on it is stopped
    rollback = next(e for e in price_events(w) if e.meta.source == "rollback")
    assert rollback.meta.source == "rollback" and rollback.compensates == [cut.originator_version]
    assert rollback.meta.causation_id.startswith("rollback_guard:") and "below the forecast's 80% lower bound" in rollback.meta.reason
    assert rollback.meta.occurred_at.date() == w.start + timedelta(days=HISTORY + periods + 1)  # simulated time
    [tripped] = [e for e in w.engine.core.events.get(guard_id(w.shop)) if isinstance(e, RollbackGuard.Tripped)]
    evidence = tripped.evidence
    assert evidence["changes"] == [cut.originator_version] and evidence["metric"] == "revenue"
    assert len(evidence["periods"]) == periods and evidence["forecast_run"]
    assert all(Decimal(p["observed"]) < Decimal(p["lower"]) < Decimal(p["forecast"]) for p in evidence["periods"])

    report = explain(w.reads.aggregates, w.ctx, w.shop, w.listing)
    assert report["chain"][0]["guard"]["evidence"]["key"] == evidence["key"]
    assert report["chain"][0]["compensates"][0]["version"] == cut.originator_version

    # A restart: a new follower finds nothing to do; the trip acted on again replays, appending nothing.
    with psycopg.connect(w.url) as conn:
        count = lambda: conn.execute("SELECT count(*) FROM pricing_events").fetchone()[0]  # noqa: E731
        before = count()
        fresh = RollbackGuardFollower(w.engine.guards, w.url, w.clock)
        assert fresh.check() == []
        again = w.guards.trip(_evidence_of(tripped, w, periods))
        assert again["rollback"]["compensates"] == [cut.originator_version]
        assert count() == before


def _evidence_of(tripped, w, periods: int):
    """The trip's Evidence rebuilt from its event (what a crashed follower would derive again)."""
    from domain.rollback_guard import Evidence
    e = tripped.evidence
    settings = GuardSettings(e["metric"], e["level"], e["periods_needed"])
    found = tuple(Period(date.fromisoformat(p["day"]), Decimal(p["observed"]), Decimal(p["lower"]), Decimal(p["forecast"]))
                  for p in e["periods"])
    assert len(found) == periods
    return Evidence(w.shop, w.listing, tuple(e["changes"]), e["restore_version"], e["forecast_run"], settings, found)


def test_the_settings_route_checks_tenant_and_role_and_names_the_field(api, shop, accounts, tenant):
    url = f"/shops/{shop}/rollback-guard"
    assert api.get(url).json()["configured"] is False
    changed = api.put(url, json={"metric": "units", "level": 95, "periods": 2, "reason": "careful"})
    assert changed.status_code == 200 and changed.json()["changed"] and changed.json()["periods"] == 2
    assert api.put(url, json={"metric": "units", "level": 95, "periods": 2}).json()["changed"] is False
    refused = api.put(url, json={"periods": 0})
    assert refused.status_code == 422 and refused.headers["content-type"].startswith("application/problem+json")
    assert "periods" in refused.text
    assert api.put(url, json={"level": 90}).status_code == 422
    stranger, analyst = accounts.new(), accounts.new("analyst", tenant.tenant_id)
    for who, read, write in ((stranger, 404, 404), (analyst, 200, 403)):  # other tenant; no prices:write
        with httpx.Client(base_url=str(api.base_url), headers=who, timeout=60) as client:
            assert client.get(url).status_code == read
            assert client.put(url, json={"periods": 2}).status_code == write


def test_changes_made_before_any_forecast_are_judged_from_the_first_one_a_forecast_covers(world):
    """A rule's change before the first refresh has no forecast to be judged against; its next change
    does: that one alone is judged and rolled back, to the first change's price."""
    w = world
    w.clock.at(w.start + timedelta(days=HISTORY - 14), 9)
    rule = UUID(w.engine.rules.define_rule(w.ctx, w.shop, rm.DefineRule(name="fixed", kind="fixed", amount="19.00")).body["rule_id"])
    w.engine.rules.assign_rule(w.ctx, w.shop, rm.AssignRule(rule_id=rule, listing_ids=[w.listing]))
    w.projector.catch_up()
    w.policy.catch_up()
    for t in range(HISTORY):
        sell(w, t, Decimal("20.00") if t < HISTORY - 14 else Decimal("19.00"))
    w.projector.catch_up()
    model_runs.refresh(w.url, w.shop, today=w.start + timedelta(days=HISTORY))
    w.guards.configure(w.ctx, w.shop, ConfigureGuard(metric="revenue", level=80, periods=2))
    w.clock.at(w.start + timedelta(days=HISTORY), 9)
    w.engine.rules.revise_rule(w.ctx, w.shop, rule, rm.ReviseRule(name="fixed", kind="fixed", amount="11.40"))
    w.projector.catch_up()
    w.policy.catch_up()
    first, second = [e for e in price_events(w) if e.meta.source == "rule"]
    assert (first.price.amount, second.price.amount) == (Decimal("19.00"), Decimal("11.40"))
    trips = []
    for t in range(HISTORY, HISTORY + 5):
        sell(w, t, w.engine.core.repository.get(w.listing).price.amount)
        w.projector.catch_up()
        w.clock.at(w.start + timedelta(days=t + 1), 2)
        trips += w.follower.check()
    [trip] = trips
    assert trip["evidence"]["changes"] == [second.originator_version]
    assert trip["rollback"]["compensates"] == [second.originator_version]
    assert w.engine.core.repository.get(w.listing).price.amount == Decimal("19.00")


def test_serve_runs_the_guard_beside_the_policy_and_it_rolls_back_a_breach(world, tmp_path):
    w = world
    for t in range(HISTORY):
        sell(w, t, Decimal("20.00"))
    w.projector.catch_up()
    model_runs.refresh(w.url, w.shop, today=w.start + timedelta(days=HISTORY))
    w.guards.configure(w.ctx, w.shop, ConfigureGuard(metric="revenue", level=80, periods=3))
    bad_rule(w)
    for t in range(HISTORY, HISTORY + 4):  # days at the cut price, below the forecast, until the real yesterday
        sell(w, t, Decimal("12.00"))
    settings = Settings.from_env({"ETSYPRO_DATABASE_URL": w.url, "ETSYPRO_DATA_DIR": str(tmp_path), "ETSYPRO_POOL_SIZE": "1",
                                  "ETSYPRO_ANALYZE_EVERY_HOURS": "0", "ETSYPRO_ROLLBACK_GUARD_EVERY_MINUTES": "0.01"})
    engine, app = build(settings, log=lambda *_: None)
    try:
        with running(app):
            deadline = time.monotonic() + 60
            while engine.core.repository.get(w.listing).price.amount != Decimal("20.00"):
                assert time.monotonic() < deadline, "serve's rollback guard did not roll the cut back"
                time.sleep(0.2)
        assert not app.state.rollback_guard._thread.is_alive()  # stopped with the app
    finally:
        engine.close()
    assert w.engine.core.repository.get(w.listing).rule_id is None  # automation stopped for it
    for off in ({"ETSYPRO_ROLLBACK_GUARD_EVERY_MINUTES": "0"}, {"ETSYPRO_REPRICING": "off"}):
        quiet = Settings.from_env({"ETSYPRO_DATABASE_URL": w.url, "ETSYPRO_DATA_DIR": str(tmp_path),
                                   "ETSYPRO_POOL_SIZE": "1", "ETSYPRO_ANALYZE_EVERY_HOURS": "0", **off})
        engine, app = build(quiet, log=lambda *_: None)
        engine.close()
        assert app.state.rollback_guard is None
