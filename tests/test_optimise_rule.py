"""The 'optimise profit' rule kind: it proposes the price of the listing's latest recommendation
model run (or holds, saying why), and the listing's guardrails, limits and stops decide as for
every automated change; the run is recorded in the change and old stored events still decode."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import StoredEvent

import codec
from domain.errors import DomainError
from domain.listing import CHANGED, HELD, REFUSED, UNCHANGED, Guardrails, Listing
from domain.meta import EventMeta
from domain.money import Money
from domain.pricing_rule import PricingRule
from domain.rules import DEFAULT_MAX_RUN_AGE_HOURS, ListingFacts, RecommendationRun, Rule, evaluate

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
