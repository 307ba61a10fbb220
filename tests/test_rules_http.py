"""Pricing rules, assignment, automation limits and the emergency stops over real HTTP on real
PostgreSQL; and the automated change itself (`reprice_listing`, the handler the repricing policy
calls) against the real event store: idempotent per cause, refused while stopped, and never
committed after a stop that committed first."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from uuid import UUID, uuid4

import httpx
import psycopg
import pytest
from eventsourcing.persistence import IntegrityError

import codec
from api.app import create_app
from api.server import running
from commands.context import CommandContext
from commands.engine import PricingEngine
from domain.errors import NotFound
from commands.persistence import Reservation
from commands.rules import DUPLICATE, NO_RULE, POLICY_ACTOR, observation_cause, rule_cause
from conftest import Accounts, listing_spec
from domain.listing import Listing
from domain.money import Money
from domain.rules import CompetitorPrice


def assert_problem(response, status: int, field: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    if field is not None:
        assert body.get("field") == field, body
    return body


def define(api, shop, **overrides) -> dict:
    body = {"name": "beat-lowest-5pct", "kind": "beat_lowest", "percent": "5", **overrides}
    response = api.post(f"/shops/{shop}/rules", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def assign(api, shop, listing, rule_id) -> dict:
    response = api.put(f"/shops/{shop}/listings/{listing}/rule", json={"rule_id": rule_id, "reason": "test"})
    assert response.status_code == 200, response.text
    return response.json()


# -- rules over HTTP ----------------------------------------------------------------------------
class TestRules:
    def test_a_rule_is_defined_listed_and_read(self, api, shop):
        rule = define(api, shop, rounding=".99", exclude=["etsy:shop/KnockOff"])
        assert (rule["version"], rule["rule_version"], rule["retired"]) == (1, 1, False)
        assert rule["summary"] == "beat the lowest competitor by 5%, rounded to .99"
        assert (rule["currency"], rule["percent"], rule["exclude"], rule["max_age_minutes"]) == ("GBP", "5", ["etsy:shop/KnockOff"], 1440)
        assert api.get(f"/shops/{shop}/rules").json()["rules"] == [rule]
        assert api.get(f"/shops/{shop}/rules/{rule['rule_id']}").json() == rule

    def test_a_revision_appends_a_version_and_the_old_one_stays_readable(self, api, shop):
        rule = define(api, shop)
        url = f"/shops/{shop}/rules/{rule['rule_id']}"
        revised = api.put(url, json={"name": "beat-lowest-3pct", "kind": "beat_lowest", "percent": "3",
                                     "expected_version": 1, "reason": "gentler"})
        assert revised.status_code == 200, revised.text
        assert (revised.json()["rule_version"], revised.json()["percent"], revised.json()["changed"]) == (2, "3", True)
        assert api.get(url, params={"version": 1}).json()["percent"] == "5"
        assert api.get(url).json()["name"] == "beat-lowest-3pct"
        stale = api.put(url, json={"name": "x", "kind": "match_lowest", "expected_version": 1})
        assert assert_problem(stale, 409, "expected_version")["current_version"] == 2
        assert_problem(api.get(url, params={"version": 9}), 404, "version")

    def test_the_same_body_again_appends_nothing(self, api, shop):
        rule = define(api, shop)
        again = api.put(f"/shops/{shop}/rules/{rule['rule_id']}",
                        json={"name": "beat-lowest-5pct", "kind": "beat_lowest", "percent": "5"})
        assert (again.json()["changed"], again.json()["version"]) == (False, 1)

    def test_a_retired_rule_cannot_be_revised_or_assigned(self, api, shop, listing):
        rule = define(api, shop)
        retired = api.post(f"/shops/{shop}/rules/{rule['rule_id']}/retire", json={"reason": "season over"})
        assert retired.status_code == 200 and retired.json()["retired"] is True
        assert_problem(api.put(f"/shops/{shop}/rules/{rule['rule_id']}", json={"name": "x", "kind": "match_lowest"}),
                       422, "rule_id")
        assert_problem(api.put(f"/shops/{shop}/listings/{listing}/rule", json={"rule_id": rule["rule_id"]}),
                       422, "rule_id")

    @pytest.mark.parametrize("body, field", [
        ({"kind": "undercut"}, "kind"),
        ({"kind": "beat_lowest"}, "amount"),
        ({"kind": "beat_lowest", "percent": "5", "amount": "1.00"}, "percent"),
        ({"kind": "beat_lowest", "percent": "150"}, "percent"),
        ({"kind": "beat_lowest", "amount": "0.001"}, "amount"),
        ({"kind": "beat_lowest", "amount": "abc"}, "amount"),
        ({"kind": "offset_from_average", "amount": "1.00"}, "direction"),
        ({"kind": "fixed", "amount": "19.99", "currency": "USD"}, "currency"),
        ({"kind": "match_lowest", "include": ["a", ""]}, "include[1]"),
        ({"kind": "match_lowest", "include": ["a"], "exclude": ["a"]}, "exclude"),
        ({"kind": "match_lowest", "max_age_minutes": 0}, "max_age_minutes"),
        ({"kind": "match_lowest", "rounding": ".49"}, "rounding"),
        ({"kind": "match_lowest", "name": "   "}, "name"),
        ({"kind": "match_lowest", "surprise": 1}, "surprise"),
    ])
    def test_bad_definitions_are_422_naming_the_field(self, api, shop, body, field, count_events):
        before = count_events()
        assert_problem(api.post(f"/shops/{shop}/rules", json={"name": "r", **body}), 422, field)
        assert count_events() == before

    def test_another_tenants_rules_do_not_exist(self, api, shop, accounts, base_url):
        rule = define(api, shop)
        with httpx.Client(base_url=base_url, headers=accounts.new("seller"), timeout=30) as stranger:
            assert_problem(stranger.get(f"/shops/{shop}/rules"), 404)
            assert_problem(stranger.get(f"/shops/{shop}/rules/{rule['rule_id']}"), 404)
            own = stranger.post("/shops", json={"name": "Other", "currency": "GBP"}).json()["shop_id"]
            assert_problem(stranger.get(f"/shops/{own}/rules/{rule['rule_id']}"), 404)
            [theirs] = stranger.post(f"/shops/{own}/listings", json={"listings": [listing_spec()]}).json()["listings"]
            response = stranger.put(f"/shops/{own}/listings/{theirs['listing_id']}/rule", json={"rule_id": rule["rule_id"]})
            assert_problem(response, 422, "rule_id")


# -- assignment ---------------------------------------------------------------------------------
class TestAssignment:
    def test_assign_and_unassign_one_listing(self, api, shop, listing, engine):
        rule = define(api, shop)
        assert assign(api, shop, listing, rule["rule_id"])["listings"][0]["changed"] is True
        assert assign(api, shop, listing, rule["rule_id"])["listings"][0]["changed"] is False
        assert api.get(f"/shops/{shop}/listings/{listing}/automation").json()["rule_id"] == rule["rule_id"]
        removed = api.delete(f"/shops/{shop}/listings/{listing}/rule", params={"reason": "manual season"})
        assert removed.status_code == 200 and removed.json()["rule_id"] is None
        assert api.get(f"/shops/{shop}/listings/{listing}/automation").json()["rule_id"] is None
        names = [type(e).__name__ for e in engine.core.events.get(UUID(listing))]
        assert names == ["Registered", "RuleAssigned", "RuleUnassigned"]

    def test_many_listings_at_once_all_or_nothing(self, api, shop, count_events):
        rule = define(api, shop)
        ids = [x["listing_id"] for x in api.post(f"/shops/{shop}/listings", json={
            "listings": [listing_spec(i) for i in range(3)]}).json()["listings"]]
        before = count_events()
        bad = api.post(f"/shops/{shop}/rule-assignments", json={"rule_id": rule["rule_id"], "listing_ids": [ids[0], str(uuid4())]})
        assert_problem(bad, 422, "listing_ids[1]")
        dup = api.post(f"/shops/{shop}/rule-assignments", json={"rule_id": rule["rule_id"], "listing_ids": [ids[0], ids[0]]})
        assert_problem(dup, 422, "listing_ids[1]")
        unknown_rule = api.post(f"/shops/{shop}/rule-assignments", json={"rule_id": str(uuid4()), "listing_ids": ids})
        assert_problem(unknown_rule, 422, "rule_id")
        assert count_events() == before
        done = api.post(f"/shops/{shop}/rule-assignments", json={"rule_id": rule["rule_id"], "listing_ids": ids})
        assert done.status_code == 200 and [x["changed"] for x in done.json()["listings"]] == [True] * 3
        cleared = api.post(f"/shops/{shop}/rule-assignments", json={"rule_id": None, "listing_ids": ids})
        assert [x["changed"] for x in cleared.json()["listings"]] == [True] * 3


# -- automation limits --------------------------------------------------------------------------
class TestAutomationLimits:
    def test_limits_are_set_shown_and_kept_by_a_guardrails_change(self, api, shop, listing):
        url = f"/shops/{shop}/listings/{listing}/automation"
        response = api.put(url, json={"min_margin": "50", "max_step_percent": "10", "max_daily_changes": 6,
                                      "cooldown_minutes": 30})
        assert response.status_code == 200, response.text
        state = response.json()
        assert (state["min_margin"], state["max_step_percent"], state["max_daily_changes"], state["cooldown_minutes"],
                state["automated_floor"], state["changed"]) == ("50", "10", 6, 30, "12.00", True)
        rails = api.put(f"/shops/{shop}/listings/{listing}/guardrails",
                        json={"floor": "11.00", "ceiling": "35.00", "cost": "6.00", "currency": "GBP"})
        assert rails.status_code == 200, rails.text
        after = api.get(url).json()
        assert (after["floor"], after["ceiling"], after["max_step_percent"], after["cooldown_minutes"]) == ("11.00", "35.00", "10", 30)

    @pytest.mark.parametrize("body, field", [
        ({"max_step_percent": "0"}, "max_step_percent"),
        ({"max_step_percent": "250"}, "max_step_percent"),
        ({"min_margin": "100"}, "min_margin"),
        ({"min_margin": "90"}, "min_margin"),          # 6.00 at a 90% margin is 60.00: above the ceiling
        ({"max_daily_changes": 0}, "max_daily_changes"),
        ({"cooldown_minutes": -5}, "cooldown_minutes"),
        ({"cooldown_minutes": "soon"}, "cooldown_minutes"),
    ])
    def test_bad_limits_are_422_naming_the_field(self, api, shop, listing, body, field):
        assert_problem(api.put(f"/shops/{shop}/listings/{listing}/automation", json=body), 422, field)

    def test_a_margin_needs_a_cost(self, api, shop):
        [plain] = api.post(f"/shops/{shop}/listings", json={"listings": [listing_spec(7, cost=None)]}).json()["listings"]
        response = api.put(f"/shops/{shop}/listings/{plain['listing_id']}/automation", json={"min_margin": "30"})
        assert_problem(response, 422, "min_margin")


# -- the shop's emergency stop ------------------------------------------------------------------
class TestShopStop:
    def test_stop_and_resume_are_recorded_with_actor_and_reason(self, api, shop, engine, tenant):
        url = f"/shops/{shop}/automation"
        assert api.get(url).json()["running"] is True
        stopped = api.post(url + "/stop", json={"reason": "supplier price error"})
        assert stopped.status_code == 200, stopped.text
        body = stopped.json()
        assert (body["running"], body["changed"], body["shop"]["by"], body["shop"]["reason"]) == (
            False, True, tenant.account_id, "supplier price error")
        assert api.post(url + "/stop", json={"reason": "again"}).json()["changed"] is False
        resumed = api.post(url + "/resume", json={"reason": "fixed"})
        assert resumed.json()["running"] is True and resumed.json()["shop"] == {"stopped": False}
        shop_events = [type(e).__name__ for e in engine.core.events.get(UUID(shop))]
        assert shop_events == ["Opened", "AutomationStopped", "AutomationResumed"]

    @pytest.mark.parametrize("body", [{}, {"reason": ""}, {"reason": "   "}])
    def test_a_stop_needs_a_reason(self, api, shop, body):
        assert_problem(api.post(f"/shops/{shop}/automation/stop", json=body), 422, "reason")

    def test_a_seller_may_not_stop_everyone(self, api):
        assert_problem(api.post("/automation/stop", json={"reason": "why not"}), 403)
        assert api.get("/automation").status_code == 200


# -- the automated change (reprice_listing) on the real event store ------------------------------
NOW = datetime.now(timezone.utc).replace(microsecond=0)


def market(*prices: str, at: datetime = NOW) -> list[CompetitorPrice]:
    return [CompetitorPrice(f"obs:{i}/{p}", f"etsy:competitor-{i}", Money.of(p, "GBP"), at - timedelta(minutes=1))
            for i, p in enumerate(prices)]


@pytest.fixture
def automated(api, shop, listing, engine):
    """A listing (price 20.00, floor 10, ceiling 40) under 'beat the lowest by 5%', and a policy context."""
    rule = define(api, shop)
    assign(api, shop, listing, rule["rule_id"])
    ctx = engine.rules.automation_context(UUID(shop), cause="setup")
    return UUID(shop), UUID(listing), UUID(rule["rule_id"]), ctx


def reprice(engine, automated, cause: str, *prices: str, now: datetime = NOW):
    shop, listing, _, ctx = automated
    return engine.rules.reprice_listing(ctx, shop, listing, market(*prices, at=now), cause, now=now)


class TestReprice:
    def test_a_change_names_its_rule_version_and_cause(self, engine, automated):
        shop, listing, rule_id, _ = automated
        cause = observation_cause(uuid4(), 3)
        result = reprice(engine, automated, cause, "21.00", "25.00")
        assert (result.outcome, result.price, result.previous, result.rule_version) == ("changed", "19.95", "20.00", 1)
        change = engine.core.repository.get(listing).version
        event = list(engine.core.events.get(listing))[-1]
        assert isinstance(event, Listing.PriceChanged) and event.originator_version == change
        assert (event.rule, event.meta.source, event.meta.causation_id, event.meta.actor_kind) == (
            str(rule_id), "rule", cause, "policy")
        assert (event.automation.rule_version, event.automation.cause, event.automation.proposed) == (
            1, cause, Money.of("19.95", "GBP"))
        assert set(event.automation.observations) == {"obs:0/21.00", "obs:1/25.00"}

    def test_redelivery_of_the_same_cause_changes_nothing(self, engine, automated, count_events):
        cause = observation_cause(uuid4(), 1)
        assert reprice(engine, automated, cause, "21.00").outcome == "changed"
        before = count_events()
        again = reprice(engine, automated, cause, "15.00")  # even with other data, the cause is spent
        assert again.outcome == DUPLICATE and again.price == "19.95"
        assert count_events() == before

    def test_a_cause_acts_once_even_under_a_new_rule_version_which_acts_as_its_own_cause(self, api, engine,
                                                                                          automated):
        shop, listing, rule_id, _ = automated
        cause = observation_cause(uuid4(), 1)
        assert reprice(engine, automated, cause, "21.00").price == "19.95"
        api.put(f"/shops/{shop}/rules/{rule_id}", json={"name": "match", "kind": "match_lowest"})
        assert reprice(engine, automated, cause, "21.00").outcome == DUPLICATE
        result = reprice(engine, automated, rule_cause(rule_id, 2), "21.00")
        assert (result.outcome, result.price, result.rule_version) == ("changed", "21.00", 2)

    def test_a_stopped_shop_refuses_and_records_why_while_manual_changes_go_on(self, api, engine, automated):
        shop, listing, _, _ = automated
        api.post(f"/shops/{shop}/automation/stop", json={"reason": "holiday sale"})
        refused = reprice(engine, automated, "observation:a/1", "15.00")
        assert refused.outcome == "refused" and "holiday sale" in engine.identity.vault.reveal(refused.refusal)
        assert refused.price == "20.00"
        event = list(engine.core.events.get(listing))[-1]
        assert isinstance(event, Listing.AutomatedChangeRefused) and event.automation.cause == "observation:a/1"
        assert reprice(engine, automated, "observation:a/1", "15.00").outcome == DUPLICATE
        manual = api.put(f"/shops/{shop}/listings/{listing}/price", json={"price": "18.00", "currency": "GBP"})
        assert manual.status_code == 200 and manual.json()["price"] == "18.00"
        api.post(f"/shops/{shop}/automation/resume", json={"reason": "sale over"})
        assert reprice(engine, automated, "observation:a/2", "15.00").price == "14.25"

    def test_guardrails_clamp_and_the_cap_refuses(self, api, engine, automated):
        shop, listing, _, _ = automated
        api.put(f"/shops/{shop}/listings/{listing}/automation", json={"max_step_percent": "10", "max_daily_changes": 1})
        first = reprice(engine, automated, "observation:b/1", "12.00")
        assert (first.outcome, first.price, first.proposed) == ("changed", "18.00", "11.40")
        assert "maximum step of 10%" in first.clamps[0]
        second = reprice(engine, automated, "observation:b/2", "12.00", now=NOW + timedelta(hours=1))
        assert second.outcome == "refused" and "daily cap of 1" in second.refusal

    def test_no_rule_or_a_retired_rule_does_nothing(self, api, engine, automated, count_events):
        shop, listing, rule_id, _ = automated
        api.post(f"/shops/{shop}/rules/{rule_id}/retire", json={})
        before = count_events()
        assert reprice(engine, automated, "observation:c/1", "12.00").outcome == NO_RULE
        api.delete(f"/shops/{shop}/listings/{listing}/rule")
        assert reprice(engine, automated, "observation:c/2", "12.00").outcome == NO_RULE
        assert count_events() == before + 1  # only the unassignment

    def test_another_tenants_context_is_refused(self, engine, automated):
        shop, listing, _, _ = automated
        stranger = CommandContext(actor=POLICY_ACTOR, tenant_id="someone-else")
        with pytest.raises(NotFound):
            engine.rules.reprice_listing(stranger, shop, listing, market("12.00"), "observation:d/1")

    def test_the_commit_refuses_when_an_aggregate_read_moved_on(self, engine, automated, api, count_events):
        """The mechanism behind 'a stop that commits first wins': the save names the versions it
        read; a newer event on any of them fails the whole transaction."""
        shop, listing_id, _, _ = automated
        listing = engine.core.repository.get(listing_id)
        shop_version = engine.core.repository.get(shop).version
        api.post(f"/shops/{shop}/automation/stop", json={"reason": "moved on"})
        listing.change_price(Money.of("21.00", "GBP"), engine.rules.automation_context(shop, "x").meta(shop, "experiment"))  # any pending change will do
        before = count_events()
        with pytest.raises(IntegrityError):
            engine.core.save(listing, unchanged=[(shop, shop_version)],
                        reservations=[Reservation(shop, "reprice_cause", f"probe-{uuid4()}", listing_id)])
        assert count_events() == before

    def test_state_survives_snapshots(self, api, engine, automated):
        """More than 50 events: the listing is loaded from a snapshot that carries the new state."""
        shop, listing, rule_id, _ = automated
        api.put(f"/shops/{shop}/listings/{listing}/automation", json={"max_daily_changes": 60, "cooldown_minutes": 1})
        for i in range(55):
            prices = ("21.00",) if i % 2 else ("25.00",)
            reprice(engine, automated, f"observation:e/{i}", *prices, now=NOW + timedelta(minutes=i))
        snapshot = list(engine.core.snapshots.get(listing, desc=True, limit=1))
        assert snapshot, "expected a snapshot after 50 events"
        loaded = engine.core.repository.get(listing)
        assert loaded.rule_id == rule_id and loaded.last_automated_at == NOW + timedelta(minutes=54)
        assert len(loaded.automated_at) == 55 and loaded.guardrails.cooldown_minutes == 1
        late = reprice(engine, automated, "observation:e/x", "30.00", now=NOW + timedelta(minutes=54, seconds=30))
        assert late.outcome == "refused" and "cooling down" in late.refusal


def test_an_old_price_change_without_automation_is_upcast(engine, api, shop, listing):
    """Events stored before automation existed (PriceChanged v1) read as v2 with automation None."""
    api.put(f"/shops/{shop}/listings/{listing}/price", json={"price": "22.00", "currency": "GBP"})
    stored = engine.core.recorder.select_events(UUID(listing), desc=True, limit=1)[0]
    state = engine.core.mapper.transcoder.decode(stored.state)
    assert state.pop("class_version") == 2 and state.pop("automation") is None
    old = type(stored)(stored.originator_id, stored.originator_version, stored.topic,
                       engine.core.mapper.transcoder.encode(state))
    event = codec.to_domain_event(old)
    assert event.automation is None and event.price == Money.of("22.00", "GBP")


# -- a stop that commits first always wins --------------------------------------------------------
def test_no_automated_change_commits_after_the_stop(api, shop, engine, database_url):
    """One thread reprices as fast as it can (every call wants a change); the main thread stops
    the shop. In commit order (notification ids), no automated change may follow the stop."""
    ids = [x["listing_id"] for x in api.post(f"/shops/{shop}/listings", json={
        "listings": [listing_spec(i) for i in range(4)]}).json()["listings"]]
    rule = define(api, shop, kind="match_lowest", percent=None)
    api.post(f"/shops/{shop}/rule-assignments", json={"rule_id": rule["rule_id"], "listing_ids": ids})
    ctx = engine.rules.automation_context(UUID(shop), cause="race")
    done, outcomes = threading.Event(), []

    def hammer():
        i = 0
        while not done.is_set():
            i += 1
            price = "21.00" if i % 2 else "23.00"
            for listing in ids:
                outcomes.append(engine.rules.reprice_listing(ctx, UUID(shop), UUID(listing), market(price),
                                                       f"observation:race/{i}").outcome)

    worker = threading.Thread(target=hammer)
    worker.start()
    while outcomes.count("changed") < 20:
        time.sleep(0.005)
    stop = api.post(f"/shops/{shop}/automation/stop", json={"reason": "race"})
    assert stop.status_code == 200
    deadline = time.monotonic() + 5
    while outcomes.count("refused") < 8 and time.monotonic() < deadline:
        time.sleep(0.01)
    done.set()
    worker.join()
    with psycopg.connect(database_url) as conn:
        stopped_at = conn.execute("SELECT notification_id FROM pricing_events WHERE originator_id = %s"
                                  " ORDER BY originator_version DESC LIMIT 1", [UUID(shop)]).fetchone()[0]
    later = [e for e in engine.core.recorder.select_notifications(stopped_at + 1, 100_000)
             if e.originator_id in {UUID(x) for x in ids}]
    decoded = [codec.to_domain_event(e) for e in later]
    assert not [e for e in decoded if isinstance(e, Listing.PriceChanged)], "an automated change committed after the stop"
    assert any(isinstance(e, Listing.AutomatedChangeRefused) for e in decoded)


# -- the tenant-wide ("global") stop: the tenant's admins only; it stops that tenant's shops -------
@pytest.fixture
def separate(new_database):
    engine = PricingEngine(new_database(), pool_size=2)
    with running(create_app(engine)) as url:
        yield engine, url, Accounts(engine)
    engine.close()


def test_an_admin_stops_every_shop_of_the_tenant_and_resumes(separate):
    engine, url, accounts = separate
    seller = accounts.new("seller")
    admin = accounts.new("admin", tenant_id=seller.tenant_id)
    with httpx.Client(base_url=url, headers=seller, timeout=30) as api, \
         httpx.Client(base_url=url, headers=admin, timeout=30) as ops:
        shop = api.post("/shops", json={"name": "Hedgerow", "currency": "GBP"}).json()["shop_id"]
        [listing] = [x["listing_id"] for x in api.post(f"/shops/{shop}/listings", json={
            "listings": [listing_spec()]}).json()["listings"]]
        rule = define(api, shop)
        assign(api, shop, listing, rule["rule_id"])
        assert_problem(api.post("/automation/stop", json={"reason": "no"}), 403)
        stopped = ops.post("/automation/stop", json={"reason": "incident 42"})
        assert stopped.status_code == 200, stopped.text
        assert stopped.json()["global"]["reason"] == "incident 42"
        assert api.get("/automation").json()["global"]["stopped"] is True
        assert api.get(f"/shops/{shop}/automation").json()["running"] is False
        ctx = engine.rules.automation_context(UUID(shop), cause="global")
        refused = engine.rules.reprice_listing(ctx, UUID(shop), UUID(listing), market("15.00"), "observation:g/1")
        assert refused.outcome == "refused" and refused.refusal.startswith("tenant-wide automation stopped")
        assert ops.post("/automation/resume", json={"reason": "resolved"}).json()["global"] == {"stopped": False}
        changed = engine.rules.reprice_listing(ctx, UUID(shop), UUID(listing), market("15.00"), "observation:g/2")
        assert changed.outcome == "changed" and changed.price == "14.25"
