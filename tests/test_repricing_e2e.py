"""Automated repricing end to end, through the REST API on real PostgreSQL, with the in-process
projector and repricing policy running next to the API as `etsypro serve` runs them:
observation -> automated change visible in the price board; redelivery of the same observation
(the policy replayed from an earlier position) -> no second change; stop -> no change; resume ->
changes again; rollback of a rule's changes restores the prices before them. Also: batches
grouped per listing, rule revisions and assignments as causes, inactive listings left alone,
the tenant-wide stop confined to its tenant, dry runs that write nothing, and explanations."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from uuid import UUID

import httpx
import psycopg
import pytest

import codec
from api.app import create_app
from api.server import running
from commands.engine import PricingEngine
from commands.rules import assignment_cause, observation_cause, rule_cause
from conftest import ROOT, Accounts, listing_spec
from domain.listing import Listing
from projections.projector import InBackground, Projector
from streams.repricing import RepricingPolicy

NOW = datetime.now(timezone.utc).replace(microsecond=0)


class Live:
    """One database with the API, the projector and the repricing policy running."""

    def __init__(self, url: str, engine: PricingEngine, base_url: str, policy: RepricingPolicy):
        self.url, self.engine, self.base_url, self.policy = url, engine, base_url, policy
        self.accounts = Accounts(engine)
        self.results = []  # (trigger, RepriceResult) as the policy acted

    def head(self) -> int:
        with psycopg.connect(self.url) as conn:
            return conn.execute("SELECT coalesce(max(notification_id), 0) FROM pricing_events").fetchone()[0]

    def settle(self, timeout: float = 20.0) -> None:
        """Wait until the policy and the projections have acted on everything committed so far
        (the policy's own changes included, hence the loop until the head stops moving)."""
        deadline = time.monotonic() + timeout
        while True:
            head = self.head()
            with psycopg.connect(self.url) as conn:
                policy = conn.execute("SELECT log_position FROM streams.policy_positions WHERE policy = 'repricing'"
                                      ).fetchone()
                projected = conn.execute("SELECT min(log_position) FROM analytics.projection_tracking").fetchone()[0]
            if policy and policy[0] >= head and (projected or 0) >= head and self.head() == head:
                return
            assert time.monotonic() < deadline, f"not settled: head {head}, policy {policy}, projections {projected}"
            time.sleep(0.02)

    def client(self, credentials) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers=credentials, timeout=30)


@pytest.fixture(scope="module")
def live(new_database):
    url = new_database()
    engine = PricingEngine(url, pool_size=2)
    app = create_app(engine)
    results = []
    policy = RepricingPolicy(engine.rules, url, on_result=lambda trigger, result: results.append((trigger, result)))
    app.state.projector = InBackground.projector(Projector(url, codec.to_domain_event))
    app.state.repricing = InBackground(policy, "repricing")
    with running(app) as base_url:  # the app's lifespan starts (and stops) both, as in `etsypro serve`
        world = Live(url, engine, base_url, policy)
        world.results = results
        yield world
    engine.close()


@pytest.fixture
def seller(live):
    return live.accounts.new("seller")


@pytest.fixture
def api(live, seller):
    with live.client(seller) as client:
        yield client


# `shop` is conftest's: opened through this module's `api`, the live server's.


def register(api, shop, n: int, **overrides) -> list[str]:
    response = api.post(f"/shops/{shop}/listings", json={"listings": [listing_spec(i, **overrides) for i in range(n)]})
    assert response.status_code == 201, response.text
    return [x["listing_id"] for x in response.json()["listings"]]


def define(api, shop, **overrides) -> dict:
    response = api.post(f"/shops/{shop}/rules", json={"name": "beat-lowest-5pct", "kind": "beat_lowest",
                                                      "percent": "5", **overrides})
    assert response.status_code == 201, response.text
    return response.json()


def assign(api, shop, rule_id: str, listings: list[str]) -> None:
    response = api.post(f"/shops/{shop}/rule-assignments", json={"rule_id": rule_id, "listing_ids": listings})
    assert response.status_code == 200, response.text


def observe(api, shop, *observations: tuple[str, str, str], at: datetime = NOW) -> str:
    """(listing, competitor, price) each; returns the batch id."""
    response = api.post(f"/shops/{shop}/observations", json={"observations": [
        {"listing_id": listing, "competitor": competitor, "price": price, "currency": "GBP",
         "observed_at": (at - timedelta(minutes=1)).isoformat(), "source": "etsy-api"}
        for listing, competitor, price in observations]})
    assert response.status_code == 201, response.text
    return response.json()["batch_id"]


def board(api, shop) -> dict[str, dict]:
    response = api.get(f"/shops/{shop}/analytics/prices")
    assert response.status_code == 200, response.text
    return {row["listing_id"]: row for row in response.json()["items"]}


def price_events(engine, listing: str) -> list:
    return [e for e in engine.core.events.get(UUID(listing)) if isinstance(e, Listing.PriceChanged)]


def automated_events(engine, listing: str) -> list:
    return [e for e in engine.core.events.get(UUID(listing))
            if isinstance(e, (Listing.PriceChanged, Listing.AutomatedChangeRefused)) and e.meta.source == "rule"]


@pytest.fixture
def ruled(live, api, shop):
    """Two listings at 20.00 (floor 10, ceiling 40) under 'beat the lowest by 5%'; settled."""
    listings = register(api, shop, 2)
    rule = define(api, shop)
    assign(api, shop, rule["rule_id"], listings)
    live.settle()
    return shop, listings, rule["rule_id"]


# -- the acceptance path -------------------------------------------------------------------------
def test_an_observation_reprices_the_listing_and_the_price_board_shows_it(live, api, ruled):
    shop, (a, b), rule_id = ruled
    batch = observe(api, shop, (a, "etsy:rival-1", "21.00"), (a, "etsy:rival-2", "25.00"))
    live.settle()

    row = board(api, shop)[a]
    assert (row["price"], row["price_source"], row["price_actor_id"]) == ("19.95", "rule", "repricing-policy")
    assert board(api, shop)[b]["price"] == "20.00"  # nothing observed for b
    [change] = price_events(live.engine, a)
    # The change names its cause (the batch's last observation of this listing) and rule version.
    assert change.meta.causation_id == observation_cause(UUID(batch), 3)
    assert (change.rule, change.automation.rule_version, change.meta.actor_kind) == (rule_id, 1, "policy")
    assert set(change.automation.observations) == {f"{batch}/2", f"{batch}/3"}


def test_redelivery_of_the_same_observation_makes_no_second_change(live, api, ruled):
    shop, (a, _), _ = ruled
    before_observation = live.head()
    observe(api, shop, (a, "etsy:rival-1", "21.00"))
    live.settle()
    assert [str(e.price.amount) for e in price_events(live.engine, a)] == ["19.95"]
    manual = api.put(f"/shops/{shop}/listings/{a}/price", json={"price": "22.00", "currency": "GBP"})
    assert manual.status_code == 200  # so a second change of that cause would show as a new price

    live.policy.rewind(before_observation)  # as a redelivery would: the policy acts on it again
    live.settle()
    assert [str(e.price.amount) for e in price_events(live.engine, a)] == ["19.95", "22.00"]
    assert board(api, shop)[a]["price"] == "22.00"


def test_a_replay_across_a_rule_revision_makes_no_change_either(live, api, ruled):
    """The observation's cause with the *new* rule version would be a new reservation key: the
    policy must see that the revision superseded it, rather than evaluate it again."""
    shop, (a, _), rule_id = ruled
    before_observation = live.head()
    observe(api, shop, (a, "etsy:rival-1", "21.00"))
    live.settle()
    api.put(f"/shops/{shop}/rules/{rule_id}", json={"name": "match", "kind": "match_lowest"})
    live.settle()
    api.put(f"/shops/{shop}/listings/{a}/price", json={"price": "22.00", "currency": "GBP"})
    live.settle()
    assert [str(e.price.amount) for e in price_events(live.engine, a)] == ["19.95", "21.00", "22.00"]

    live.policy.page_size = 1  # one event per page: the observation is not coalesced with the revision
    try:
        live.policy.rewind(before_observation)
        live.settle()
    finally:
        live.policy.page_size = 1000
    assert [str(e.price.amount) for e in price_events(live.engine, a)] == ["19.95", "21.00", "22.00"]


def test_a_stop_refuses_and_a_resume_lets_changes_through_again(live, api, ruled):
    shop, (a, _), _ = ruled
    stopped = api.post(f"/shops/{shop}/automation/stop", json={"reason": "supplier feed broken"})
    assert stopped.status_code == 200, stopped.text
    observe(api, shop, (a, "etsy:rival-1", "15.00"))
    live.settle()
    assert board(api, shop)[a]["price"] == "20.00"
    [refused] = automated_events(live.engine, a)
    assert isinstance(refused, Listing.AutomatedChangeRefused)
    assert "supplier feed broken" in live.engine.identity.vault.reveal(refused.reason)  # the stop's reason, sealed

    assert api.post(f"/shops/{shop}/automation/resume", json={"reason": "feed fixed"}).status_code == 200
    observe(api, shop, (a, "etsy:rival-1", "16.00"))
    live.settle()
    assert board(api, shop)[a]["price"] == "15.20"


def test_rolling_back_a_rules_changes_restores_the_prices_before_them(live, api, ruled):
    shop, (a, b), rule_id = ruled
    since = datetime.now(timezone.utc).isoformat()
    observe(api, shop, (a, "etsy:rival-1", "18.00"), (b, "etsy:rival-1", "30.00"))
    live.settle()
    assert {x: board(api, shop)[x]["price"] for x in (a, b)} == {a: "17.10", b: "28.50"}
    observe(api, shop, (a, "etsy:rival-1", "16.00"))
    live.settle()
    assert board(api, shop)[a]["price"] == "15.20"

    assert api.post(f"/shops/{shop}/automation/stop", json={"reason": "rule misfired"}).status_code == 200
    response = api.post(f"/shops/{shop}/rollbacks", json={"rule": rule_id, "since": since, "reason": "rule misfired"})
    assert response.status_code == 200, response.text
    assert {x["listing_id"]: (x["price"], x["compensates"]) for x in response.json()["compensated"]} == {
        a: ("20.00", [3, 4]), b: ("20.00", [3])}
    live.settle()
    assert {x: board(api, shop)[x]["price"] for x in (a, b)} == {a: "20.00", b: "20.00"}


# -- what triggers an evaluation, and how often -------------------------------------------------
def test_a_batch_is_evaluated_once_per_listing_with_its_last_observation_as_cause(live, api, ruled):
    shop, (a, b), _ = ruled
    live.results.clear()
    batch = observe(api, shop, (a, "etsy:rival-1", "30.00"), (b, "etsy:rival-1", "30.00"),
                    (a, "etsy:rival-2", "24.00"), (a, "etsy:rival-3", "26.00"))
    live.settle()
    causes = sorted((str(t.listing_id), t.cause) for t, _ in live.results)
    assert causes == sorted([(a, observation_cause(UUID(batch), 5)), (b, observation_cause(UUID(batch), 3))])
    assert (board(api, shop)[a]["price"], board(api, shop)[b]["price"]) == ("22.80", "28.50")


def test_a_rule_revision_and_an_assignment_reprice_with_what_is_known(live, api, ruled):
    shop, (a, b), rule_id = ruled
    observe(api, shop, (a, "etsy:rival-1", "24.00"), (b, "etsy:rival-1", "26.00"))
    live.settle()
    revised = api.put(f"/shops/{shop}/rules/{rule_id}", json={"name": "match", "kind": "match_lowest"})
    assert revised.status_code == 200, revised.text
    live.settle()
    assert (board(api, shop)[a]["price"], board(api, shop)[b]["price"]) == ("24.00", "26.00")
    assert price_events(live.engine, a)[-1].meta.causation_id == rule_cause(UUID(rule_id), 2)

    [c] = register(api, shop, 1, external_id="ext-c", sku="SKU-c")
    observe(api, shop, (c, "etsy:rival-1", "31.00"))
    live.settle()
    assert board(api, shop)[c]["price"] == "20.00"  # no rule yet: nothing happens
    assign(api, shop, rule_id, [c])
    live.settle()
    assert board(api, shop)[c]["price"] == "31.00"
    assert price_events(live.engine, c)[-1].meta.causation_id == assignment_cause(UUID(c), 2)


def test_a_listing_that_is_not_active_is_left_alone(live, api, shop):
    [draft] = register(api, shop, 1, status="draft")
    rule = define(api, shop)
    assign(api, shop, rule["rule_id"], [draft])
    observe(api, shop, (draft, "etsy:rival-1", "12.00"))
    live.settle()
    assert board(api, shop)[draft]["price"] == "20.00" and not automated_events(live.engine, draft)


def test_the_tenant_wide_stop_stops_only_its_own_tenant(live, api, seller, ruled):
    shop, (a, _), _ = ruled
    other = live.accounts.new("seller")
    with live.client(other) as theirs:
        their_shop = theirs.post("/shops", json={"name": "Elsewhere", "currency": "GBP"}).json()["shop_id"]
        [x] = register(theirs, their_shop, 1)
        assign(theirs, their_shop, define(theirs, their_shop)["rule_id"], [x])
        admin = live.accounts.new("admin", tenant_id=seller.tenant_id)
        with live.client(admin) as ops:
            stopped = ops.post("/automation/stop", json={"reason": "incident 42"})
            assert stopped.status_code == 200, stopped.text
            assert (stopped.json()["scope"], stopped.json()["tenant_id"]) == ("tenant", seller.tenant_id)
            assert api.get("/automation").json()["global"]["stopped"] is True
            assert theirs.get("/automation").json()["global"]["stopped"] is False
            assert theirs.get(f"/shops/{their_shop}/automation").json()["running"] is True

            observe(api, shop, (a, "etsy:rival-1", "15.00"))
            observe(theirs, their_shop, (x, "etsy:rival-1", "15.00"))
            live.settle()
            assert board(api, shop)[a]["price"] == "20.00"          # stopped: this tenant
            assert board(theirs, their_shop)[x]["price"] == "14.25"  # the other tenant carries on
            [refused] = automated_events(live.engine, a)
            assert refused.reason.startswith("tenant-wide automation stopped by")
            assert ops.post("/automation/resume", json={"reason": "resolved"}).status_code == 200


def test_prices_cannot_claim_to_come_from_a_rule(api, shop):
    [a] = register(api, shop, 1)
    for response in (api.put(f"/shops/{shop}/listings/{a}/price",
                             json={"price": "19.00", "currency": "GBP", "source": "rule", "rule": "r"}),
                     api.post(f"/shops/{shop}/price-changes", json={
                         "changes": [{"listing_id": a, "price": "19.00"}], "currency": "GBP", "source": "rule"})):
        assert response.status_code == 422, response.text
        assert response.json()["field"] == "source"


def test_a_rollback_can_target_one_rule_version(live, api, ruled):
    shop, (a, b), rule_id = ruled
    observe(api, shop, (a, "etsy:rival-1", "18.00"))  # v1 of the rule changes a
    live.settle()
    api.put(f"/shops/{shop}/rules/{rule_id}", json={"name": "beat 10%", "kind": "beat_lowest", "percent": "10"})
    live.settle()  # v2 changes a again (16.20), then...
    observe(api, shop, (b, "etsy:rival-1", "30.00"))  # ... v2 changes b
    live.settle()
    assert (board(api, shop)[a]["price"], board(api, shop)[b]["price"]) == ("16.20", "27.00")
    api.post(f"/shops/{shop}/automation/stop", json={"reason": "v2 too aggressive"})

    response = api.post(f"/shops/{shop}/rollbacks", json={"rule": rule_id, "rule_version": 2})
    assert response.status_code == 200, response.text
    assert {x["listing_id"]: x["price"] for x in response.json()["compensated"]} == {a: "17.10", b: "20.00"}
    missing = api.post(f"/shops/{shop}/rollbacks", json={"rule_version": 2})
    assert (missing.status_code, missing.json()["field"]) == (422, "rule_version")


# -- dry run ----------------------------------------------------------------------------------------
def count_events(live) -> int:
    return live.head()


def test_a_dry_run_shows_what_a_saved_or_draft_rule_would_do_and_writes_nothing(live, api, ruled):
    shop, (a, b), rule_id = ruled
    api.put(f"/shops/{shop}/listings/{b}/automation", json={"max_step_percent": "10"})
    api.post(f"/shops/{shop}/automation/stop", json={"reason": "previewing first"})
    observe(api, shop, (a, "etsy:rival-1", "21.00"), (b, "etsy:rival-1", "12.00"))
    live.settle()
    before = count_events(live)

    saved = api.post(f"/shops/{shop}/rules/dry-run", json={"rule_id": rule_id})
    assert saved.status_code == 200, saved.text
    body = saved.json()
    assert body["rule"]["rule_id"] == rule_id and body["automation"]["running"] is False
    by_listing = {x["listing_id"]: x for x in body["listings"]}
    assert by_listing[a]["proposed"] == "19.95" and by_listing[a]["outcome"] == "refused"
    assert "previewing first" in by_listing[a]["refusal"] and by_listing[a]["uses_this_rule"] is True
    assert any("lowest: 21.00" in r for r in by_listing[a]["reasons"])

    api.post(f"/shops/{shop}/automation/resume", json={"reason": "looks right"})
    live.settle()
    before = count_events(live)
    draft = api.post(f"/shops/{shop}/rules/dry-run", json={
        "rule": {"kind": "match_lowest", "rounding": ".99"}, "listing_ids": [b]})
    assert draft.status_code == 200, draft.text
    [x] = draft.json()["listings"]
    assert draft.json()["rule"]["draft"] is True
    # Match 12.00 -> .99 rounding would cross the floor 10? No: 11.99; the 10% step clamps it to 18.00.
    assert (x["proposed"], x["outcome"], x["price_after"]) == ("11.99", "changed", "18.00")
    assert "maximum step of 10%" in x["clamps"][0]
    assert count_events(live) == before


@pytest.mark.parametrize("body, field", [
    ({}, "rule_id"),
    ({"rule_id": "00000000-0000-0000-0000-000000000001"}, "rule_id"),
    ({"rule": {"kind": "beat_lowest"}}, "rule.amount"),
    ({"rule": {"kind": "match_lowest"}, "rule_version": 1}, "rule_version"),
    ({"rule": {"kind": "match_lowest"}, "listing_ids": ["00000000-0000-0000-0000-000000000001"]}, "listing_ids[0]"),
])
def test_a_dry_run_names_what_is_wrong(live, api, shop, body, field):
    before = count_events(live)
    response = api.post(f"/shops/{shop}/rules/dry-run", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert count_events(live) == before


def test_a_dry_run_of_an_earlier_rule_version(live, api, ruled):
    shop, (a, _), rule_id = ruled
    api.post(f"/shops/{shop}/automation/stop", json={"reason": "quiet"})
    api.put(f"/shops/{shop}/rules/{rule_id}", json={"name": "match", "kind": "match_lowest"})
    observe(api, shop, (a, "etsy:rival-1", "30.00"))
    live.settle()
    v1 = api.post(f"/shops/{shop}/rules/dry-run", json={"rule_id": rule_id, "rule_version": 1, "listing_ids": [a]})
    v2 = api.post(f"/shops/{shop}/rules/dry-run", json={"rule_id": rule_id, "listing_ids": [a]})
    assert (v1.json()["listings"][0]["proposed"], v2.json()["listings"][0]["proposed"]) == ("28.50", "30.00")
    assert v1.json()["rule"]["rule_version"] == 1
    none = api.post(f"/shops/{shop}/rules/dry-run", json={"rule_id": rule_id, "rule_version": 9})
    assert (none.status_code, none.json()["field"]) == (422, "rule_version")


def test_another_tenants_shop_and_rule_are_not_found(live, api, ruled):
    shop, (a, _), rule_id = ruled
    with live.client(live.accounts.new("seller")) as stranger:
        assert stranger.post(f"/shops/{shop}/rules/dry-run", json={"rule_id": rule_id}).status_code == 404
        assert stranger.get(f"/shops/{shop}/listings/{a}/explain").status_code == 404
        own = stranger.post("/shops", json={"name": "Mine", "currency": "GBP"}).json()["shop_id"]
        response = stranger.post(f"/shops/{own}/rules/dry-run", json={"rule_id": rule_id})
        assert (response.status_code, response.json()["field"]) == (422, "rule_id")
        assert stranger.get(f"/shops/{own}/listings/{a}/explain").status_code == 404


# -- explain ----------------------------------------------------------------------------------------
def test_explain_gives_the_chain_behind_an_automated_price(live, api, ruled):
    shop, (a, _), rule_id = ruled
    api.put(f"/shops/{shop}/listings/{a}/automation", json={"max_step_percent": "10"})
    batch = observe(api, shop, (a, "etsy:rival-1", "12.00"))
    live.settle()
    response = api.get(f"/shops/{shop}/listings/{a}/explain")
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["price"] == "18.00"
    [step] = report["chain"]
    assert (step["kind"], step["price"], step["previous"], step["source"]) == ("automated", "18.00", "20.00", "rule")
    automation = step["automation"]
    assert (automation["rule"]["rule_id"], automation["rule"]["rule_version"]) == (rule_id, 1)
    assert automation["rule"]["summary"] == "beat the lowest competitor by 5%"
    assert automation["cause"]["cause"] == observation_cause(UUID(batch), 2)
    assert automation["cause"]["observation"]["price"] == "12.00"
    [seen] = automation["observations"]
    assert (seen["competitor"], seen["price"], seen["event"]["type"]) == (
        "etsy:rival-1", "12.00", "ObservationBatch.CompetitorPriceObserved")
    assert seen["event"]["position"] > 0
    assert automation["proposed"] == "11.40" and "maximum step of 10%" in automation["clamps"][0]
    assert automation["guardrails_then"]["max_step_percent"] == "10"
    assert step["event"]["position"] > seen["event"]["position"]

    # A revision afterwards does not change what the explanation says about v1.
    api.post(f"/shops/{shop}/automation/stop", json={"reason": "hold"})
    api.put(f"/shops/{shop}/rules/{rule_id}", json={"name": "renamed", "kind": "match_lowest"})
    assert api.get(f"/shops/{shop}/listings/{a}/explain").json()["chain"][0]["automation"]["rule"]["name"] == \
        "beat-lowest-5pct"


def test_explain_follows_a_rollback_to_the_change_it_compensated_and_the_price_it_restored(live, api, ruled):
    shop, (a, _), rule_id = ruled
    observe(api, shop, (a, "etsy:rival-1", "18.00"))
    live.settle()
    api.post(f"/shops/{shop}/automation/stop", json={"reason": "undo"})
    rolled = api.post(f"/shops/{shop}/listings/{a}/rollback", json={"undo_version": 3, "reason": "too low"})
    assert rolled.status_code == 200, rolled.text
    chain = api.get(f"/shops/{shop}/listings/{a}/explain").json()["chain"]
    assert [(s["kind"], s["price"]) for s in chain] == [("rollback", "20.00"), ("registered", "20.00")]
    [compensated] = chain[0]["compensates"]
    assert (compensated["kind"], compensated["price"], compensated["compensated_by"]) == ("automated", "17.10", [4])
    assert compensated["automation"]["rule"]["rule_id"] == rule_id


def test_etsypro_explain_prints_the_chain_for_people(live, api, ruled):
    shop, (a, _), _ = ruled
    observe(api, shop, (a, "etsy:rival-1", "21.00"))
    live.settle()
    done = subprocess.run([sys.executable, "-m", "api.cli", "explain", a], cwd=ROOT, capture_output=True, text=True,
                          env={"ETSYPRO_DATABASE_URL": live.url, "PATH": "/usr/bin:/bin"}, timeout=60)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert "Price now: 19.95 GBP" in text and "changed automatically from 20.00 to 19.95" in text
    assert "rule 'beat-lowest-5pct' v1" in text and "etsy:rival-1 at 21.00 GBP" in text
    missing = subprocess.run([sys.executable, "-m", "api.cli", "explain", "00000000-0000-0000-0000-000000000001"],
                             cwd=ROOT, capture_output=True, text=True, timeout=60,
                             env={"ETSYPRO_DATABASE_URL": live.url, "PATH": "/usr/bin:/bin"})
    assert missing.returncode == 1 and "not found" in missing.stderr
