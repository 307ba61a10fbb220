"""The 'optimise profit' rule kind: it proposes the price of the listing's latest recommendation
model run (or holds, saying why), and the listing's guardrails, limits and stops decide as for
every automated change; the run is recorded in the change and old stored events still decode."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from uuid import UUID, uuid4

from types import SimpleNamespace

import psycopg
import pytest
from eventsourcing.persistence import StoredEvent
from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg.types.json import Jsonb

import codec
from commands import models
from commands import rule_models as m
from commands.context import CommandContext
from commands.engine import PricingEngine
from commands.rules import DUPLICATE, model_run_cause
from conftest import listing_spec
from domain.demand.elasticity import Baseline, Diagnostics, Estimate
from domain.errors import DomainError
from domain.listing import CHANGED, HELD, REFUSED, UNCHANGED, Guardrails, Listing
from domain.meta import Actor, EventMeta
from domain.money import Money
from domain.pricing_rule import PricingRule
from domain.rules import DEFAULT_MAX_RUN_AGE_HOURS, ListingFacts, RecommendationRun, Rule, evaluate
from projections.projector import Projector
from read.dry_run import ListingPage, dry_run, saved_rule
from read.explain import as_text, explain
from read.model_runs import recommendation_record
from read.side import ReadSide
from streams.repricing import RepricingPolicy, act_on_new_runs

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=timezone.utc)
RULE_ID = uuid4()


def gbp(amount: str) -> Money:
    return Money.of(amount, "GBP")


def meta(source: str = "manual", at: datetime = NOW) -> EventMeta:
    return EventMeta(shop_id=str(uuid4()), actor_id="pytest", actor_kind="user", source=source, reason="",
                     command_id="cmd-1", correlation_id="cmd-1", causation_id="cmd-1", occurred_at=at)


def run(price: str | None = "22.00", hours_old: float = 2, refusal: str | None = None, currency: str = "GBP",
        run_id: str = "run-1") -> RecommendationRun:
    money = lambda amount: None if amount is None else Money.of(amount, currency)  # noqa: E731
    return RecommendationRun(
        run_id=run_id, created_at=NOW - timedelta(hours=hours_old), price=money(price), refusal=refusal,
        elasticity=None if refusal else Decimal("-1.80"), elasticity_low=None if refusal else Decimal("-2.40"),
        elasticity_high=None if refusal else Decimal("-1.20"), objective="profit", from_price=money("20.00"),
        expected_at_from=money("41.10"), expected_at_price=None if refusal else money("43.25"))


OPTIMISE = Rule.define(kind="optimise_profit", currency="GBP")
FACTS = ListingFacts(gbp("20.00"), gbp("10.00"), gbp("40.00"), gbp("6.00"))


# -- the rule's proposal ---------------------------------------------------------------------------
@pytest.mark.parametrize("latest, rule, proposed, reason", [
    (None, OPTIMISE, None, "no recommendation model run for this listing yet"),
    (run(None, refusal="too few distinct prices"), OPTIMISE, None, "gave no price: too few distinct prices"),
    (run(hours_old=49), OPTIMISE, None, "49 h old, older than the rule's 48 h"),
    (run(hours_old=47), OPTIMISE, "22.00", "recommended 22.00 GBP"),
    (run(hours_old=7), Rule.define(kind="optimise_profit", currency="GBP", max_run_age_hours=6), None, "older than"),
    (run(currency="EUR"), OPTIMISE, None, "recommends a price in EUR, the listing is in GBP"),
    (run(), Rule.define(kind="optimise_profit", currency="EUR"), None, "rule is in EUR"),
    (run("22.40"), Rule.define(kind="optimise_profit", currency="GBP", rounding=".99"), "21.99", "rounded to .99"),
])
def test_the_proposal_follows_a_usable_run_and_otherwise_holds_saying_why(latest, rule, proposed, reason):
    proposal = evaluate(rule, FACTS, [], NOW, latest)
    assert (None if proposal.price is None else str(proposal.price.amount)) == proposed
    assert any(reason in r for r in proposal.reasons), proposal.reasons


def test_the_reasons_cite_the_run_its_elasticity_and_the_expected_profit_at_both_prices():
    proposal = evaluate(OPTIMISE, FACTS, [], NOW, run())
    assert proposal.model_run == run() and proposal.used == ()
    assert proposal.reasons[0].startswith("model run run-1: elasticity -1.80 [-2.40, -1.20], recommended 22.00 GBP")
    assert proposal.reasons[1] == "expected profit per day: 41.10 GBP at 20.00 GBP, 43.25 GBP at 22.00 GBP"


def test_other_kinds_ignore_a_run():
    fixed = Rule.define(kind="fixed", currency="GBP", amount="19.99")
    proposal = evaluate(fixed, FACTS, [], NOW, run())
    assert proposal.price == gbp("19.99") and proposal.model_run is None


# -- the definition -------------------------------------------------------------------------------
def test_a_new_optimise_rule_holds_runs_up_to_the_default_age_and_says_so():
    assert OPTIMISE.max_run_age_hours == DEFAULT_MAX_RUN_AGE_HOURS
    assert OPTIMISE.describe() == ("optimise profit: the price of the latest recommendation model run "
                                   "(at most 48 h old)")
    assert Rule.define(kind="match_lowest", currency="GBP").max_run_age_hours is None


@pytest.mark.parametrize("params, field", [
    ({"amount": "1.00"}, "amount"),
    ({"percent": "5"}, "percent"),
    ({"direction": "above"}, "direction"),
    ({"max_run_age_hours": 0}, "max_run_age_hours"),
    ({"max_run_age_hours": 90 * 24 + 1}, "max_run_age_hours"),
    ({"max_run_age_hours": True}, "max_run_age_hours"),
    ({"kind": "match_lowest", "max_run_age_hours": 12}, "max_run_age_hours"),
])
def test_definitions_refused_naming_the_field(params, field):
    with pytest.raises(DomainError) as e:
        Rule.define(**{"kind": "optimise_profit", "currency": "GBP", **params})
    assert e.value.field == field


# -- the listing decides (Listing.reprice): nothing bypasses the guardrails -------------------------
def mug(**limits) -> Listing:
    rails = Guardrails(floor=gbp("10.00"), ceiling=gbp("40.00"), cost=gbp("6.00"), **limits)
    listing = Listing.register(uuid4(), "ext-1", "MUG-1", "Blue mug", "active", gbp("20.00"), rails, meta())
    listing.assign_rule(RULE_ID, meta())
    return listing


def reprice(listing: Listing, latest: RecommendationRun | None, at: datetime = NOW, stopped: str | None = None,
            rule: Rule = OPTIMISE):
    proposal = evaluate(rule, listing.pricing_facts(), [], at, latest)
    return listing.reprice(proposal, RULE_ID, 1, f"model_run:{latest and latest.run_id}", meta("rule", at), stopped)


@pytest.mark.parametrize("limits, latest, outcome, price, clamp", [
    ({}, run("22.00"), CHANGED, "22.00", None),
    ({}, run("45.00"), CHANGED, "40.00", "above the ceiling 40.00 GBP"),
    ({"ceiling": gbp("21.00")}, run("22.00"), CHANGED, "21.00", "above the ceiling 21.00 GBP"),
    ({"min_margin": Decimal("75")}, run("18.00"), CHANGED, "24.00", "below the margin floor 24.00 GBP"),
    ({"max_step_percent": Decimal("5")}, run("22.00"), CHANGED, "21.00", "maximum step of 5%"),
    ({}, run("20.00"), UNCHANGED, "20.00", None),
    ({}, run(hours_old=100), HELD, "20.00", None),
])
def test_guardrails_and_limits_decide_the_recommended_price(limits, latest, outcome, price, clamp):
    listing = mug(**{k: v for k, v in limits.items() if k != "ceiling"})
    if "ceiling" in limits:
        listing.set_guardrails(replace(listing.guardrails, ceiling=limits["ceiling"]), meta())
    verdict = reprice(listing, latest)
    assert (verdict.outcome, str(listing.price.amount)) == (outcome, price)
    assert (clamp is None) == (not verdict.clamps) and all(clamp in c for c in verdict.clamps[:1] if clamp)
    if outcome == CHANGED:
        change = listing.pending_events[-1]
        assert change.automation.model_run == latest and change.automation.proposed == latest.price
        assert change.meta.causation_id == f"model_run:{latest.run_id}"


@pytest.mark.parametrize("limits, stopped, refusal", [
    ({}, "shop automation stopped by bob: supplier error", "shop automation stopped"),
    ({"cooldown_minutes": 60}, None, "cooling down for 60 min"),
    ({"max_daily_changes": 1}, None, "daily cap of 1"),
])
def test_stops_and_rate_limits_refuse_and_the_refusal_records_the_run(limits, stopped, refusal):
    listing = mug(**limits)
    if not stopped:
        assert reprice(listing, run("21.00", run_id="run-0"), NOW - timedelta(minutes=10)).outcome == CHANGED
    verdict = reprice(listing, run("22.00"), stopped=stopped)
    assert verdict.outcome == REFUSED and refusal in verdict.refusal
    recorded = listing.pending_events[-1]
    assert isinstance(recorded, Listing.AutomatedChangeRefused) and recorded.automation.model_run == run("22.00")


# -- stored events ---------------------------------------------------------------------------------
def round_trip(event):
    mapper = codec.new_mapper()
    return mapper.to_domain_event(mapper.to_stored_event(event))


def test_an_automated_change_round_trips_with_its_run():
    listing = mug()
    reprice(listing, run())
    change = listing.pending_events[-1]
    assert round_trip(change) == change and round_trip(change).automation.model_run == run()


def test_rules_of_the_older_kinds_and_changes_without_a_run_keep_their_stored_form():
    listing = mug()
    listing.reprice(evaluate(Rule.define(kind="fixed", currency="GBP", amount="21.00"), listing.pricing_facts(), [],
                             NOW), RULE_ID, 1, "rule:x/v1", meta("rule"))
    rule = PricingRule.define(uuid4(), "match", Rule.define(kind="match_lowest", currency="GBP"), meta())
    mapper = codec.new_mapper()
    assert b"model_run" not in mapper.to_stored_event(listing.pending_events[-1]).state
    assert b"max_run_age_hours" not in mapper.to_stored_event(rule.pending_events[0]).state


# Stored before the optimise-profit kind existed (the codec's output then, byte for byte).
OLD_RULE_DEFINED = (
    '{"timestamp":{"_type_":"datetime_iso","_data_":"2026-03-01T09:30:00.768661+00:00"},"originator_topic":'
    '"domain.pricing_rule:PricingRule","shop_id":{"_type_":"uuid_hex","_data_":"11111111111141118111111111111111"},'
    '"name":"beat","rule":{"_type_":"rule","_data_":{"kind":"beat_lowest","currency":"GBP","amount":null,"percent":'
    '{"_type_":"decimal_str","_data_":"5"},"direction":null,"rounding":"none","include":[],"exclude":["x"],'
    '"max_age_minutes":1440,"no_competition":"hold","below_floor":"hold_at_floor"}},"meta":{"_type_":"meta","_data_":'
    '{"shop_id":"11111111-1111-4111-8111-111111111111","actor_id":"alice","actor_kind":"user","source":"manual",'
    '"reason":"","command_id":"c1","correlation_id":"c1","causation_id":"c1","occurred_at":{"_type_":"datetime_iso",'
    '"_data_":"2026-03-01T09:30:00+00:00"}}}}')
OLD_AUTOMATED_CHANGE = (
    '{"timestamp":{"_type_":"datetime_iso","_data_":"2026-03-01T09:30:00.781803+00:00"},"price":{"_type_":"money",'
    '"_data_":["19.00","GBP"]},"previous":{"_type_":"money","_data_":["20.00","GBP"]},"meta":{"_type_":"meta","_data_":'
    '{"shop_id":"11111111-1111-4111-8111-111111111111","actor_id":"repricing-policy","actor_kind":"policy","source":'
    '"rule","reason":"","command_id":"c1","correlation_id":"c1","causation_id":"observation:b/1","occurred_at":'
    '{"_type_":"datetime_iso","_data_":"2026-03-01T09:30:00+00:00"}}},"rule":"111370d6-b3ec-4710-b650-d88f3b9dc37e",'
    '"compensates":[],"automation":{"_type_":"automation","_data_":{"rule_id":{"_type_":"uuid_hex","_data_":'
    '"111370d6b3ec4710b650d88f3b9dc37e"},"rule_version":1,"cause":"observation:b/1","proposed":{"_type_":"money",'
    '"_data_":["19.00","GBP"]},"clamps":[],"reasons":["lowest: 20.00 GBP (a)"],"observations":["b/1"]}},'
    '"class_version":2}')


def test_rules_and_automated_changes_stored_before_still_decode():
    rule = codec.to_domain_event(StoredEvent(UUID("111370d6-b3ec-4710-b650-d88f3b9dc37e"), 1,
                                             "domain.pricing_rule:PricingRule.Defined", OLD_RULE_DEFINED.encode()))
    assert rule.rule == Rule.define(kind="beat_lowest", currency="GBP", percent="5", exclude=["x"])
    assert rule.rule.max_run_age_hours is None
    change = codec.to_domain_event(StoredEvent(uuid4(), 3, "domain.listing:Listing.PriceChanged",
                                               OLD_AUTOMATED_CHANGE.encode()))
    assert change.automation.model_run is None and change.automation.observations == ("b/1",)
    assert change.price == gbp("19.00")


# -- the policy on real PostgreSQL -----------------------------------------------------------------
ESTIMATE = Estimate(
    elasticity=-2.5, ci95=(-3.0, -2.2), se=0.2, n_days=120, distinct_prices=4, price_range=(17.0, 23.0),
    total_units=400.0, method="own", family="poisson", controls=("weekday", "trend"),
    diagnostics=Diagnostics(deviance=100.0, pearson_dispersion=1.1, nb_alpha=None, converged=True, iterations=6,
                            covariance="HAC", clipped_negative_days=0, excluded_inactive_days=0,
                            excluded_unknown_price_days=0, independent_price_variation=0.2),
    baseline=Baseline(reference_price=20.0, units_per_day=3.0, log_se=0.05, log_cov_elasticity=0.0))


def write_run(url: str, engine: PricingEngine, shop: UUID, listing_id: UUID, estimate=ESTIMATE) -> UUID:
    """A new refresh of the shop holding one recommendation run, as read/model_runs.py writes it."""
    listing = engine.core.repository.get(listing_id)
    record = recommendation_record(estimate, listing, "GBP", uuid4())
    run_id, refresh_id, created = uuid4(), uuid4(), datetime.now(timezone.utc)
    with psycopg.connect(url) as conn:
        conn.execute("INSERT INTO analytics.model_runs (run_id, refresh_id, shop_id, listing_id, kind, created_at,"
                     " model, params, answer, refused) VALUES (%s, %s, %s, %s, 'recommendation', %s, %s, %s, %s, %s)",
                     [run_id, refresh_id, shop, listing_id, created, record["model"],
                      Jsonb(record["params"]), Jsonb(record["answer"]), record["refused"]])
        conn.execute("INSERT INTO analytics.model_refreshes (shop_id, refresh_id, created_at, listings, runs, seconds)"
                     " VALUES (%s, %s, %s, 1, 1, 0) ON CONFLICT (shop_id) DO UPDATE SET refresh_id = excluded.refresh_id,"
                     " created_at = excluded.created_at", [shop, refresh_id, created])
    return run_id


@pytest.fixture
def shop_world(new_database):
    """One shop: listing a under 'optimise profit', b under 'match the lowest'; the policy caught up."""
    url = new_database()
    engine = PricingEngine(url, pool_size=2)
    ctx = CommandContext(actor=Actor("pytest"), tenant_id="t-optimise")
    shop = UUID(engine.listings.open_shop(ctx, models.OpenShop(name="Optimise", currency="GBP")).body["shop_id"])
    registered = engine.listings.register_listings(ctx, shop, models.RegisterListings.model_validate(
        {"listings": [listing_spec(0), listing_spec(1)]}))
    a, b = (UUID(x["listing_id"]) for x in registered.body["listings"])
    optimise = UUID(engine.rules.define_rule(ctx, shop, m.DefineRule(name="profit", kind="optimise_profit")).body["rule_id"])
    match = UUID(engine.rules.define_rule(ctx, shop, m.DefineRule(name="match", kind="match_lowest")).body["rule_id"])
    engine.rules.assign_rule(ctx, shop, m.AssignRule(rule_id=match, listing_ids=[b]))
    projector, reads = Projector(url, codec.to_domain_event), ReadSide(url, pool_size=2)
    policy = RepricingPolicy(engine.rules, url)
    yield SimpleNamespace(url=url, engine=engine, ctx=ctx, shop=shop, a=a, b=b, optimise=optimise, policy=policy,
                          projector=projector, reads=reads)
    policy.close()
    reads.close()
    projector.close()
    engine.close()


def follow(w) -> None:
    w.projector.catch_up()
    w.policy.catch_up()


def automated(w, listing: UUID) -> list:
    return [e for e in w.engine.core.events.get(listing)
            if isinstance(e, (Listing.PriceChanged, Listing.AutomatedChangeRefused)) and e.automation is not None]


def test_assigning_the_rule_follows_the_latest_run_and_a_new_run_acts_once(shop_world):
    w = shop_world
    first = write_run(w.url, w.engine, w.shop, w.a)
    w.engine.rules.assign_rule(w.ctx, w.shop, m.AssignRule(rule_id=w.optimise, listing_ids=[w.a]))
    follow(w)
    [change] = automated(w, w.a)
    assert change.price == gbp("18.00") and change.meta.causation_id.startswith("assignment:")  # 10% default step
    assert change.automation.model_run.run_id == str(first)

    second = write_run(w.url, w.engine, w.shop, w.a)  # the refresh after: from 18.00, another step down
    for _ in range(2):
        acted = act_on_new_runs(w.engine.rules, w.url, w.shop)
    assert (acted.results, acted.failed, acted.already) == ([], [], 1)  # the second call found the run done
    changes = automated(w, w.a)
    assert [str(c.price.amount) for c in changes] == ["18.00", "16.20"]
    assert changes[-1].meta.causation_id == model_run_cause(str(second))
    again = w.engine.rules.reprice_listing(w.engine.rules.automation_context(w.shop, "x"), w.shop, w.a, [],
                                           model_run_cause(str(second)), run=changes[-1].automation.model_run)
    assert again.outcome == DUPLICATE and len(automated(w, w.a)) == 2


def test_explain_cites_the_model_run_behind_the_change(shop_world):
    w = shop_world
    w.engine.rules.assign_rule(w.ctx, w.shop, m.AssignRule(rule_id=w.optimise, listing_ids=[w.a]))
    follow(w)
    assert automated(w, w.a) == []  # no run yet: held, nothing recorded
    run_id = write_run(w.url, w.engine, w.shop, w.a)
    [result] = act_on_new_runs(w.engine.rules, w.url, w.shop).results
    assert (result.outcome, result.price, result.model_run) == ("changed", "18.00", str(run_id))
    report = explain(w.reads.aggregates, w.ctx, w.shop, w.a)
    automation = report["chain"][0]["automation"]
    assert automation["cause"] == {"cause": f"model_run:{run_id}", "kind": "model_run", "run_id": str(run_id)}
    assert automation["model_run"]["run_id"] == str(run_id) and automation["model_run"]["interval"] == ["-3.00", "-2.20"]
    text = as_text(report)
    assert (f"rule 'profit' v1 (optimise profit) used model run {run_id}: elasticity -2.50 [-3.00, -2.20], "
            f"recommended 18.00 GBP") in text
    assert f"caused by the new model run {run_id}" in text


def test_observations_leave_optimise_profit_listings_alone(shop_world):
    w = shop_world
    write_run(w.url, w.engine, w.shop, w.a)
    w.engine.rules.assign_rule(w.ctx, w.shop, m.AssignRule(rule_id=w.optimise, listing_ids=[w.a]))
    w.engine.listings.record_observations(w.ctx, w.shop, models.RecordObservations.model_validate({"observations": [
        {"listing_id": str(listing), "competitor": "rival", "price": "15.00", "currency": "GBP",
         "observed_at": datetime.now(timezone.utc).isoformat()} for listing in (w.a, w.b)]}))
    follow(w)  # one page: a's assignment, then both observations
    [a_change], [b_change] = automated(w, w.a), automated(w, w.b)
    assert a_change.meta.causation_id.startswith("assignment:") and a_change.price == gbp("18.00")
    assert b_change.meta.causation_id.startswith("observation:") and b_change.price == gbp("15.00")
    w.engine.listings.record_observations(w.ctx, w.shop, models.RecordObservations.model_validate({"observations": [
        {"listing_id": str(w.a), "competitor": "rival", "price": "12.00", "currency": "GBP",
         "observed_at": datetime.now(timezone.utc).isoformat()}]}))
    follow(w)
    assert len(automated(w, w.a)) == 1


def test_the_dry_run_shows_what_the_rule_would_do_citing_the_run(shop_world):
    w = shop_world
    run_id = write_run(w.url, w.engine, w.shop, w.a)
    tried = saved_rule(w.reads.aggregates, w.ctx, w.shop, w.optimise, None)
    report = dry_run(w.reads.aggregates, w.ctx, w.shop, tried, ListingPage([w.a, w.b]), lambda wanted: {})
    a, b = report["listings"]
    assert (a["outcome"], a["price_after"], a["model_run"]["run_id"]) == ("changed", "18.00", str(run_id))
    assert a["reasons"][0].startswith(f"model run {run_id}: elasticity -2.50 [-3.00, -2.20], recommended 18.00 GBP")
    assert (b["outcome"], b["model_run"]) == ("held", None) and "no recommendation model run" in b["reasons"][0]


# -- a stored run as the rule reads it -------------------------------------------------------------
STORED = {"price": "18.00", "currency": "GBP", "objective": "profit", "current_price": "20.00", "elasticity": -2.5,
          "ci95": [-3.0, -2.2], "current": {"profit_per_day": {"mean": "42.00"}, "revenue_per_day": {"mean": "60.00"}},
          "recommended": {"profit_per_day": {"mean": "46.85"}, "revenue_per_day": {"mean": "54.00"}}}


@pytest.mark.parametrize("refused, answer, refusal", [
    (True, {"reason": "one price only", "needs": "several prices"}, "one price only"),
    (False, {k: v for k, v in STORED.items() if k != "price"}, "KeyError"),
    (False, {**STORED, "elasticity": float("nan")}, "elasticity: must be a finite number"),
    (False, {**STORED, "price": "-1.00"}, "price: a price must be greater than zero"),
    (False, {**STORED, "price": "18.001"}, "at most 2 decimals"),
    (False, {**STORED, "currency": "XBT"}, "not a supported ISO 4217 currency"),
    (False, {**STORED, "ci95": [-3.0]}, "ValueError"),
])
def test_a_stored_answer_that_is_not_a_recommendation_becomes_a_refusal(refused, answer, refusal):
    stored = RecommendationRun.from_stored("r", NOW, refused, answer)
    assert stored.price is None and refusal in stored.refusal
    assert evaluate(OPTIMISE, FACTS, [], NOW, stored).price is None


def test_a_stored_answer_without_a_cost_cites_expected_revenue():
    stored = RecommendationRun.from_stored("r", NOW, False, {
        **STORED, "objective": "revenue (no cost known)",
        "current": {"profit_per_day": None, "revenue_per_day": {"mean": "60.00"}},
        "recommended": {"profit_per_day": None, "revenue_per_day": {"mean": "54.00"}}})
    assert (stored.expected_at_from, stored.expected_at_price) == (gbp("60.00"), gbp("54.00"))
    assert stored.elasticity_low == Decimal("-3.00") and stored.price == gbp("18.00")


json_values = st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                       max_size=3), max_leaves=8)


@settings(max_examples=150, deadline=None)
@given(st.fixed_dictionaries({}, optional={k: json_values for k in STORED}).map(lambda d: {**STORED, **d}))
def test_any_stored_answer_gives_a_usable_price_or_a_refusal(answer):
    stored = RecommendationRun.from_stored("r", NOW, False, answer)
    assert (stored.refusal is None) == (stored.price is not None)
    if stored.price is not None:
        assert stored.price.amount.is_finite() and stored.price.amount > 0 and stored.elasticity.is_finite()


# -- the rule over HTTP ----------------------------------------------------------------------------
def test_an_optimise_profit_rule_is_defined_over_http_and_its_max_age_belongs_to_it(api, shop):
    response = api.post(f"/shops/{shop}/rules", json={"name": "profit", "kind": "optimise_profit",
                                                      "max_run_age_hours": 24})
    assert response.status_code == 201, response.text
    assert response.json()["summary"].endswith("(at most 24 h old)")
    refused = api.post(f"/shops/{shop}/rules", json={"name": "beat", "kind": "beat_lowest", "percent": "5",
                                                     "max_run_age_hours": 24})
    assert refused.status_code == 422 and refused.json()["field"] == "max_run_age_hours", refused.text
