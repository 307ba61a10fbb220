"""The repricing policy's mechanics on real PostgreSQL, driven step by step (no threads): pages
that would split an observation batch, facts read from events the projector has not reached
yet, waiting for a projector that is behind, `etsypro reprice` as its own process (run twice:
no second change), and how `etsypro serve` wires it (ETSYPRO_REPRICING)."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta, timezone
from uuid import UUID

import psycopg
import pytest

import codec
from api.server import build
from api.settings import Settings
from commands import models
from commands import rule_models as m
from commands.context import CommandContext
from commands.engine import PricingEngine
from commands.rules import observation_cause
from conftest import ROOT, listing_spec
from domain.listing import Listing
from domain.meta import Actor
from projections.projector import Projector
from streams.repricing import RepricingPolicy

NOW = datetime.now(timezone.utc).replace(microsecond=0)


@pytest.fixture
def world(new_database):
    """A fresh database: one shop, two listings at 20.00 under 'match the lowest'."""
    url = new_database()
    engine = PricingEngine(url, pool_size=2)
    ctx = CommandContext(actor=Actor("pytest"), tenant_id="t-policy")
    shop = UUID(engine.listings.open_shop(ctx, models.OpenShop(name="Policy", currency="GBP")).body["shop_id"])
    registered = engine.listings.register_listings(ctx, shop, models.RegisterListings.model_validate(
        {"listings": [listing_spec(0), listing_spec(1)]}))
    listings = [UUID(x["listing_id"]) for x in registered.body["listings"]]
    rule = engine.rules.define_rule(ctx, shop, m.DefineRule(name="match", kind="match_lowest"))
    engine.rules.assign_rule(ctx, shop, m.AssignRule(rule_id=UUID(rule.body["rule_id"]), listing_ids=listings))
    projector = Projector(url, codec.to_domain_event)
    yield url, engine, ctx, shop, listings, projector
    projector.close()
    engine.close()


def observe(engine, ctx, shop, *observations: tuple[UUID, str, str]) -> UUID:
    result = engine.listings.record_observations(ctx, shop, models.RecordObservations.model_validate({"observations": [
        {"listing_id": str(listing), "competitor": competitor, "price": price, "currency": "GBP",
         "observed_at": (NOW - timedelta(minutes=1)).isoformat()} for listing, competitor, price in observations]}))
    return UUID(result.body["batch_id"])


def changes(engine, listing: UUID) -> list:
    return [e for e in engine.core.events.get(listing) if isinstance(e, Listing.PriceChanged)]


def test_a_page_never_splits_an_observation_batch(world):
    url, engine, ctx, shop, (a, b), projector = world
    projector.catch_up()
    policy = RepricingPolicy(engine.rules, url, page_size=2)
    policy.catch_up()
    batch = observe(engine, ctx, shop, (a, "r1", "25.00"), (a, "r2", "19.00"), (b, "r1", "30.00"),
                    (a, "r3", "23.00"), (b, "r2", "28.00"))
    projector.catch_up()
    seen = []
    policy.on_result = lambda trigger, result: seen.append((trigger.listing_id, trigger.cause, result.price))
    policy.catch_up()
    assert sorted(seen) == sorted([(a, observation_cause(batch, 5), "19.00"), (b, observation_cause(batch, 6), "28.00")])
    policy.close()


def test_observations_the_projector_has_not_reached_come_from_the_page(world):
    url, engine, ctx, shop, (a, _), projector = world
    projector.catch_up()
    policy = RepricingPolicy(engine.rules, url)
    policy.catch_up()
    observe(engine, ctx, shop, (a, "r1", "24.00"))
    projector.catch_up()
    batch = observe(engine, ctx, shop, (a, "r2", "22.00"), (a, "r1", "26.00"))  # not projected yet
    policy.catch_up()
    [change] = changes(engine, a)
    assert str(change.price.amount) == "22.00"  # r1 moved to 26.00 (the page), r2 at 22.00 (the page)
    assert set(change.automation.observations) == {f"{batch}/2", f"{batch}/3"}
    policy.close()


def test_the_policy_waits_for_a_projector_behind_the_page_it_reads(world):
    url, engine, ctx, shop, (a, _), projector = world
    policy = RepricingPolicy(engine.rules, url, projector_timeout=0.3)
    observe(engine, ctx, shop, (a, "r1", "24.00"))
    policy.catch_up()  # the projector never ran, but this first page holds every observation there is
    acted_up_to = policy.position()
    observe(engine, ctx, shop, (a, "r1", "23.00"))
    with pytest.raises(TimeoutError, match="competitor_prices"):
        policy.catch_up()  # the facts before this page are nowhere but in the view: wait for it
    assert policy.position() == acted_up_to  # nothing recorded: the page is acted on once the projector catches up
    projector.catch_up()
    policy.catch_up()
    assert [str(c.price.amount) for c in changes(engine, a)] == ["24.00", "23.00"]
    policy.close()


def test_etsypro_reprice_acts_once_however_often_it_runs(world):
    url, engine, ctx, shop, (a, b), projector = world
    observe(engine, ctx, shop, (a, "r1", "18.00"), (b, "r1", "31.00"))
    projector.catch_up()
    env = {"ETSYPRO_DATABASE_URL": url, "PATH": "/usr/bin:/bin"}
    reports = []
    for _ in range(2):
        done = subprocess.run([sys.executable, "-m", "api.cli", "reprice", "--once"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        reports.append(done.stderr.strip().splitlines()[-1])
        with psycopg.connect(url) as conn:  # a restart from scratch: the whole log again
            conn.execute("UPDATE streams.policy_positions SET log_position = 0")
    assert reports[0].endswith("; 2 changed"), reports
    assert reports[1].endswith("; 2 duplicate"), reports  # found done: no second change
    assert [str(c.price.amount) for c in changes(engine, a)] == ["18.00"]
    assert [str(c.price.amount) for c in changes(engine, b)] == ["31.00"]


def test_serve_runs_the_policy_in_process_unless_told_not_to(new_database, tmp_path):
    url = new_database()
    env = {"ETSYPRO_DATABASE_URL": url, "ETSYPRO_DATA_DIR": str(tmp_path), "ETSYPRO_POOL_SIZE": "1"}
    engine, app = build(Settings.from_env(env), log=lambda *_: None)
    assert app.state.repricing is not None and app.state.repricing.follower.rules is engine.rules
    engine.close()
    engine, app = build(Settings.from_env({**env, "ETSYPRO_REPRICING": "off"}), log=lambda *_: None)
    assert app.state.repricing is None
    engine.close()
    with pytest.raises(ValueError, match="ETSYPRO_REPRICING"):
        Settings.from_env({"ETSYPRO_REPRICING": "sometimes"})
