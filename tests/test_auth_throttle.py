"""One budget for every check of a secret: routes that confirm a password or a code while signed in
share the login's per-(account, client) budget and record the same LoginFailed events; and the
client's address comes from X-Forwarded-For only when the peer is a proxy the operator named."""

from __future__ import annotations

import json
import random
import uuid

import httpx
import psycopg
import pyotp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.requests import Request

from api.app import create_app
from api.auth import AuthSettings, client_address, trusted_proxies
from api.server import running
from api.settings import Settings
from domain.account import CLIENT_FREE_FAILURES, FailureReason


@pytest.fixture(scope="module")
def proxied_url(engine):
    """The API behind a local proxy (127.0.0.1 trusted): each request names its client."""
    with running(create_app(engine, auth_settings=AuthSettings(trusted_proxies=trusted_proxies("127.0.0.1")))) as url:
        yield url


def an_address() -> str:
    return f"198.18.{random.randrange(256)}.{random.randrange(1, 255)}"


def person(url: str, accounts) -> dict:
    admin = accounts.new("admin")
    username, password = f"p-{uuid.uuid4().hex[:10]}", f"a long passphrase {uuid.uuid4().hex[:8]}"
    created = httpx.post(f"{url}/accounts", headers=admin, json={"username": username, "password": password,
                                                                 "roles": [{"role": "seller", "shops": []}]})
    assert created.status_code == 201, created.text
    return {"tenant": admin.tenant_id, "username": username, "password": password,
            "account_id": created.json()["account_id"]}


def login(url: str, who: dict, client: str, password: str | None = None) -> httpx.Response:
    return httpx.post(f"{url}/auth/login", headers={"X-Forwarded-For": client}, timeout=30,
                      json={"tenant": who["tenant"], "username": who["username"], "password": password or who["password"]})


def failures(database_url: str, account_id: str) -> list[dict]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT state FROM pricing_events WHERE originator_id = %s AND topic LIKE %s"
                            " ORDER BY originator_version", [account_id, "%LoginFailed"]).fetchall()
    return [json.loads(bytes(state)) for (state,) in rows]


# route -> (field, action, wrong body, right body given the TOTP secret of a pending enrollment)
ROUTES = {
    "/auth/password": ("current_password", "change_password",
                       lambda who, _: {"current_password": "not my password", "new_password": "a brand new passphrase"},
                       lambda who, _: {"current_password": who["password"], "new_password": "a brand new passphrase"}),
    "/auth/mfa/disable": ("password", "disable_mfa",
                          lambda who, _: {"password": "not my password"},
                          lambda who, _: {"password": who["password"]}),
    "/auth/mfa/confirm": ("code", "confirm_mfa",
                          lambda who, secret: {"code": f"{(int(pyotp.TOTP(secret).now()) + 500_000) % 1_000_000:06d}"},
                          lambda who, secret: {"code": pyotp.TOTP(secret).now()}),
}


@pytest.mark.parametrize("route", list(ROUTES))
def test_routes_confirming_a_secret_share_the_logins_budget_and_events(proxied_url, accounts, database_url, route):
    field, action, wrong, right = ROUTES[route]
    who, guesser, owner = person(proxied_url, accounts), an_address(), an_address()
    token = {"Authorization": f"Bearer {login(proxied_url, who, owner).json()['access_token']}"}
    secret = httpx.post(f"{proxied_url}/auth/mfa/enroll", headers=token).json()["secret"]

    def call(client: str, body: dict) -> httpx.Response:
        return httpx.post(f"{proxied_url}{route}", headers={**token, "X-Forwarded-For": client}, json=body, timeout=30)

    for _ in range(CLIENT_FREE_FAILURES):
        refused = call(guesser, wrong(who, secret))
        assert refused.status_code == 422 and refused.json()["field"] == field, refused.text
    for body in (wrong(who, secret), right(who, secret)):  # now this client waits, right or wrong
        waiting = call(guesser, body)
        assert waiting.status_code == 429 and waiting.json()["field"] == field, waiting.text
        assert 1 <= int(waiting.headers["retry-after"]) <= 30
        assert waiting.headers["content-type"] == "application/problem+json"
    assert login(proxied_url, who, guesser).status_code == 401  # one budget: logging in from it waits too

    recorded = failures(database_url, who["account_id"])
    assert [f["action"] for f in recorded][:CLIENT_FREE_FAILURES] == [action] * CLIENT_FREE_FAILURES
    assert len({f["client"] for f in recorded[:CLIENT_FREE_FAILURES]}) == 1 and guesser not in json.dumps(recorded)
    assert [f["reason"] for f in recorded[CLIENT_FREE_FAILURES:]] == ["throttled"] * 3
    assert all(who["password"] not in json.dumps(f) for f in recorded)  # secrets never enter the log
    assert call(owner, right(who, secret)).status_code == 200  # the owner's client is not slowed


def test_failed_logins_count_against_a_signed_in_clients_password_checks(proxied_url, accounts):
    who, guesser, owner = person(proxied_url, accounts), an_address(), an_address()
    token = {"Authorization": f"Bearer {login(proxied_url, who, owner).json()['access_token']}"}
    for _ in range(CLIENT_FREE_FAILURES):
        assert login(proxied_url, who, guesser, "not the password").status_code == 401
    change = httpx.post(f"{proxied_url}/auth/password", headers={**token, "X-Forwarded-For": guesser},
                        json={"current_password": who["password"], "new_password": "a brand new passphrase"})
    assert change.status_code == 429, change.text


def test_an_accounts_throttling_state_survives_its_snapshot(engine, accounts):
    """Accounts are snapshotted every 50 events: the per-client failures and known clients must
    come back from a snapshot as they went in (datetimes inside dicts and lists included)."""
    from uuid import UUID

    from domain.account import Account

    owner = accounts.new("seller")  # logged in from "pytest": a known client
    account_id = UUID(owner.account_id)
    for i in range(60):
        engine.identity._record_failure(engine.core.repository.get(account_id), FailureReason.BAD_PASSWORD, f"198.51.100.{i % 7}")
    live = engine.core.repository.get(account_id)
    snapshot = next(iter(engine.core.snapshots.get(account_id, desc=True, limit=1)))
    restored = snapshot.mutate(None)
    assert isinstance(restored, Account) and 50 <= restored.version <= live.version
    replayed = engine.core.repository.get(account_id, version=restored.version)
    for name in ("client_failures", "known_clients", "consecutive_failures", "locked_until"):
        assert getattr(restored, name) == getattr(replayed, name), name
    assert engine.identity._client(live, "pytest")[0] in restored.known_clients


# -- which address is the client's --------------------------------------------------------------
def request_from(peer: str, forwarded: list[str], proxies: str) -> Request:
    app = type("App", (), {})()
    app.state = type("State", (), {"auth": AuthSettings(trusted_proxies=trusted_proxies(proxies))})()
    headers = [(b"x-forwarded-for", value.encode("latin-1")) for value in forwarded]
    return Request({"type": "http", "app": app, "client": (peer, 50000), "headers": headers, "method": "GET",
                    "path": "/", "query_string": b""})


@pytest.mark.parametrize("proxies, peer, forwarded, client", [
    ("", "127.0.0.1", ["1.2.3.4"], "127.0.0.1"),                          # no proxy named: nothing believed
    ("", "192.0.2.1", ["1.2.3.4, 5.6.7.8"], "192.0.2.1"),
    ("10.0.0.1", "9.9.9.9", ["1.2.3.4"], "9.9.9.9"),                      # not from the proxy
    ("10.0.0.1", "10.0.0.1", ["1.2.3.4"], "1.2.3.4"),
    ("10.0.0.1", "10.0.0.1", ["6.6.6.6, 1.2.3.4"], "1.2.3.4"),            # the client's own left part is ignored
    ("10.0.0.1", "10.0.0.1", ["6.6.6.6", "1.2.3.4"], "1.2.3.4"),          # two header lines are one list
    ("10.0.0.0/8", "10.0.0.1", ["1.2.3.4, 10.0.0.2"], "1.2.3.4"),         # two proxies in a row
    ("10.0.0.0/8", "10.0.0.1", ["10.0.0.3, 10.0.0.2"], "10.0.0.1"),       # only proxies: the peer
    ("10.0.0.1", "10.0.0.1", ["not-an-address"], "10.0.0.1"),             # garbage: the proxy's view
    ("10.0.0.1", "10.0.0.1", ["1.2.3.4, garbage"], "10.0.0.1"),
    ("10.0.0.1", "10.0.0.1", [], "10.0.0.1"),
    ("10.0.0.1", "::ffff:10.0.0.1", ["1.2.3.4"], "1.2.3.4"),              # an IPv4-mapped peer
    ("::1", "::1", ["2001:db8::5"], "2001:db8::5"),
    ("10.0.0.1, ::1", "::1", ["::ffff:1.2.3.4"], "1.2.3.4"),
])
def test_the_client_address_believes_only_named_proxies(proxies, peer, forwarded, client):
    assert client_address(request_from(peer, forwarded, proxies)) == client


Header = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=80)
Peer = st.sampled_from(["127.0.0.1", "10.0.0.1", "192.0.2.1", "::1", "2001:db8::1"])


@settings(max_examples=300, deadline=None)
@given(peer=Peer, forwarded=st.lists(Header, max_size=3))
def test_without_a_named_proxy_no_header_changes_the_address(peer, forwarded):
    assert client_address(request_from(peer, forwarded, "")) == peer
    assert client_address(request_from(peer, forwarded, "203.0.113.0/24")) == peer  # a proxy, but not this peer


@settings(max_examples=300, deadline=None)
@given(client_part=st.lists(Header, max_size=3), real=st.ip_addresses(v=4).filter(lambda ip: str(ip) != "10.0.0.1"))
def test_behind_a_named_proxy_the_client_cannot_choose_its_address(client_part, real):
    """Whatever the client sends, the proxy appends the address it saw: that one is used."""
    forwarded = ", ".join(client_part + [str(real)])
    assert client_address(request_from("10.0.0.1", [forwarded], "10.0.0.1")) == str(real)


@pytest.mark.parametrize("spec", ["not-an-address", "10.0.0.1,,x", "300.1.1.1"])
def test_a_bad_trusted_proxies_setting_fails_at_startup(spec):
    with pytest.raises(ValueError, match="ETSYPRO_TRUSTED_PROXIES"):
        trusted_proxies(spec)


def test_by_default_no_proxy_is_trusted(engine):
    assert Settings.from_env({}).trusted_proxies == "" and trusted_proxies("") == ()
    assert AuthSettings().trusted_proxies == ()


def test_addresses_of_one_ipv6_64_share_the_per_address_limit(proxied_url):
    """One host holds a whole /64: varying the low bits must not buy a fresh budget."""
    prefix = f"2001:db8:{random.randrange(1, 65535):x}:{random.randrange(1, 65535):x}"
    answers = [httpx.post(f"{proxied_url}/auth/login", headers={"X-Forwarded-For": f"{prefix}::{i + 1:x}"},
                          json={"tenant": "t", "username": "nobody-at-all", "password": "whatever it is"}).status_code
               for i in range(11)]
    assert answers == [401] * 10 + [429]
    other = httpx.post(f"{proxied_url}/auth/login", headers={"X-Forwarded-For": f"2001:db8:ffff:{random.randrange(1, 65535):x}::1"},
                       json={"tenant": "t", "username": "nobody-at-all", "password": "whatever it is"})
    assert other.status_code == 401


def test_a_client_varying_x_forwarded_for_without_a_proxy_meets_the_limit(engine):
    """Served as `etsypro serve` serves it (uvicorn's own proxy handling off: it would trust
    127.0.0.1), with no proxy named: the header is the client's to invent, and changes nothing."""
    with running(create_app(engine)) as url, httpx.Client(base_url=url, timeout=30) as http:
        answers = [http.post("/auth/login", headers={"X-Forwarded-For": an_address()},
                             json={"tenant": "t", "username": "nobody-at-all", "password": "whatever it is"}).status_code
                   for _ in range(11)]
    assert answers == [401] * 10 + [429]


# -- where the per-address counts live -----------------------------------------------------------
REDIS_URL = "redis://127.0.0.1:6379/0"


def _redis_up() -> bool:
    import redis

    try:
        return redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError:
        return False


def _logins(url: str, client: str, count: int) -> list[int]:
    return [httpx.post(f"{url}/auth/login", headers={"X-Forwarded-For": client}, timeout=30,
                       json={"tenant": "t", "username": "nobody-at-all", "password": "whatever it is"}).status_code
            for _ in range(count)]


@pytest.mark.skipif(not _redis_up(), reason="no Redis at 127.0.0.1:6379")
def test_workers_sharing_redis_share_the_per_address_limit(engine):
    """Two apps as two workers of `serve --workers 2` with ETSYPRO_REDIS_URL: a client cannot
    double its budget by landing on both."""
    settings = AuthSettings(trusted_proxies=trusted_proxies("127.0.0.1"), rate_limit_storage=REDIS_URL)
    client = an_address()
    with running(create_app(engine, auth_settings=settings)) as one, \
            running(create_app(engine, auth_settings=settings)) as two:
        answers = _logins(one, client, 5) + _logins(two, client, 5) + _logins(one, client, 1) + _logins(two, client, 1)
    assert answers == [401] * 10 + [429, 429]


def test_by_default_each_process_counts_in_its_own_memory(engine):
    settings = AuthSettings(trusted_proxies=trusted_proxies("127.0.0.1"))
    client = an_address()
    with running(create_app(engine, auth_settings=settings)) as one, \
            running(create_app(engine, auth_settings=settings)) as two:
        assert _logins(one, client, 11) == [401] * 10 + [429]
        assert _logins(two, client, 1) == [401]
    assert Settings.from_env({}).redis_url is None
    assert Settings.from_env({"ETSYPRO_REDIS_URL": REDIS_URL}).redis_url == REDIS_URL


def test_an_unreachable_rate_limit_store_lets_logins_through(engine):
    """The accounts' own throttling still holds; a down Redis must not refuse every login."""
    settings = AuthSettings(trusted_proxies=trusted_proxies("127.0.0.1"), rate_limit_storage="redis://127.0.0.1:1/0")
    with running(create_app(engine, auth_settings=settings)) as url:
        assert _logins(url, an_address(), 2) == [401, 401]
