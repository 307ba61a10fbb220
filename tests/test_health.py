"""Health probes: /health/live answers while the process runs; /health/ready fails within the lag
threshold once a projection or the repricing policy stalls while the log advances, naming it and
its lag, and recovers when it catches up; pending migrations and an unreachable database fail it
too. Both are public and tell nothing about anyone's data."""

from __future__ import annotations

import time

import httpx
import psycopg
import pytest

import codec
from api.app import create_app
from api.observability import Observability
from api.routers.health import MIGRATIONS
from api.server import running
from commands.engine import PricingEngine
from conftest import Accounts, listing_spec
from projections.projector import InBackground, Projector
from projections.registry import ALL
from read.health import readiness
from streams.repricing import RepricingPolicy

THRESHOLD_S = 2.0
STALLED = "price_board"


@pytest.fixture(scope="module")
def world(new_database):
    """A database of its own (the only writer), served with a short readiness threshold."""
    url = new_database()
    engine = PricingEngine(url, pool_size=2)
    engine.identity.use_secret_key("health-test-" + "k" * 40)
    with running(create_app(engine, observed=Observability(ready_lag_s=THRESHOLD_S))) as base:
        yield url, engine, base
    engine.close()


def ready(base: str) -> httpx.Response:
    return httpx.get(f"{base}/health/ready", timeout=30)


def test_liveness_and_readiness_are_public_and_say_nothing_else(world):
    url, _, base = world
    live = httpx.get(f"{base}/health/live")
    assert live.status_code == 200 and live.json() == {"status": "live"}
    answer = ready(base)
    assert answer.status_code == 200 and answer.json() == {"status": "ready"}


def test_a_stalled_projection_fails_readiness_within_the_threshold_and_recovers(world):
    url, engine, base = world
    seller = Accounts(engine).new("seller")
    with httpx.Client(base_url=base, headers=seller, timeout=30) as api:
        shop = api.post("/shops", json={"name": "Stall Test", "currency": "GBP"}).json()["shop_id"]
        Projector(url, codec.to_domain_event).catch_up()
        assert ready(base).status_code == 200

        others = [p for p in ALL if p.name != STALLED]  # every projection keeps following but one
        follower = InBackground(Projector(url, codec.to_domain_event, others, pause=0.05), "projector").start()
        try:
            written, before = time.monotonic(), head(url)
            api.post(f"/shops/{shop}/listings", json={"listings": [listing_spec(n) for n in range(3)]}).raise_for_status()
            reason = fails_naming(base, STALLED, written)  # the others keep up
            assert reason.endswith(f" s behind ({head(url) - before} events)"), reason
            recovers(base, Projector(url, codec.to_domain_event, [p for p in ALL if p.name == STALLED], pause=0.05))
        finally:
            follower.stop()


def test_a_stalled_repricing_policy_fails_readiness_by_name_and_recovers(world):
    url, engine, base = world
    seller = Accounts(engine).new("seller")
    projector = InBackground(Projector(url, codec.to_domain_event, pause=0.05), "projector").start()
    try:
        with httpx.Client(base_url=base, headers=seller, timeout=30) as api:
            shop = api.post("/shops", json={"name": "Policy Stall", "currency": "GBP"}).json()["shop_id"]
            policy = InBackground(RepricingPolicy(engine.rules, url, pause=0.05), "repricing").start()
            assert wait_for(lambda: ready(base).status_code == 200 and policy_position(url) == head(url), 15)
            policy.stop()  # stalled: the log moves on without it
            written = time.monotonic()
            api.post(f"/shops/{shop}/listings", json={"listings": [listing_spec(9)]}).raise_for_status()
            fails_naming(base, "repricing", written)
            recovers(base, RepricingPolicy(engine.rules, url, pause=0.05))
    finally:
        projector.stop()


def fails_naming(base: str, follower: str, written: float) -> str:
    """Readiness fails within the threshold (and some scheduling slack) of the write the follower
    missed, with one reason, naming it; the reason."""
    assert wait_for(lambda: ready(base).status_code == 503, THRESHOLD_S + 10), f"readiness never failed for {follower}"
    stalled_for = time.monotonic() - written
    assert stalled_for < THRESHOLD_S + 5, f"readiness failed only after {stalled_for:.1f} s"
    problem = ready(base)
    assert problem.headers["content-type"] == "application/problem+json"
    reasons = problem.json()["reasons"]
    assert len(reasons) == 1 and reasons[0].startswith(f"{follower} is "), reasons
    return reasons[0]


def recovers(base: str, follower) -> None:
    """Readiness is back once `follower` runs again."""
    running = InBackground(follower, "recovery").start()
    try:
        assert wait_for(lambda: ready(base).status_code == 200, 15), ready(base).text
    finally:
        running.stop()


def test_pending_migrations_and_an_unreachable_database_fail_readiness(world):
    url, _, _ = world
    assert readiness(url, MIGRATIONS, THRESHOLD_S).ready
    missing = readiness(url, MIGRATIONS + (9999,), THRESHOLD_S)
    assert not missing.ready and missing.reasons() == ["migrations not applied: 9999"]
    gone = readiness("host=127.0.0.1 port=1 user=postgres dbname=postgres", MIGRATIONS, THRESHOLD_S)
    assert not gone.ready and gone.reasons() == ["the database is unreachable"]


def head(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT coalesce(max(notification_id), 0) FROM pricing_events").fetchone()[0]


def wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def policy_position(url: str) -> int | None:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT log_position FROM streams.policy_positions WHERE policy = 'repricing'").fetchone()
    return row[0] if row else None
