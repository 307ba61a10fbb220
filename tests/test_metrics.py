"""GET /metrics: the Prometheus text parses with prometheus_client's own parser, and its counters
move by exactly the work done (requests, commands and their outcomes, retries, events per type,
429s, login refusals); the followers' lag is there for every projection; only the metrics token's
bearer or a loopback client may scrape; with `serve --workers 2` every scrape sums both workers."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from api.auth import AuthSettings, trusted_proxies
from api.metrics import FollowerCollector, MetricsAccess
from api.observability import Observability
from api.server import free_port, running
from commands.engine import PricingEngine
from conftest import ROOT, Accounts, listing_spec
from domain.account import ACCOUNT_CEILING, FailureReason
from projections.registry import ALL
from test_repricing_e2e import assign, define, observe, register


def scrape(base: str, **kwargs) -> dict[tuple, float]:
    """Every sample, by (name, sorted labels)."""
    answer = httpx.get(f"{base}/metrics", timeout=30, **kwargs)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(answer.text) for s in family.samples}


def moved(before: dict, after: dict, name: str, **labels) -> float:
    """How far the samples named `name` with (at least) these labels moved, summed."""
    def total(samples):
        return sum(v for (n, ls), v in samples.items() if n == name and labels.items() <= dict(ls).items())
    return total(after) - total(before)


def events_stored(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM pricing_events").fetchone()[0]


def test_counters_match_the_work_done(base_url, engine, database_url, tenant):
    before, stored_before = scrape(base_url), events_stored(database_url)
    with httpx.Client(base_url=base_url, headers=tenant, timeout=30) as api:
        shop = api.post("/shops", json={"name": "Metered", "currency": "GBP"}).json()["shop_id"]
        listing = api.post(f"/shops/{shop}/listings", json={"listings": [listing_spec(0)]}).json()["listings"][0]["listing_id"]
        price = f"/shops/{shop}/listings/{listing}/price"
        for _ in range(2):  # the second is answered from the idempotency record
            assert api.put(price, json={"price": "21.00", "currency": "GBP"}, headers={"Idempotency-Key": "k-1"}).is_success
        assert api.put(price, json={"price": "22.00", "currency": "GBP", "expected_version": 1}).status_code == 409
        assert api.get(f"/shops/{uuid.uuid4()}").status_code == 404
        changed_elsewhere(database_url, tenant, shop, listing)
        assert api.put(price, json={"price": "24.00", "currency": "GBP"}).status_code == 200  # lost a race: decided again
    after = scrape(base_url)

    assert moved(before, after, "etsypro_http_requests_total", route="/shops", method="POST", status="201") == 1
    assert moved(before, after, "etsypro_http_requests_total", route="/shops/{shop_id}/listings/{listing_id}/price") == 4
    assert moved(before, after, "etsypro_http_requests_total", route="/shops/{shop_id}", status="404") == 1
    assert moved(before, after, "etsypro_http_request_duration_seconds_count", route="/shops/{shop_id}/listings/{listing_id}/price") == 4
    assert moved(before, after, "etsypro_commands_total", command="set_price", outcome="done") == 2
    assert moved(before, after, "etsypro_commands_total", command="set_price", outcome="replayed") == 1
    assert moved(before, after, "etsypro_commands_total", command="set_price", outcome="conflict") == 1
    assert moved(before, after, "etsypro_commands_total", command="open_shop", outcome="done") == 1
    # Decided again: the lost race, and the 409 (first refused on remembered state, then checked on fresh).
    assert moved(before, after, "etsypro_command_retries_total") == 2
    assert moved(before, after, "etsypro_events_total", type="Listing.PriceChanged") == 2
    # Every event this server committed is counted by type, and nothing else: the other engine's is not.
    assert moved(before, after, "etsypro_events_total") == events_stored(database_url) - stored_before - 1
    for projection in ALL:
        assert ("etsypro_follower_lag_seconds", (("follower", projection.name), ("kind", "projection"))) in after
    assert after[("etsypro_log_head", ())] >= events_stored(database_url)
    assert after[("etsypro_pool_connections", (("pool", "write"), ("state", "size")))] >= 1


def changed_elsewhere(url: str, tenant, shop: str, listing: str) -> None:
    """Another process (an engine of its own) changes the price: this server's memory of the
    listing is one version behind, so its next change loses the race once and decides again."""
    other = PricingEngine(url, pool_size=1)
    try:
        other.identity.use_secret_key("another-process-" + "k" * 40)
        from commands.context import CommandContext
        from commands.models import SetPrice
        from domain.meta import Actor
        ctx = CommandContext(actor=Actor("pytest"), tenant_id=tenant.tenant_id)
        other.listings.set_price(ctx, uuid.UUID(shop), uuid.UUID(listing), SetPrice(price="23.00", currency="GBP"))
    finally:
        other.close()


def test_login_refusals_and_429s_are_counted(engine, accounts):
    app = create_app(engine, auth_settings=AuthSettings(login_per_minute=3))
    with running(app) as base:
        before = scrape(base)
        answers = [httpx.post(f"{base}/auth/login", json={"tenant": "t", "username": "nobody", "password": "wrong"}).status_code
                   for _ in range(4)]
        after = scrape(base)
    assert answers == [401, 401, 401, 429]
    assert moved(before, after, "etsypro_login_refusals_total", step="password") == 3
    assert moved(before, after, "etsypro_http_rate_limited_total", route="/auth/login") == 1
    assert moved(before, after, "etsypro_http_requests_total", route="/auth/login", status="429") == 1


def test_only_the_token_bearer_or_a_loopback_client_may_scrape(engine):
    token = "metrics-" + uuid.uuid4().hex
    with running(create_app(engine, observed=Observability(metrics_token=token))) as base:
        assert httpx.get(f"{base}/metrics").status_code == 401  # loopback is not enough once a token is set
        assert httpx.get(f"{base}/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        scrape(base, headers={"Authorization": f"Bearer {token}"})
    proxied = AuthSettings(trusted_proxies=trusted_proxies("127.0.0.1"))  # the client is who the proxy names
    with running(create_app(engine, auth_settings=proxied)) as base:
        far = httpx.get(f"{base}/metrics", headers={"X-Forwarded-For": "203.0.113.7"})
        assert far.status_code == 403 and far.headers["content-type"] == "application/problem+json"
        scrape(base, headers={"X-Forwarded-For": "127.0.0.1"})
    with running(create_app(engine, observed=Observability(metrics=False))) as base:
        assert httpx.get(f"{base}/metrics").status_code == 404


@pytest.mark.parametrize("token, client, authorization, allowed", [
    (None, "127.0.0.1", None, True), (None, "::1", None, True), (None, "127.8.9.10", None, True),
    (None, "10.0.0.1", None, False), (None, "unknown", None, False), (None, "203.0.113.7", "Bearer x", False),
    ("s3cret", "127.0.0.1", None, False), ("s3cret", "10.0.0.1", "Bearer s3cret", True),
    ("s3cret", "10.0.0.1", "Bearer s3cre", False), ("s3cret", "10.0.0.1", "s3cret", False),
])
def test_metrics_access(token, client, authorization, allowed):
    assert MetricsAccess(token).allows(client, authorization) is allowed


def test_two_workers_count_into_one_exposition(new_database):
    url, key = new_database(), "workers-test-" + "k" * 40
    port = free_port()
    env = {**os.environ, "ETSYPRO_DATABASE_URL": url, "ETSYPRO_SECRET_KEY": key, "ETSYPRO_ANALYZE_EVERY_HOURS": "0"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    server = subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--port", str(port), "--workers", "2"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(base)
        engine = PricingEngine(url, pool_size=1)
        engine.identity.use_secret_key(key)
        seller = Accounts(engine).new("seller")
        engine.close()
        before = scrape(base)
        shops = []
        for n in range(6):  # a new connection each: the parent hands them to the workers in turn
            answer = httpx.post(f"{base}/shops", headers=seller, json={"name": f"Shop {n}", "currency": "GBP"})
            assert answer.status_code == 201, answer.text
            shops.append(answer.json()["shop_id"])
        repriced_by_the_parents_policy(base, seller, shops[0])
        scrapes = [scrape(base) for _ in range(4)]  # answered by both workers
    finally:
        server.terminate()
        server.wait(30)
    for after in scrapes:
        assert moved(before, after, "etsypro_commands_total", command="open_shop", outcome="done") == 6
        assert moved(before, after, "etsypro_http_requests_total", route="/shops", method="POST") == 6
        assert moved(before, after, "etsypro_events_total", type="Shop.Opened") == 6
        assert moved(before, after, "etsypro_events_total", type="Listing.PriceChanged") == 1  # the policy's, in the parent
    pids = {dict(labels).get("pid") for (name, labels) in scrapes[-1] if name == "etsypro_pool_connections"}
    assert pids == {None}  # summed over the workers, not one series per process


def repriced_by_the_parents_policy(base: str, seller, shop: str) -> None:
    """A listing under 'beat the lowest by 5%' and a competitor at 15.00: the repricing policy (in
    serve's parent process) sets 14.25."""
    with httpx.Client(base_url=base, headers=seller, timeout=30) as api:
        [listing] = register(api, shop, 1)
        assign(api, shop, define(api, shop)["rule_id"], [listing])
        observe(api, shop, (listing, "rival", "15.00"))
        deadline = time.monotonic() + 30
        while api.get(f"/shops/{shop}/listings/{listing}").json()["price"] != "14.25":
            assert time.monotonic() < deadline, "the policy did not reprice"
            time.sleep(0.1)


def wait_until_up(base: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/health/live").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"the server at {base} did not come up")


def test_the_grafana_dashboard_asks_only_for_metrics_the_server_exposes(base_url):
    dashboard = json.loads((ROOT / "docs" / "grafana" / "etsypro.json").read_text())
    asked = {name for panel in dashboard["panels"] for target in panel.get("targets", ())
             for name in re.findall(r"\betsypro_\w+", target["expr"])}
    answer = httpx.get(f"{base_url}/metrics")
    families = list(text_string_to_metric_families(answer.text))
    exposed = {f.name for f in families} | {s.name for f in families for s in f.samples}
    exposed |= {f"{f.name}_{suffix}" for f in families for suffix in ("total", "bucket")}  # before any sample
    assert len(asked) >= 15 and not sorted(asked - exposed), sorted(asked - exposed)


def test_a_scrape_with_the_database_gone_says_so_instead_of_failing():
    families = {f.name: f for f in FollowerCollector("host=127.0.0.1 port=1 user=postgres dbname=postgres").collect()}
    assert list(families) == ["etsypro_database_up"] and families["etsypro_database_up"].samples[0].value == 0


def test_a_lockout_is_counted_once(base_url, engine, accounts):
    person = accounts.new("seller")
    before = scrape(base_url)
    account = engine.core.repository.get(uuid.UUID(person.account_id))
    for i in range(ACCOUNT_CEILING):  # strangers' failures from many addresses: the account locks once
        engine.identity._record_failure(engine.core.repository.get(account.id), FailureReason.BAD_PASSWORD,
                                        f"203.0.{i // 250}.{i % 250}")
    after = scrape(base_url)
    assert moved(before, after, "etsypro_account_lockouts_total") == 1
    assert moved(before, after, "etsypro_commands_total", command="login_failed", outcome="done") == ACCOUNT_CEILING


def test_the_kafka_paths_positions_are_read_at_scrape_time(new_database):
    url = new_database()
    with psycopg.connect(url) as conn:
        conn.execute("INSERT INTO streams.relay_positions (relay, log_position, events_published) VALUES ('main', 42, 40)")
        conn.execute("INSERT INTO streams.sink_offsets (sink, topic, partition, last_offset, records_applied)"
                     " VALUES ('etsypro-views', 'pricing.listing', 3, 17, 18)")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in FollowerCollector(url).collect() for s in family.samples}
    assert samples[("etsypro_database_up", ())] == 1
    assert samples[("etsypro_relay_position", (("relay", "main"),))] == 42
    assert samples[("etsypro_relay_events_published", (("relay", "main"),))] == 40
    sink = (("partition", "3"), ("sink", "etsypro-views"), ("topic", "pricing.listing"))
    assert samples[("etsypro_sink_offset", sink)] == 17 and samples[("etsypro_sink_records_applied", sink)] == 18
