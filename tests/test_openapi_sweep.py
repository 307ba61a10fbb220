"""Every route in the OpenAPI document, walked with no credentials, bad credentials, another
tenant's credentials and credentials without any role: none may answer anything but 401, 403
or 404. A route added without authorization, or whose handler forgets the tenant, fails here.

Also: roles over every write route (auditors and analysts never write; a seller of shop A
gets 404 on every route of shop B), and API key scopes.
"""

from __future__ import annotations

import re
import uuid

import httpx
import pytest

from conftest import listing_spec

# Routes anyone may call: they are how credentials are obtained.
PUBLIC = {("POST", "/auth/login"), ("POST", "/auth/login/mfa"), ("POST", "/auth/token")}
# Routes about the caller's own account: any valid credentials may use them.
OWN_ACCOUNT = re.compile(r"^/auth/")
WRITE = {"POST", "PUT", "PATCH", "DELETE"}


@pytest.fixture(scope="module")
def routes(base_url) -> list[tuple[str, str]]:
    document = httpx.get(f"{base_url}/openapi.json").json()
    found = [(method.upper(), path) for path, item in document["paths"].items() for method in item
             if method in ("get", "post", "put", "patch", "delete")]
    assert len(found) >= 25  # the document really lists the API
    return found


@pytest.fixture(scope="module")
def victim(accounts, base_url):
    """Tenant A: a seller with a shop, a listing and a service account."""
    seller = accounts.new("seller")
    with httpx.Client(base_url=base_url, headers=seller) as api:
        shop = api.post("/shops", json={"name": "Victim", "currency": "GBP"}).json()["shop_id"]
        listing = api.post(f"/shops/{shop}/listings", json={"listings": [listing_spec()]}).json()["listings"][0]["listing_id"]
    service = accounts.new("service", seller.tenant_id)
    return {"seller": seller, "shop": shop, "listing": listing, "service": service}


def fill(path: str, ids: dict) -> str:
    """A concrete URL: known parameters from `ids`, any other one a random UUID."""
    return re.sub(r"\{(\w+)\}", lambda m: ids.get(m[1], str(uuid.uuid4())), path)


def victim_ids(victim) -> dict:
    return {"shop_id": victim["shop"], "listing_id": victim["listing"], "aggregate_id": victim["listing"],
            "account_id": victim["service"].account_id, "key_id": str(uuid.uuid4()), "role": "seller"}


def call(base_url, method: str, url: str, headers: dict) -> httpx.Response:
    body = {} if method in WRITE and method != "DELETE" else None
    return httpx.request(method, f"{base_url}{url}", headers=headers, json=body, timeout=30)


def protected(routes):
    return [(m, p) for m, p in routes if (m, p) not in PUBLIC]


def test_every_route_needs_credentials(base_url, routes, victim):
    ids = victim_ids(victim)
    for method, path in protected(routes):
        for headers in ({}, {"Authorization": "Bearer nonsense"}, {"Authorization": "Bearer ek_nonsense"},
                        {"X-Tenant-Id": victim["seller"].tenant_id, "X-Actor-Id": "someone"}):
            response = call(base_url, method, fill(path, ids), headers)
            assert response.status_code == 401, (method, path, headers, response.status_code, response.text)
            assert response.headers["www-authenticate"].startswith("Bearer")


def test_the_document_says_which_routes_take_a_bearer_credential(base_url):
    """Client generators read this to send the Authorization header: every route but the public ones."""
    document = httpx.get(f"{base_url}/openapi.json").json()
    assert document["components"]["securitySchemes"]["Bearer"] == {
        "type": "http", "scheme": "bearer", "description": "An access token from POST /auth/login, or an API key (ek_...)"}
    secured = {(method.upper(), path): operation.get("security") for path, item in document["paths"].items()
               for method, operation in item.items()}
    assert {route for route, security in secured.items() if security != [{"Bearer": []}]} == PUBLIC


def test_another_tenants_seller_sees_nothing_of_ours(base_url, routes, victim, tenant):
    """`tenant` is a seller of another tenant, with a shop of its own: a real other customer."""
    httpx.post(f"{base_url}/shops", headers=tenant, json={"name": "Other", "currency": "GBP"})
    ids = victim_ids(victim)
    for method, path in protected(routes):
        if not re.search(r"\{\w+\}", path) or OWN_ACCOUNT.match(path):
            continue  # no resource of ours named in the URL (see the next test)
        response = call(base_url, method, fill(path, ids), tenant)
        assert response.status_code in (403, 404), (method, path, response.status_code, response.text)


def test_an_account_without_roles_may_do_nothing_but_look_at_itself(base_url, routes, victim, accounts, engine):
    from commands.context import CommandContext
    from domain.meta import Actor

    nobody = accounts.new("seller")
    engine.revoke_role(CommandContext(actor=Actor("pytest"), tenant_id=nobody.tenant_id),
                       uuid.UUID(nobody.account_id), "seller", None)
    ids = victim_ids(victim)
    for method, path in protected(routes):
        if OWN_ACCOUNT.match(path):
            continue
        response = call(base_url, method, fill(path, ids), nobody)
        assert response.status_code in (403, 404), (method, path, response.status_code, response.text)
    assert httpx.get(f"{base_url}/auth/me", headers=nobody).json()["roles"] == {}


def test_a_seller_of_shop_a_gets_404_on_every_route_of_shop_b(base_url, routes, accounts, victim):
    """Same tenant, even: a seller granted shop A only does not see shop B."""
    colleague = accounts.new("seller", victim["seller"].tenant_id)
    httpx.post(f"{base_url}/shops", headers=colleague, json={"name": "Shop A", "currency": "GBP"})
    shop_routes = [(m, p) for m, p in protected(routes) if "{shop_id}" in p]
    assert len(shop_routes) >= 8
    for method, path in shop_routes:
        response = call(base_url, method, fill(path, victim_ids(victim)), colleague)
        assert response.status_code == 404, (method, path, response.status_code, response.text)


@pytest.mark.parametrize("role", ["auditor", "analyst"])
def test_auditors_and_analysts_never_write(base_url, routes, accounts, victim, role):
    reader = accounts.new(role, victim["seller"].tenant_id)  # over the whole tenant
    writes = [(m, p) for m, p in protected(routes) if m in WRITE and not OWN_ACCOUNT.match(p)]
    assert len(writes) >= 10
    for method, path in writes:
        response = call(base_url, method, fill(path, victim_ids(victim)), reader)
        assert response.status_code == 403, (role, method, path, response.status_code, response.text)
    # ...while reading their tenant's shop works.
    listing = httpx.get(f"{base_url}/shops/{victim['shop']}/listings/{victim['listing']}", headers=reader)
    assert listing.status_code == 200, listing.text
    audit = httpx.get(f"{base_url}/audit/events", headers=reader)
    assert audit.status_code == (200 if role == "auditor" else 403)


def test_an_api_key_is_held_to_its_scopes_and_shops(base_url, accounts, victim):
    seller = victim["seller"]
    read_only = accounts.new("service", seller.tenant_id, scopes=["shops:read"])
    shop, listing = victim["shop"], victim["listing"]
    assert httpx.get(f"{base_url}/shops/{shop}/listings/{listing}", headers=read_only).status_code == 200
    price = {"price": "21.00", "currency": "GBP"}
    assert httpx.put(f"{base_url}/shops/{shop}/listings/{listing}/price", headers=read_only, json=price).status_code == 403
    writer = victim["service"]  # every service scope
    assert httpx.put(f"{base_url}/shops/{shop}/listings/{listing}/price", headers=writer, json=price).status_code == 200
    assert httpx.post(f"{base_url}/shops", headers=writer, json={"name": "x", "currency": "GBP"}).status_code == 403
    assert httpx.get(f"{base_url}/accounts", headers=writer).status_code == 403
    # API keys cannot log out or manage MFA: they are revoked by an admin.
    assert httpx.post(f"{base_url}/auth/mfa/enroll", headers=writer).status_code == 403


def test_no_two_routes_can_match_one_url(routes):
    """api/app.py includes the busiest routers first, to spend less on matching: safe only
    because no URL could be taken by two routes, whatever their order. Two templates overlap when
    they have as many segments and, at each, the same literal or a parameter on either side."""
    def overlap(a: str, b: str) -> bool:
        sa, sb = a.strip("/").split("/"), b.strip("/").split("/")
        return len(sa) == len(sb) and all(x == y or x.startswith("{") or y.startswith("{") for x, y in zip(sa, sb))

    assert not any(":path" in path for _, path in routes)  # a path parameter would span segments
    clashes = [(m1, p1, p2) for i, (m1, p1) in enumerate(routes) for m2, p2 in routes[i + 1:]
               if m1 == m2 and overlap(p1, p2)]
    assert not clashes
