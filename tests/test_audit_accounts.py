"""Account events (logins, failures, lockouts, roles, keys) are readable with security:read over the
whole tenant, and only with it, on every route that returns events: table-driven over the routes
and the roles. Also: /audit/verify tells a tenant its own figures only."""

from __future__ import annotations

import httpx
import orjson
import pytest

from conftest import verify_chain

ROLES = {  # name -> (role, shops: "tenant" | "shop")
    "admin": ("admin", "tenant"),
    "auditor": ("auditor", "tenant"),
    "auditor of a shop": ("auditor", "shop"),
    "seller of the tenant": ("seller", "tenant"),
    "seller of a shop": ("seller", "shop"),
    "analyst of the tenant": ("analyst", "tenant"),
    "service": ("service", "tenant"),
}
READS_ACCOUNTS = {"admin", "auditor"}


@pytest.fixture(scope="module")
def world(accounts, base_url):
    """One tenant with a shop, a colleague who has logged in, and a caller of every role."""
    owner = accounts.new("seller")
    with httpx.Client(base_url=base_url, headers=owner, timeout=30) as http:
        shop = http.post("/shops", json={"name": "Hedgerow", "currency": "GBP"}).json()["shop_id"]
    colleague = accounts.new("seller", owner.tenant_id)  # logged in: LoginSucceeded on its account
    callers = {name: accounts.new(role, owner.tenant_id, shops=None if scope == "tenant" else [shop])
               for name, (role, scope) in ROLES.items()}
    return {"shop": shop, "colleague": colleague, "callers": callers, "tenant": owner.tenant_id}


def _events(response: httpx.Response) -> list[dict]:
    if response.headers["content-type"].startswith("application/x-ndjson"):
        return [orjson.loads(line) for line in response.content.splitlines() if line]
    return response.json()["events"]


ROUTES = {
    "aggregate history": lambda w: f"/aggregates/{w['colleague'].account_id}/history",
    "audit log": lambda w: "/audit/events?limit=1000",
    "audit log of account events": lambda w: "/audit/events?limit=1000&type=Account.LoginSucceeded",
    "audit export": lambda w: "/audit/export",
    "audit export of account events": lambda w: "/audit/export?type=Account.Registered",
    "security view": lambda w: f"/security/accounts/{w['colleague'].account_id}/events",
}

# Where a caller without security:read is refused outright, and with which status (else: 200
# without account events). The account's history looks unknown (404): an account id is not a shop's.
REFUSED = {
    "aggregate history": {"auditor of a shop": 404, "seller of the tenant": 404, "seller of a shop": 404,
                          "analyst of the tenant": 403, "service": 403},
    "security view": {name: 403 for name in ROLES if name not in READS_ACCOUNTS},
}
for _route in ("audit log", "audit log of account events", "audit export", "audit export of account events"):
    REFUSED[_route] = {"auditor of a shop": 403, "seller of a shop": 403, "analyst of the tenant": 403, "service": 403}


@pytest.mark.parametrize("role", list(ROLES))
@pytest.mark.parametrize("route", list(ROUTES))
def test_account_events_need_security_read_on_every_route(world, base_url, route, role):
    response = httpx.get(base_url + ROUTES[route](world), headers=world["callers"][role], timeout=30)
    if role in READS_ACCOUNTS:
        assert response.status_code == 200, response.text
        types = {e["type"] for e in _events(response)}
        assert any(t.startswith("Account.") for t in types), types
        return
    expected = REFUSED[route].get(role, 200)
    assert response.status_code == expected, (route, role, response.text)
    if expected == 200:
        assert not [e for e in _events(response) if e["type"].startswith("Account.")]
    else:
        assert response.headers["content-type"] == "application/problem+json"
        assert world["colleague"].username not in response.text


def test_a_seller_of_the_tenant_still_reads_its_shops_history(world, base_url):
    seller = world["callers"]["seller of the tenant"]
    page = httpx.get(f"{base_url}/audit/events", headers=seller, timeout=30).json()["events"]
    assert any(e["type"].startswith("Shop.") for e in page)


def test_another_tenants_reader_of_accounts_sees_none_of_ours(world, accounts, base_url):
    stranger = accounts.new("auditor")
    colleague = world["colleague"].account_id
    assert httpx.get(f"{base_url}/aggregates/{colleague}/history", headers=stranger).status_code == 404
    theirs = httpx.get(f"{base_url}/audit/events", params={"limit": 1000}, headers=stranger).json()["events"]
    assert all(e["aggregate_id"] != colleague for e in theirs)


@pytest.mark.parametrize("role", ["admin", "auditor", "auditor of a shop", "seller of the tenant", "seller of a shop"])
def test_verify_tells_a_tenant_its_own_figures_only(world, base_url, role, engine):
    """The whole-log count is every tenant's activity: the operator's CLI shows it, a tenant is
    told how many of the events it may read were verified."""
    body = httpx.get(f"{base_url}/audit/verify", headers=world["callers"][role], timeout=60).json()
    assert set(body) == {"ok", "checked_own", "first_bad_position", "problem", "head", "last_position"}
    assert body["ok"] is True
    last = body["last_position"]
    readable = httpx.get(f"{base_url}/audit/export", params={"to": last},
                         headers=world["callers"][role], timeout=60)
    if readable.status_code == 200:  # tenant-wide readers: the count is what their export holds
        assert body["checked_own"] == len(_events(readable))
    assert 0 < body["checked_own"] < verify_chain(engine).checked
    if role not in READS_ACCOUNTS:  # account events are not counted for those who may not read them
        with_accounts = httpx.get(f"{base_url}/audit/verify", headers=world["callers"]["admin"], timeout=60).json()
        assert body["checked_own"] < with_accounts["checked_own"]


def test_verify_counts_nothing_for_a_tenant_without_events_in_range(world, base_url):
    body = httpx.get(f"{base_url}/audit/verify", params={"from_position": 2**62},
                     headers=world["callers"]["auditor"], timeout=60).json()
    assert body["ok"] is True and body["checked_own"] == 0


SHOP_ROUTES = {
    "listing": "/shops/{shop}/listings/{account}",
    "listing as of a version": "/shops/{shop}/listings/{account}?version=1",
    "explain": "/shops/{shop}/listings/{account}/explain",
}


@pytest.mark.parametrize("role", list(ROLES))
@pytest.mark.parametrize("route", list(SHOP_ROUTES))
def test_an_account_id_on_a_shops_routes_is_no_listing(world, base_url, route, role):
    """Routes that replay a listing's events load aggregates by id: an account's id there is unknown."""
    path = SHOP_ROUTES[route].format(shop=world["shop"], account=world["colleague"].account_id)
    response = httpx.get(base_url + path, headers=world["callers"][role], timeout=30)
    assert response.status_code == 404, (route, role, response.text)
    assert "Account." not in response.text and world["colleague"].username not in response.text
