"""Connecting a shop to (the fake) Etsy over real HTTP: PKCE, single-use states and codes, tokens
encrypted and rotated, a revoked grant recorded and shown, tenancy and roles on the routes."""

from __future__ import annotations

import uuid
from datetime import timedelta
from urllib.parse import parse_qs, urlparse

import httpx
import psycopg
import pytest

from domain.marketplace import EtsyConnection, GrantRefused, connection_id, s256
from streams.etsy_grant import ShopSession
from api.app import create_app
from api.server import running
from etsy_world import client_of, connect, open_shop, sample_marketplace_routes

pytest_plugins = ["etsy_world"]  # its fixtures: fake, fake_url, etsy_engine, etsy_server, etsy_api, seller...


def authorize(fake_url: str, fake, verifier: str, redirect: str = "http://127.0.0.1:1/cb") -> str:
    """A code from the fake's consent page for this verifier's challenge."""
    answer = httpx.get(f"{fake_url}/oauth/connect", params={
        "response_type": "code", "client_id": fake.config.keystring, "redirect_uri": redirect, "state": "s",
        "scope": "listings_r listings_w transactions_r shops_r", "code_challenge": s256(verifier),
        "code_challenge_method": "S256"})
    assert answer.status_code == 302, answer.text
    return parse_qs(urlparse(answer.headers["location"]).query)["code"][0]


def exchange(fake_url: str, fake, code: str, verifier: str, redirect: str = "http://127.0.0.1:1/cb") -> httpx.Response:
    return httpx.post(f"{fake_url}/v3/public/oauth/token", data={
        "grant_type": "authorization_code", "client_id": fake.config.keystring, "redirect_uri": redirect,
        "code": code, "code_verifier": verifier})


def test_the_fake_refuses_a_wrong_verifier_and_spends_the_code(fake, fake_url):
    fake.add_shop()
    code = authorize(fake_url, fake, "right-verifier-" + "x" * 40)
    wrong = exchange(fake_url, fake, code, "wrong-verifier-" + "x" * 40)
    assert (wrong.status_code, wrong.json()["error"]) == (400, "invalid_grant")
    again = exchange(fake_url, fake, code, "right-verifier-" + "x" * 40)  # single use, even after a failure
    assert again.status_code == 400
    fresh = authorize(fake_url, fake, "right-verifier-" + "y" * 40)
    assert exchange(fake_url, fake, fresh, "right-verifier-" + "y" * 40).status_code == 200


@pytest.mark.parametrize("key, status", [("fakekeystring", 403), ("fakekeystring:wrong", 403), ("", 403)])
def test_the_fake_wants_keystring_and_secret(fake, fake_url, key, status):
    answer = httpx.get(f"{fake_url}/v3/application/listings/1/inventory", headers={"x-api-key": key})
    assert answer.status_code == status


def test_connect_round_trip_stores_tokens_encrypted_and_never_in_events(etsy_api, etsy_engine, fake):
    shop = open_shop(etsy_api)
    etsy_shop, finished = connect(etsy_api, fake, shop)
    assert finished.json()["status"] == "connected" and finished.json()["etsy_shop_id"] == etsy_shop.shop_id
    grant = etsy_engine.marketplace.grant(uuid.UUID(shop))
    assert grant.access_token in fake.access and grant.refresh_token in fake.refresh
    with psycopg.connect(etsy_engine.core.conninfo) as conn:
        raw = conn.execute("SELECT access_encrypted, refresh_encrypted FROM marketplace.etsy_grants WHERE shop_id = %s",
                           [shop]).fetchone()
        logged = conn.execute("SELECT count(*) FROM pricing_events WHERE position(%s::bytea in state) > 0"
                              " OR position(%s::bytea in state) > 0",
                              [grant.access_token.encode(), grant.refresh_token.encode()]).fetchone()[0]
    assert grant.access_token.encode() not in bytes(raw[0]) and grant.refresh_token.encode() not in bytes(raw[1])
    assert logged == 0
    assert etsy_api.get(f"/shops/{shop}/marketplace/etsy").json()["connection"]["status"] == "connected"


def test_a_state_is_single_use_and_a_tampered_challenge_connects_nothing(etsy_api, etsy_engine, fake):
    shop = open_shop(etsy_api)
    etsy_shop = fake.add_shop("GBP")
    fake.consenting_user = etsy_shop.user_id
    url = etsy_api.post(f"/shops/{shop}/marketplace/etsy/connect", json={"etsy_shop_id": etsy_shop.shop_id}).json()["authorize_url"]
    tampered = url.replace("code_challenge=", "code_challenge=AAAA")  # an attacker's challenge: our verifier will not match
    callback = httpx.get(httpx.get(tampered).headers["location"])
    assert callback.status_code == 422 and callback.json()["field"] == "code", callback.text
    state = parse_qs(urlparse(url).query)["state"][0]
    again = httpx.get(f"{etsy_api.base_url}/marketplace/etsy/callback", params={"code": "x", "state": state})
    assert again.status_code == 422 and again.json()["field"] == "state"
    assert etsy_engine.marketplace.grant(uuid.UUID(shop)) is None


def test_another_sellers_etsy_shop_is_refused_at_the_callback(etsy_api, etsy_engine, fake):
    shop = open_shop(etsy_api)
    theirs, mine = fake.add_shop("GBP"), fake.add_shop("GBP")
    fake.consenting_user = mine.user_id  # I grant access, naming their shop
    started = etsy_api.post(f"/shops/{shop}/marketplace/etsy/connect", json={"etsy_shop_id": theirs.shop_id}).json()
    callback = httpx.get(httpx.get(started["authorize_url"]).headers["location"])
    assert callback.status_code == 422 and callback.json()["field"] == "etsy_shop_id", callback.text
    assert etsy_engine.marketplace.grant(uuid.UUID(shop)) is None


def test_refresh_rotates_and_the_old_refresh_token_is_refused(etsy_api, etsy_engine, etsy_server, fake, fake_url):
    shop = open_shop(etsy_api)
    connect(etsy_api, fake, shop)
    marketplace = etsy_engine.marketplace
    before = marketplace.grant(uuid.UUID(shop))
    client = client_of(etsy_server[1])
    session = ShopSession(marketplace, client, uuid.UUID(shop), margin=timedelta(hours=2))  # every call refreshes first
    inventory_call = lambda token: client.call("GET", "/v3/application/shops/1/receipts", token)  # noqa: E731
    with pytest.raises(Exception):
        session.call(inventory_call)  # not its shop (403) — but only after the refresh
    after = marketplace.grant(uuid.UUID(shop))
    assert after.generation == before.generation + 1 and after.refresh_token != before.refresh_token
    old = httpx.post(f"{fake_url}/v3/public/oauth/token", data={
        "grant_type": "refresh_token", "client_id": fake.config.keystring, "refresh_token": before.refresh_token})
    assert (old.status_code, old.json()["error"]) == (400, "invalid_grant")
    client.close()


def test_a_password_change_at_etsy_is_recorded_as_a_revoked_grant_and_pauses(etsy_api, etsy_engine, etsy_server, fake):
    shop = open_shop(etsy_api)
    etsy_shop, _ = connect(etsy_api, fake, shop)
    fake.password_changed(etsy_shop.user_id)
    marketplace = etsy_engine.marketplace
    client = client_of(etsy_server[1])
    session = ShopSession(marketplace, client, uuid.UUID(shop))
    with pytest.raises(GrantRefused):
        session.call(lambda token: client.receipts(token, etsy_shop.shop_id, 0, 0))
    client.close()
    events = list(etsy_engine.core.events.get(connection_id(uuid.UUID(shop))))
    assert [type(e).__name__ for e in events] == ["Connected", "GrantRevoked"]
    assert isinstance(events[-1], EtsyConnection.GrantRevoked) and "invalid_grant" in events[-1].answer
    status = etsy_api.get(f"/shops/{shop}/marketplace/etsy").json()
    assert status["paused"] and status["connection"]["status"] == "revoked"
    connect(etsy_api, fake, shop, etsy_shop)  # the seller connects again: it runs again
    assert etsy_api.get(f"/shops/{shop}/marketplace/etsy").json()["paused"] is False


def test_disconnect_forgets_the_tokens(etsy_api, etsy_engine, fake):
    shop = open_shop(etsy_api)
    connect(etsy_api, fake, shop)
    answer = etsy_api.post(f"/shops/{shop}/marketplace/etsy/disconnect")
    assert answer.status_code == 200 and answer.json()["status"] == "disconnected"
    grant = etsy_engine.marketplace.grant(uuid.UUID(shop))
    assert grant.status == "disconnected" and grant.access_token is None and grant.refresh_token is None


@pytest.mark.parametrize("method, path, body", [
    ("POST", "/connect", {"etsy_shop_id": 1}), ("POST", "/disconnect", None), ("GET", "", None),
    ("GET", "/queue", None), ("GET", "/drifts", None), ("POST", "/sync", None)])
def test_another_tenants_shop_is_404_and_an_analyst_may_only_read(etsy_server, etsy_accounts, etsy_api, seller, method, path, body):
    shop = open_shop(etsy_api)
    url = f"{etsy_server[0]}/shops/{shop}/marketplace/etsy{path}"
    stranger = etsy_accounts.new("seller")
    assert httpx.request(method, url, json=body, headers=stranger).status_code == 404
    analyst = etsy_accounts.new("analyst", seller.tenant_id)
    answer = httpx.request(method, url, json=body, headers=analyst)
    assert answer.status_code == (403 if method == "POST" else 200), answer.text
    assert httpx.request(method, url, json=body).status_code == 401



def test_the_routes_answer_as_the_openapi_document_says(etsy_engine, etsy_accounts):
    """Every answer of the sample the contract test can reuse matches the document (the Etsy app from
    the ETSYPRO_ETSY_* variables this time: the app has no state.etsy)."""
    from test_openapi_contract import Recorder, check_answer

    with running(create_app(etsy_engine)) as url:
        document = httpx.get(f"{url}/openapi.json").json()
        recorder = Recorder(document)
        seller = etsy_accounts.new("seller")
        with httpx.Client(base_url=url, headers=seller, timeout=60, event_hooks={"response": [recorder]}) as api:
            shop = open_shop(api)
            sample_marketplace_routes(api, shop)
    etsy = [(m, p, r) for m, p, r in recorder.answers if "/marketplace/etsy" in p]
    assert not [p for m, t, r in etsy for p in check_answer(document, m, t, r)]
    seen = {(m, t): {r.status_code for mm, tt, r in etsy if (mm, tt) == (m, t)} for m, t, _ in etsy}
    documented = {(m.upper(), p) for p, item in document["paths"].items() if "/marketplace/etsy" in p for m in item}
    assert set(seen) == documented
    assert all(any(s < 300 for s in codes) and any(s >= 400 for s in codes) for codes in seen.values()), seen
