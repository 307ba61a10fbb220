"""The dashboard's routes over real HTTP: the page and its assets, the board, the live stream's
tenancy and resume, and the browser session's cookie (httpOnly, SameSite=Strict, CSRF-checked)."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid

from datetime import datetime, timezone
from decimal import Decimal

import httpx
import pytest

import codec
from conftest import listing_spec
from projections.projector import Projector
from read import live

CSRF = {"X-Requested-With": "etsypro-dashboard"}


def sse_events(base_url: str, headers: dict, count: int, params: dict | None = None, timeout: float = 5.0) -> list[dict]:
    """The first `count` events (ready included) of a stream, as {"id", "event", "data"}."""
    found, block = [], {}
    with httpx.stream("GET", f"{base_url}/events", headers=headers, params=params, timeout=timeout) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if not line:
                if block:
                    found.append(block)
                    block = {}
                if len(found) >= count:
                    return found
            elif not line.startswith(":"):
                key, _, value = line.partition(": ")
                block[key] = json.loads(value) if key == "data" else value
    return found


def open_stream_then(base_url: str, headers: dict, count: int, action, params=None) -> list[dict]:
    """Open a stream, wait until it is ready, run action(), and return the events after `ready`."""
    import threading

    got, ready = [], threading.Event()

    def read():
        with httpx.stream("GET", f"{base_url}/events", headers=headers, params=params, timeout=10) as response:
            block = {}
            for line in response.iter_lines():
                if line.startswith("event: ready"):
                    ready.set()
                if not line:
                    if block.get("event") == "event":
                        got.append(block)
                    block = {}
                    if len(got) >= count:
                        return
                elif not line.startswith(":"):
                    key, _, value = line.partition(": ")
                    block[key] = json.loads(value) if key == "data" else value

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert ready.wait(10), "the stream never said ready"
    action()
    reader.join(timeout=10)
    return got


def test_the_page_and_its_assets_are_local_and_locked_down(base_url):
    page = httpx.get(base_url + "/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert "http://" not in page.text and "https://" not in page.text  # no CDN
    for asset in re.findall(r'(?:src|href)="(/ui/[^"]+)"', page.text) + ["/ui/session.js", "/ui/live.js", "/ui/chart.js"]:
        assert httpx.get(base_url + asset).status_code == 200, asset


def catch_up(database_url: str) -> None:
    """Apply every event committed so far to the views (this test server runs no projector)."""
    projector = Projector(database_url, codec.to_domain_event)
    try:
        while projector.step():
            pass
    finally:
        projector.close()


def test_the_board_lists_every_listing_with_its_last_change_and_band(base_url, api, shop, database_url):
    listings = api.post(f"/shops/{shop}/listings", json={"listings": [listing_spec(i) for i in range(3)]}).json()
    first = listings["listings"][0]["listing_id"]
    api.put(f"/shops/{shop}/listings/{first}/price", json={"price": "22.00", "currency": "GBP", "reason": "winter"})
    now = datetime.now(timezone.utc).isoformat()
    observed = api.post(f"/shops/{shop}/observations", json={"observations": [
        {"listing_id": first, "competitor": f"c{i}", "price": price, "currency": "GBP", "observed_at": now}
        for i, price in enumerate(("18.00", "21.00", "30.00"))]})
    assert observed.status_code in (200, 201), observed.text
    catch_up(database_url)
    rows = {r["listing_id"]: r for r in api.get(f"/shops/{shop}/board").json()["listings"]}
    assert len(rows) == 3
    row = rows[first]
    assert (row["price"], row["price_reason"], row["price_source"], row["floor"]) == ("22.00", "winter", "manual", "10.00")
    band = tuple(Decimal(row[k]) for k in ("band_min", "band_median", "band_max"))  # percentiles: 2 more decimals
    assert band == (Decimal("18"), Decimal("21"), Decimal("30")) and row["band_observations"] == 3
    other = rows[listings["listings"][1]["listing_id"]]
    assert other["price"] == "20.00" and other["band_observations"] is None and other["rule_id"] is None


@pytest.mark.parametrize("path", ["/shops/{shop}/board", "/dashboard/health", "/events"])
def test_the_dashboards_routes_need_credentials_and_the_tenant(base_url, shop, accounts, path):
    url = base_url + path.format(shop=shop)
    assert httpx.get(url, timeout=5).status_code == 401
    stranger = accounts.new("seller")
    if "{shop}" in path:
        assert httpx.get(url, headers=stranger, timeout=5).status_code == 404
    other = httpx.get(f"{base_url}/events", params={"shop_id": shop}, headers=stranger, timeout=5)
    assert other.status_code == 404


def test_a_stream_carries_its_tenants_events_only_and_within_a_second(base_url, api, shop, tenant, accounts):
    listing = api.post(f"/shops/{shop}/listings", json={"listings": [listing_spec()]}).json()["listings"][0]["listing_id"]
    stranger = accounts.new("seller")
    with httpx.Client(base_url=base_url, headers=stranger) as theirs:
        their_shop = theirs.post("/shops", json={"name": "Other", "currency": "GBP"}).json()["shop_id"]
        their_listing = theirs.post(f"/shops/{their_shop}/listings",
                                    json={"listings": [listing_spec()]}).json()["listings"][0]["listing_id"]
    sent = {}

    def change_both():
        httpx.put(f"{base_url}/shops/{their_shop}/listings/{their_listing}/price", headers=stranger,
                  json={"price": "30.00", "currency": "GBP"})
        sent["at"] = time.monotonic()
        api.put(f"/shops/{shop}/listings/{listing}/price", json={"price": "21.00", "currency": "GBP"})

    got = open_stream_then(base_url, tenant, 1, change_both)
    assert time.monotonic() - sent["at"] < 1.0
    assert [e["data"]["aggregate_id"] for e in got] == [listing]
    event = got[0]["data"]
    assert event["type"] == "Listing.PriceChanged" and event["data"]["price"]["amount"] == "21.00"
    assert event["shop_id"] == shop and int(got[0]["id"]) == event["position"]


def test_reconnecting_with_last_event_id_replays_what_was_missed(base_url, api, shop, tenant):
    listing = api.post(f"/shops/{shop}/listings", json={"listings": [listing_spec()]}).json()["listings"][0]["listing_id"]
    ready = sse_events(base_url, tenant, 1)[0]
    assert ready["event"] == "ready"
    for price in ("21.00", "22.00", "23.00"):  # while no stream is open
        api.put(f"/shops/{shop}/listings/{listing}/price", json={"price": price, "currency": "GBP"})
    resumed = sse_events(base_url, {**tenant, "Last-Event-ID": ready["id"]}, 4)
    assert [e["data"]["data"]["price"]["amount"] for e in resumed[:3]] == ["21.00", "22.00", "23.00"]
    assert resumed[3]["event"] == "ready" and resumed[3]["id"] == resumed[2]["id"]
    assert httpx.get(f"{base_url}/events", headers={**tenant, "Last-Event-ID": "x1"}).status_code == 422


# -- the browser session ----------------------------------------------------------------------
def test_the_refresh_token_lives_in_an_httponly_strict_cookie_and_rotates(unthrottled_url, accounts):
    person = accounts.new("seller")
    with httpx.Client(base_url=unthrottled_url) as browser:
        login = browser.post("/auth/browser/login", headers=CSRF,
                             json={"tenant": person.tenant_id, "username": person.username, "password": person.password})
        assert login.status_code == 200, login.text
        assert "refresh_token" not in login.json() and login.json()["access_token"]
        cookie = login.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/auth/browser" in cookie
        first = browser.cookies["etsypro_refresh"]
        renewed = browser.post("/auth/browser/token", headers=CSRF)
        assert renewed.status_code == 200 and browser.cookies["etsypro_refresh"] != first
        me = browser.get("/auth/me", headers={"Authorization": f"Bearer {renewed.json()['access_token']}"})
        assert me.json()["username"] == person.username
        out = browser.post("/auth/browser/logout", headers={**CSRF, "Authorization": f"Bearer {renewed.json()['access_token']}"})
        assert out.status_code == 200 and "etsypro_refresh" not in browser.cookies
        spent = httpx.post(f"{unthrottled_url}/auth/browser/token", headers=CSRF, cookies={"etsypro_refresh": first})
        assert spent.status_code == 401


@pytest.mark.parametrize("headers", [{}, {"X-Requested-With": "XMLHttpRequest"},
                                     {**CSRF, "Origin": "https://evil.example"}])
def test_browser_session_routes_refuse_cross_site_requests(unthrottled_url, accounts, headers):
    person = accounts.new("seller")
    body = {"tenant": person.tenant_id, "username": person.username, "password": person.password}
    refused = httpx.post(f"{unthrottled_url}/auth/browser/login", headers=headers, json=body)
    assert refused.status_code == 403 and "set-cookie" not in refused.headers
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert httpx.post(f"{unthrottled_url}/auth/browser/token", headers=headers,
                      cookies={"etsypro_refresh": "rt_" + uuid.uuid4().hex}).status_code == 403


def test_the_board_shows_a_listings_rule_and_the_rules_change(base_url, api, shop, database_url, engine):
    from streams.repricing import RepricingPolicy

    listing = api.post(f"/shops/{shop}/listings", json={"listings": [listing_spec()]}).json()["listings"][0]["listing_id"]
    rule = api.post(f"/shops/{shop}/rules", json={"name": "flat 25", "kind": "fixed", "amount": "25.00"})
    assert rule.status_code == 201, rule.text
    rule_id = rule.json()["rule_id"]
    assert api.put(f"/shops/{shop}/listings/{listing}/rule", json={"rule_id": rule_id}).status_code == 200
    catch_up(database_url)
    policy = RepricingPolicy(engine.rules, database_url, projector_timeout=10)
    try:
        while policy.step():
            pass
    finally:
        policy.close()
    catch_up(database_url)
    row = next(r for r in api.get(f"/shops/{shop}/board").json()["listings"] if r["listing_id"] == listing)
    assert row["rule_id"] == rule_id
    assert (row["price"], row["price_source"]) == ("25.00", "rule") and row["price_rule"]


def test_a_client_too_slow_is_dropped_rather_than_buffered_without_bound():
    async def scenario():
        subscriber = live.Subscriber("t", None, asyncio.get_running_loop(), queue=asyncio.Queue(2))
        for position in (1, 2, 3, 4):
            subscriber.offer(position, b"event")
        return subscriber.dropped, [subscriber.queue.get_nowait() for _ in range(subscriber.queue.qsize())]

    dropped, queued = asyncio.run(scenario())
    assert dropped and queued == [None]  # the end of its stream: it resumes from its Last-Event-ID


def test_a_client_that_missed_too_much_is_told_to_reload(base_url, api, shop, tenant, monkeypatch):
    monkeypatch.setattr(live, "BACKLOG_LIMIT", 2)
    listing = api.post(f"/shops/{shop}/listings", json={"listings": [listing_spec()]}).json()["listings"][0]["listing_id"]
    ready = sse_events(base_url, tenant, 1)[0]
    for price in ("21.00", "22.00", "23.00"):
        api.put(f"/shops/{shop}/listings/{listing}/price", json={"price": price, "currency": "GBP"})
    first, then = sse_events(base_url, {**tenant, "Last-Event-ID": ready["id"]}, 2)
    assert first["event"] == "reload" and then["event"] == "ready"


def test_a_batch_is_announced_once_and_account_events_never_stream(base_url, api, shop, tenant):
    listing = api.post(f"/shops/{shop}/listings", json={"listings": [listing_spec()]}).json()["listings"][0]["listing_id"]
    now = datetime.now(timezone.utc).isoformat()

    def facts_then_a_price():
        api.post(f"/shops/{shop}/observations", json={"observations": [
            {"listing_id": listing, "competitor": f"c{i}", "price": "19.00", "currency": "GBP", "observed_at": now}
            for i in range(50)]}).raise_for_status()
        api.post(f"/shops/{shop}/sales", json={"sales": [
            {"listing_id": listing, "quantity": 1, "unit_price": "20.00", "currency": "GBP", "order_id": f"o{i}",
             "transaction_id": f"t{i}", "sold_at": now} for i in range(20)]}).raise_for_status()
        httpx.post(f"{base_url}/auth/login", json={"tenant": tenant.tenant_id, "username": tenant.username,
                                                    "password": "wrong"})  # an account event
        api.put(f"/shops/{shop}/listings/{listing}/price", json={"price": "21.00", "currency": "GBP"})

    got = open_stream_then(base_url, tenant, 3, facts_then_a_price)
    assert [e["data"]["type"] for e in got] == ["ObservationBatch.Received", "SalesBatch.Received", "Listing.PriceChanged"]


def test_health_counts_the_callers_tenant_only(base_url, api, shop, tenant, accounts):
    stranger = accounts.new("seller")

    def health():
        assert api.get("/dashboard/health").json()["live_streams"] == 1  # ours, not the stranger's
        assert httpx.get(f"{base_url}/dashboard/health", headers=stranger).json()["live_streams"] == 0
        api.post(f"/shops/{shop}/listings", json={"listings": [listing_spec()]})  # an event ends the reader

    open_stream_then(base_url, tenant, 1, health)
    assert api.get("/dashboard/health").json()["last_event_at"] is not None
