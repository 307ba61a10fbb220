"""Pricing rules, guardrails on automated changes, rule versions and the emergency stop: the
domain on its own (no database, no HTTP)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from uuid import uuid4

import pytest

from domain.automation import AutomationSwitch, stop_reason, tenant_switch_id
from domain.errors import DomainError, InvalidValue, InvariantViolated
from domain.listing import CHANGED, HELD, REFUSED, UNCHANGED, Guardrails, Listing
from domain.meta import EventMeta
from domain.money import Money
from domain.pricing_rule import PricingRule
from domain.rules import CompetitorPrice, ListingFacts, Proposal, Rule, charm_candidates, evaluate
from domain.shop import Shop

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=timezone.utc)


def gbp(amount: str) -> Money:
    return Money.of(amount, "GBP")


def meta(source: str = "manual", reason: str = "", at: datetime = NOW, actor: str = "alice") -> EventMeta:
    return EventMeta(shop_id=str(uuid4()), actor_id=actor, actor_kind="user", source=source, reason=reason,
                     command_id="cmd-1", correlation_id="cmd-1", causation_id="cmd-1", occurred_at=at)


def seen(competitor: str, price: str, minutes_ago: int = 5, ref: str | None = None) -> CompetitorPrice:
    return CompetitorPrice(ref or f"obs:{competitor}/{minutes_ago}", competitor, gbp(price),
                           NOW - timedelta(minutes=minutes_ago))


def facts(price="25.00", floor: str | None = "10.00", ceiling: str | None = "40.00", cost: str | None = "6.00"):
    return ListingFacts(gbp(price), floor and gbp(floor), ceiling and gbp(ceiling), cost and gbp(cost))


def rule(kind: str, **params) -> Rule:
    return Rule.define(kind=kind, currency="GBP", **params)


def price_of(proposal: Proposal) -> str | None:
    return None if proposal.price is None else str(proposal.price.amount)


MARKET = [seen("a", "21.95"), seen("b", "24.00"), seen("c", "26.50"), seen("d", "30.00")]


# -- each kind -----------------------------------------------------------------------------------
class TestKinds:
    def test_beat_lowest_by_an_amount(self):
        proposal = evaluate(rule("beat_lowest", amount="0.50"), facts(), MARKET, NOW)
        assert price_of(proposal) == "21.45"
        assert "lowest: 21.95 GBP (a)" in proposal.reasons
        assert set(proposal.used) == {o.ref for o in MARKET}

    def test_beat_lowest_by_a_percent(self):
        assert price_of(evaluate(rule("beat_lowest", percent="3"), facts(), MARKET, NOW)) == "21.29"  # 21.2915

    def test_beating_by_a_percent_never_rounds_back_up_to_the_competitor(self):
        # 10.01 * (1 - 0.0004) = 10.005996: to the nearest penny that is 10.01 again, which beats nobody.
        one = [seen("a", "10.01")]
        assert price_of(evaluate(rule("beat_lowest", percent="0.04"), facts(floor=None), one, NOW)) == "10.00"

    def test_match_lowest(self):
        assert price_of(evaluate(rule("match_lowest"), facts(), MARKET, NOW)) == "21.95"

    def test_match_median_of_an_even_count_averages_the_middle_two(self):
        assert price_of(evaluate(rule("match_median"), facts(), MARKET, NOW)) == "25.25"
        assert price_of(evaluate(rule("match_median"), facts(), MARKET[:3], NOW)) == "24.00"

    @pytest.mark.parametrize("params, expected", [
        ({"amount": "1.00", "direction": "above"}, "26.61"),   # average 25.6125
        ({"amount": "1.00", "direction": "below"}, "24.61"),
        ({"percent": "10", "direction": "above"}, "28.17"),    # 25.6125 * 1.1 = 28.17375
        ({"percent": "10", "direction": "below"}, "23.05"),    # 25.6125 * 0.9 = 23.05125
    ])
    def test_offset_from_average(self, params, expected):
        assert price_of(evaluate(rule("offset_from_average", **params), facts(), MARKET, NOW)) == expected

    def test_cost_plus_keeps_the_target_margin_as_a_share_of_the_price(self):
        proposal = evaluate(rule("cost_plus", percent="40"), facts(cost="6.00"), MARKET, NOW)
        assert price_of(proposal) == "10.00"  # (10.00 - 6.00) / 10.00 = 40%
        assert proposal.used == ()  # competitors play no part

    def test_cost_plus_without_a_cost_holds_and_says_why(self):
        proposal = evaluate(rule("cost_plus", percent="40"), facts(cost=None), MARKET, NOW)
        assert proposal.price is None and "no cost" in proposal.reasons[-1]

    def test_fixed(self):
        assert price_of(evaluate(rule("fixed", amount="19.99"), facts(), [], NOW)) == "19.99"


# -- which observations count --------------------------------------------------------------------
class TestObservations:
    def test_only_the_newest_observation_of_each_competitor_counts(self):
        market = [seen("a", "15.00", minutes_ago=60), seen("a", "22.00", minutes_ago=1), seen("b", "23.00")]
        proposal = evaluate(rule("match_lowest"), facts(), market, NOW)
        assert price_of(proposal) == "22.00"
        assert market[0].ref not in proposal.used
        assert "1 superseded by a newer observation" in proposal.reasons[0]

    def test_observations_older_than_the_window_are_ignored(self):
        market = [seen("a", "15.00", minutes_ago=120), seen("b", "23.00", minutes_ago=30)]
        proposal = evaluate(rule("match_lowest", max_age_minutes=60), facts(), market, NOW)
        assert price_of(proposal) == "23.00"
        assert "1 older than 60 min" in proposal.reasons[0]
        assert price_of(evaluate(rule("match_lowest", max_age_minutes=None), facts(), market, NOW)) == "15.00"

    def test_include_and_exclude_lists(self):
        assert price_of(evaluate(rule("match_lowest", include=["c", "d"]), facts(), MARKET, NOW)) == "26.50"
        assert price_of(evaluate(rule("match_lowest", exclude=["a"]), facts(), MARKET, NOW)) == "24.00"

    def test_no_competition_holds_by_default(self):
        proposal = evaluate(rule("beat_lowest", percent="5"), facts(), [], NOW)
        assert proposal.price is None and "no competition" in proposal.reasons[-1]

    def test_no_competition_can_go_to_the_ceiling(self):
        r = rule("beat_lowest", percent="5", no_competition="ceiling", max_age_minutes=10)
        proposal = evaluate(r, facts(ceiling="40.00"), [seen("a", "20.00", minutes_ago=30)], NOW)
        assert price_of(proposal) == "40.00"
        assert evaluate(r, facts(ceiling=None), [], NOW).price is None  # no ceiling to go to

    def test_a_competitor_below_the_floor_holds_us_at_the_floor(self):
        proposal = evaluate(rule("beat_lowest", percent="5"), facts(floor="20.00"), [seen("a", "12.00"), seen("b", "25.00")], NOW)
        assert price_of(proposal) == "20.00"
        assert "below the floor" in proposal.reasons[-1]

    def test_a_competitor_below_the_floor_can_be_ignored(self):
        r = rule("beat_lowest", amount="1.00", below_floor="ignore_competitor")
        proposal = evaluate(r, facts(floor="20.00"), [seen("a", "12.00"), seen("b", "25.00")], NOW)
        assert price_of(proposal) == "24.00"
        assert seen("a", "12.00").ref not in proposal.used
        assert any("ignored 1 competitor(s) below the floor" in r for r in proposal.reasons)

    def test_when_every_competitor_is_below_the_floor_and_ignored_there_is_no_competition(self):
        r = rule("match_lowest", below_floor="ignore_competitor", no_competition="ceiling")
        assert price_of(evaluate(r, facts(floor="20.00"), [seen("a", "12.00")], NOW)) == "40.00"

    def test_observations_in_another_currency_are_left_out(self):
        usd = CompetitorPrice("obs:x", "x", Money.of("5.00", "USD"), NOW)
        proposal = evaluate(rule("match_lowest"), facts(), [usd, seen("a", "22.00")], NOW)
        assert price_of(proposal) == "22.00" and "1 in another currency" in proposal.reasons[0]


# -- rounding ------------------------------------------------------------------------------------
class TestRounding:
    @pytest.mark.parametrize("amount, rounding, down, up", [
        ("20.37", ".99", "19.99", "20.99"),
        ("20.99", ".99", "20.99", "20.99"),
        ("21.00", ".99", "20.99", "21.99"),
        ("20.37", ".95", "19.95", "20.95"),
        ("20.96", ".95", "20.95", "21.95"),
        ("20.37", "whole", "20", "21"),
        ("20.00", "whole", "20", "20"),
        ("0.50", ".99", "-0.01", "0.99"),
    ])
    def test_candidates(self, amount, rounding, down, up):
        assert charm_candidates(Decimal(amount), rounding) == (Decimal(down), Decimal(up))

    def test_charm_rounds_down(self):
        proposal = evaluate(rule("match_lowest", rounding=".99"), facts(), MARKET, NOW)
        assert price_of(proposal) == "20.99" and "rounded to .99: 20.99" in proposal.reasons

    def test_charm_rounds_up_rather_than_cross_the_floor(self):
        proposal = evaluate(rule("fixed", amount="20.50", rounding=".99"), facts(floor="20.10"), [], NOW)
        assert price_of(proposal) == "20.99"

    def test_charm_is_skipped_when_both_directions_cross_a_bound(self):
        proposal = evaluate(rule("fixed", amount="20.50", rounding=".95"), facts(floor="20.10", ceiling="20.90"), [], NOW)
        assert price_of(proposal) == "20.50" and "left unrounded" in proposal.reasons[-1]

    def test_whole_rounding_in_yen(self):
        r = Rule.define(kind="fixed", currency="JPY", amount="1580", rounding="whole")
        yen = ListingFacts(Money.of("1500", "JPY"))
        assert evaluate(r, yen, [], NOW).price == Money.of("1580", "JPY")

    def test_charm_endings_need_minor_units(self):
        with pytest.raises(InvalidValue) as e:
            Rule.define(kind="fixed", currency="JPY", amount="1580", rounding=".99")
        assert e.value.field == "rounding"

    def test_a_rule_never_proposes_a_non_positive_price(self):
        proposal = evaluate(rule("beat_lowest", amount="5.00"), facts(floor=None), [seen("a", "3.00")], NOW)
        assert proposal.price is None and "not a price" in proposal.reasons[-1]


# -- definitions refused, naming the field -------------------------------------------------------
class TestDefinition:
    @pytest.mark.parametrize("params, field", [
        ({"kind": "undercut"}, "kind"),
        ({"kind": "beat_lowest"}, "amount"),
        ({"kind": "beat_lowest", "amount": "1", "percent": "2"}, "percent"),
        ({"kind": "beat_lowest", "percent": "100"}, "percent"),
        ({"kind": "beat_lowest", "amount": "-1"}, "amount"),
        ({"kind": "beat_lowest", "amount": "0.001"}, "amount"),
        ({"kind": "match_lowest", "percent": "2"}, "percent"),
        ({"kind": "offset_from_average", "amount": "1"}, "direction"),
        ({"kind": "offset_from_average", "amount": "1", "direction": "sideways"}, "direction"),
        ({"kind": "match_median", "direction": "above"}, "direction"),
        ({"kind": "cost_plus"}, "percent"),
        ({"kind": "cost_plus", "percent": "40", "amount": "1"}, "amount"),
        ({"kind": "fixed", "amount": "0"}, "amount"),
        ({"kind": "fixed", "amount": "NaN"}, "amount"),
        ({"kind": "match_lowest", "rounding": ".49"}, "rounding"),
        ({"kind": "match_lowest", "include": ["a"], "exclude": ["a"]}, "exclude"),
        ({"kind": "match_lowest", "include": ["ok", " "]}, "include[1]"),
        ({"kind": "match_lowest", "max_age_minutes": 0}, "max_age_minutes"),
        ({"kind": "match_lowest", "no_competition": "panic"}, "no_competition"),
        ({"kind": "match_lowest", "below_floor": "sell_at_a_loss"}, "below_floor"),
        ({"kind": "match_lowest", "currency": "XXX"}, "currency"),
    ])
    def test_refused_naming_the_field(self, params, field):
        params = {"currency": "GBP", **params}
        with pytest.raises(DomainError) as e:
            Rule.define(**params)
        assert e.value.field == field, e.value


# -- guardrails on automated changes (Listing.reprice) -------------------------------------------
RULE_ID = uuid4()


def mug(price="20.00", floor: str | None = "10.00", **limits) -> Listing:
    rails = Guardrails(floor=floor and gbp(floor), ceiling=gbp("40.00"), cost=gbp("6.00"), **limits)
    listing = Listing.register(uuid4(), "ext-1", "MUG-1", "Blue mug", "active", gbp(price), rails, meta())
    listing.assign_rule(RULE_ID, meta())
    return listing


def propose(price: str | None) -> Proposal:
    return Proposal(None if price is None else gbp(price), ("test proposal",), ("obs:1",))


def auto(listing: Listing, price: str | None, at: datetime = NOW, cause: str = "obs:1", stopped: str | None = None):
    return listing.reprice(propose(price), RULE_ID, 3, cause, meta("rule", at=at), stopped)


def last_event(listing: Listing):
    return listing.pending_events[-1]


class TestReprice:
    def test_an_automated_change_names_rule_version_and_cause(self):
        listing = mug()
        verdict = auto(listing, "18.50", cause="observation:b/7")
        assert (verdict.outcome, verdict.price) == (CHANGED, gbp("18.50"))
        change = last_event(listing)
        assert isinstance(change, Listing.PriceChanged)
        assert change.rule == str(RULE_ID) and change.meta.source == "rule"
        assert change.meta.causation_id == "observation:b/7"
        a = change.automation
        assert (a.rule_id, a.rule_version, a.cause, a.proposed) == (RULE_ID, 3, "observation:b/7", gbp("18.50"))
        assert a.reasons == ("test proposal",) and a.observations == ("obs:1",) and a.clamps == ()

    def test_a_manual_change_carries_no_automation(self):
        listing = mug()
        listing.change_price(gbp("21.00"), meta())
        assert last_event(listing).automation is None

    @pytest.mark.parametrize("proposed, expected, word", [("5.00", "10.00", "floor"), ("55.00", "40.00", "ceiling")])
    def test_a_proposal_outside_floor_or_ceiling_is_clamped_and_says_so(self, proposed, expected, word):
        listing = mug()
        verdict = auto(listing, proposed)
        assert verdict.outcome == CHANGED and listing.price == gbp(expected)
        assert word in verdict.clamps[0] and last_event(listing).automation.clamps == verdict.clamps
        assert last_event(listing).automation.proposed == gbp(proposed)

    def test_the_margin_floor_binds_automated_changes_only(self):
        listing = mug(min_margin=Decimal("50"))  # cost 6.00 at 50% margin: 12.00
        verdict = auto(listing, "11.00")
        assert listing.price == gbp("12.00") and "margin floor" in verdict.clamps[0]
        assert listing.change_price(gbp("11.00"), meta())  # a person may still go lower (fixed floor 10.00)

    def test_a_step_larger_than_the_limit_is_clamped(self):
        listing = mug("20.00", max_step_percent=Decimal("10"))
        verdict = auto(listing, "15.00")
        assert listing.price == gbp("18.00") and "maximum step of 10%" in verdict.clamps[0]
        auto(listing, "30.00", at=NOW + timedelta(hours=1))
        assert listing.price == gbp("19.80")

    def test_the_step_bounds_round_towards_the_current_price(self):
        listing = mug("19.99", max_step_percent=Decimal("10"))  # 17.991 .. 21.989
        auto(listing, "10.00")
        assert listing.price == gbp("18.00")
        listing = mug("19.99", max_step_percent=Decimal("10"))
        auto(listing, "40.00")
        assert listing.price == gbp("21.98")

    def test_the_daily_cap_refuses_and_records_why(self):
        listing = mug(max_daily_changes=2)
        assert auto(listing, "21.00", NOW).outcome == CHANGED
        assert auto(listing, "22.00", NOW + timedelta(hours=1)).outcome == CHANGED
        verdict = auto(listing, "23.00", NOW + timedelta(hours=2), cause="obs:3")
        assert verdict.outcome == REFUSED and "daily cap of 2" in verdict.refusal
        refusal = last_event(listing)
        assert isinstance(refusal, Listing.AutomatedChangeRefused)
        assert (refusal.reason, refusal.automation.cause, refusal.automation.proposed) == (verdict.refusal, "obs:3", gbp("23.00"))
        assert listing.price == gbp("22.00")
        assert auto(listing, "23.00", NOW + timedelta(hours=24, seconds=1)).outcome == CHANGED  # a rolling 24 h

    def test_the_cooldown_refuses_until_it_has_passed(self):
        listing = mug(cooldown_minutes=30)
        auto(listing, "21.00", NOW)
        verdict = auto(listing, "22.00", NOW + timedelta(minutes=29))
        assert verdict.outcome == REFUSED and "cooling down for 30 min" in verdict.refusal
        assert auto(listing, "22.00", NOW + timedelta(minutes=30)).outcome == CHANGED

    def test_manual_changes_count_for_neither_cap_nor_cooldown(self):
        listing = mug(max_daily_changes=1, cooldown_minutes=60)
        listing.change_price(gbp("30.00"), meta())
        assert auto(listing, "21.00").outcome == CHANGED

    def test_while_stopped_a_change_is_refused_but_a_manual_one_is_not(self):
        listing = mug()
        verdict = auto(listing, "18.00", stopped="shop automation stopped by bob: sale")
        assert verdict.outcome == REFUSED and verdict.refusal.startswith("shop automation stopped")
        assert listing.price == gbp("20.00")
        assert listing.change_price(gbp("18.00"), meta())

    def test_holding_and_staying_put_record_nothing(self):
        listing = mug()
        assert auto(listing, None).outcome == HELD
        assert auto(listing, "20.00").outcome == UNCHANGED
        assert auto(listing, "20.00", stopped="stopped").outcome == UNCHANGED  # no change wanted: no refusal either
        listing = mug("10.00")
        assert auto(listing, "5.00").outcome == UNCHANGED  # clamped to the floor it already sits on
        assert [type(e).__name__ for e in listing.pending_events] == ["Registered", "RuleAssigned"]

    def test_a_step_too_small_to_move_the_price_is_refused(self):
        listing = mug("0.05", floor=None, max_step_percent=Decimal("1"))  # 1% of 0.05 is less than a penny
        verdict = auto(listing, "1.00")
        assert verdict.outcome == REFUSED and "cannot move" in verdict.refusal

    def test_only_the_assigned_rule_may_reprice(self):
        listing = mug()
        with pytest.raises(InvariantViolated) as e:
            listing.reprice(propose("18.00"), uuid4(), 1, "obs:1", meta("rule"))
        assert e.value.field == "rule_id"

    def test_an_automated_change_must_say_it_is_one(self):
        with pytest.raises(InvalidValue) as e:
            mug().reprice(propose("18.00"), RULE_ID, 1, "obs:1", meta("manual"))
        assert e.value.field == "source"

    def test_replaying_the_events_rebuilds_the_same_state(self):
        listing = mug(max_daily_changes=3, cooldown_minutes=5, max_step_percent=Decimal("20"))
        for minutes, price in [(0, "18.00"), (1, "17.00"), (10, "25.00"), (20, "30.00"), (30, "12.00")]:
            auto(listing, price, NOW + timedelta(minutes=minutes))
        copy = None
        for e in listing.collect_events():
            copy = e.mutate(copy)
        assert (copy.price, copy.automated_at, copy.last_automated_at, copy.rule_id) == (
            listing.price, listing.automated_at, listing.last_automated_at, listing.rule_id)


class TestAutomationLimits:
    @pytest.mark.parametrize("limits, field", [
        ({"min_margin": Decimal("100")}, "min_margin"),
        ({"min_margin": Decimal("-1")}, "min_margin"),
        ({"max_step_percent": Decimal("0")}, "max_step_percent"),
        ({"max_step_percent": Decimal("101")}, "max_step_percent"),
        ({"max_daily_changes": 0}, "max_daily_changes"),
        ({"cooldown_minutes": -1}, "cooldown_minutes"),
        ({"min_margin": Decimal("90")}, "min_margin"),  # 6.00 at 90% needs 60.00, above the ceiling
    ])
    def test_refused_naming_the_field(self, limits, field):
        with pytest.raises(DomainError) as e:
            mug(**limits)
        assert e.value.field == field

    def test_a_margin_needs_a_cost(self):
        listing = mug()
        with pytest.raises(InvalidValue) as e:
            listing.set_guardrails(Guardrails(floor=gbp("10.00"), min_margin=Decimal("30")), meta())
        assert e.value.field == "min_margin"

    def test_the_margin_floor_rounds_up(self):
        rails = Guardrails(cost=gbp("6.00"), min_margin=Decimal("33"))  # 6 / 0.67 = 8.955...
        assert rails.margin_floor() == gbp("8.96") and rails.automated_floor() == gbp("8.96")
        assert Guardrails(floor=gbp("9.00"), cost=gbp("6.00"), min_margin=Decimal("33")).automated_floor() == gbp("9.00")


# -- rule versions -------------------------------------------------------------------------------
class TestPricingRule:
    def test_each_revision_is_a_new_version_and_retiring_ends_it(self):
        shop = uuid4()
        r = PricingRule.define(shop, " beat ", rule("beat_lowest", percent="5"), meta())
        assert (r.name, r.rule_version) == ("beat", 1)
        assert r.revise(rule("beat_lowest", percent="3"), meta()) and r.rule_version == 2
        assert r.revise(rule("beat_lowest", percent="3"), meta()) is False  # nothing changed
        assert r.revise(rule("beat_lowest", percent="3"), meta(), name="gentle") and r.rule_version == 3
        assert r.retire(meta()) and r.retire(meta()) is False
        with pytest.raises(InvariantViolated):
            r.revise(rule("match_lowest"), meta())
        names = [type(e).__name__ for e in r.collect_events()]
        assert names == ["Defined", "Revised", "Revised", "Retired"]

    def test_a_blank_name_is_refused(self):
        with pytest.raises(InvalidValue) as e:
            PricingRule.define(uuid4(), "  ", rule("match_lowest"), meta())
        assert e.value.field == "name"

    def test_the_currency_is_fixed(self):
        r = PricingRule.define(uuid4(), "x", rule("match_lowest"), meta())
        with pytest.raises(InvalidValue):
            r.revise(Rule.define(kind="match_lowest", currency="USD"), meta())


# -- the stops -----------------------------------------------------------------------------------
class TestStops:
    def test_a_shop_stop_and_resume_are_events_with_actor_and_reason(self):
        shop = Shop.open("t1", "Hedgerow", "GBP", "etsy", meta())
        assert shop.stop_automation(meta(reason="bad feed", actor="bob"))
        assert shop.stop_automation(meta(reason="again")) is False  # already stopped
        assert shop.automation_stop.actor_id == "bob"
        assert stop_reason(shop.automation_stop, None).startswith("shop automation stopped by bob")
        assert shop.resume_automation(meta(reason="feed fixed")) and shop.automation_stop is None
        assert [type(e).__name__ for e in shop.collect_events()] == ["Opened", "AutomationStopped", "AutomationResumed"]

    def test_a_stop_needs_a_reason(self):
        shop = Shop.open("t1", "Hedgerow", "GBP", "etsy", meta())
        with pytest.raises(InvalidValue) as e:
            shop.stop_automation(meta(reason="  "))
        assert e.value.field == "reason"

    def test_the_tenant_switch_has_an_id_per_tenant_and_wins_over_the_shop(self):
        switch = AutomationSwitch(tenant_id="t1", meta=meta())
        assert switch.id == tenant_switch_id("t1") != tenant_switch_id("t2")
        switch.stop(meta(reason="incident 42", actor="ops"))
        assert stop_reason(None, switch.stopped_by).startswith("tenant-wide automation stopped by ops")
        assert stop_reason(meta(reason="shop"), switch.stopped_by).startswith("tenant-wide")
        assert switch.resume(meta(reason="resolved")) and switch.stopped_by is None
