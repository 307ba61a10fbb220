"""Every route in the OpenAPI document, walked with no credentials, bad credentials, another
tenant's credentials and credentials without any role: none may answer anything but 401, 403
or 404. A route added without authorization, or whose handler forgets the tenant, fails here.

Also: roles over every write route (auditors and analysts never write; a seller of shop A
gets 404 on every route of shop B), and API key scopes.
"""

from __future__ import annotations

import json
import re
import uuid

import httpx
import pytest

from api.app import create_app
from api.routing import resource_router
from api.server import running
from conftest import listing_spec, openapi_document

# Routes anyone may call: they are how credentials are obtained.
PUBLIC = {("POST", "/auth/login"), ("POST", "/auth/login/mfa"), ("POST", "/auth/token"), ("POST", "/auth/password/reset")}
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


def test_a_route_that_declares_nothing_is_refused_to_everyone(engine, accounts):
    """Fail closed: a route added without requires() or PUBLIC answers 401 without credentials and
    403 to every caller, an admin included; its handler never runs."""
    reached = []
    router = resource_router()

    @router.get("/undeclared")
    def undeclared() -> dict:
        reached.append(True)
        return {}

    app = create_app(engine)
    app.include_router(router)
    with running(app) as url:
        assert httpx.get(f"{url}/undeclared").status_code == 401
        for role in ("admin", "seller"):
            refused = httpx.get(f"{url}/undeclared", headers=accounts.new(role))
            assert refused.status_code == 403, refused.text
            assert "declares no permission" in refused.json()["detail"]
    assert not reached


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
    engine.identity.revoke_role(CommandContext(actor=Actor("pytest"), tenant_id=nobody.tenant_id),
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


# -- hostile values, by what the OpenAPI document says each input is ---------------------------------
# Every input the document lists (query parameters, body fields at any depth) gets the hostile values
# of its type. A field added later is swept without anyone describing it here.
CONTROL_CHARACTERS = ["\x00", "\x1b[31m", "\x07", "\x7f", "\x85", "\x9b", "\u202e", "\u2066", "\ud800"]
BAD_INTEGERS = [True, False, "1", 1.5, "\u0661", [1], {"n": 1}, 2**70]  # also JSON 1.0, sent raw below
BAD_QUERY_INTEGERS = ["true", "\u0661\u0662", "\uff11\uff12", "9" * 40, "-1" * 20, "1e3", "0x10", "\x00", "1.5", "",
                      " 12", "1_000", "+5", "12\n"]
EXTREME_TIMES = ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59.999999+00:00",
                 "0001-01-01T00:00:00Z", "1999-12-31T23:59:59Z", "2999-01-01T00:00:00Z"]
QUERY_STRINGS = CONTROL_CHARACTERS[:-1] + ["x" * 5000, "'; DROP TABLE pricing_events; --"]
SECRETS = {"password", "current_password", "new_password"}  # hashed, never stored or shown: any characters


@pytest.fixture(scope="module")
def sweep_url(unthrottled_url) -> str:
    """The sweep sends dozens of refused logins."""
    return unthrottled_url


@pytest.fixture(scope="module")
def document(sweep_url) -> dict:
    return openapi_document(sweep_url)


@pytest.fixture(scope="module")
def admin_world(accounts, sweep_url):
    """A tenant's admin (every permission) with a shop and a listing: each route's own checks pass,
    so what answers is the validation of the one hostile value."""
    admin = accounts.new("admin")
    with httpx.Client(base_url=sweep_url, headers=admin) as api:
        shop = api.post("/shops", json={"name": "Swept", "currency": "GBP"}).json()["shop_id"]
        listing = api.post(f"/shops/{shop}/listings", json={"listings": [listing_spec()]}).json()["listings"][0]["listing_id"]
    return admin, {"shop_id": shop, "listing_id": listing, "aggregate_id": listing, "account_id": admin.account_id,
                   "role": "seller"}


def resolve(document: dict, schema: dict) -> dict:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def kinds(document: dict, schema: dict) -> set[str]:
    """'integer', 'string', 'date-time', 'object', 'array', 'number' ... a schema (or any of its anyOf) may be."""
    schema = resolve(document, schema)
    if "anyOf" in schema:
        return set().union(*(kinds(document, s) for s in schema["anyOf"]))
    kind = schema.get("format") if schema.get("format") == "date-time" else schema.get("type", "object")
    return {kind} if "enum" not in schema else {"enum"}


def leaves(document: dict, schema: dict, path: tuple = ()) -> list[tuple[tuple, set[str]]]:
    """(path, kinds) of every scalar a body can hold; list items at index 0."""
    schema = resolve(document, schema)
    found = []
    for sub in schema.get("anyOf", [schema]):
        sub = resolve(document, sub)
        if sub.get("type") == "object" or "properties" in sub:
            for name, prop in sub.get("properties", {}).items():
                found += leaves(document, prop, path + (name,))
        elif sub.get("type") == "array" and "items" in sub:
            found += leaves(document, sub["items"], path + (0,))
    if not found and path:
        found = [(path, kinds(document, schema))]
    return found


def nest(path: tuple, value):
    """{'listings': [{'title': value}]} for ('listings', 0, 'title')."""
    for part in reversed(path):
        value = [value] if isinstance(part, int) else {part: value}
    return value


def named(path: tuple) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else p) for i, p in enumerate(path))


def operations(document: dict):
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield method.upper(), path, operation


def test_every_body_field_refuses_the_hostile_values_of_its_type(sweep_url, document, admin_world):
    """Strings: control characters, DEL, C1 controls, bidi overrides, lone surrogates. Integers: JSON
    true/false, strings, fractions, out of range. Times: parseable but absurd business times. Each is
    a 4xx problem naming the field (among the body's other missing fields), and nothing is written."""
    admin, ids = admin_world
    failures, swept = [], 0
    with httpx.Client(base_url=sweep_url, headers=admin, timeout=30) as api:
        for method, path, operation in operations(document):
            body = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            if body is None:
                continue
            url = fill(path, ids)
            for leaf, leaf_kinds in leaves(document, body):
                if leaf[-1] in SECRETS:
                    continue
                values = ([f"ok{c}ok" for c in CONTROL_CHARACTERS] if "string" in leaf_kinds and not
                          leaf_kinds & {"integer", "date-time"} else [])
                values += BAD_INTEGERS if "integer" in leaf_kinds else []
                values += EXTREME_TIMES if "date-time" in leaf_kinds else []
                raw = [json.dumps(nest(leaf, "__X__")).replace('"__X__"', "1.0")] if "integer" in leaf_kinds else []
                for value in values + raw:
                    swept += 1
                    content = value.encode() if value in raw else json.dumps(nest(leaf, value)).encode()
                    response = api.request(method, url, content=content, headers={"Content-Type": "application/json"})
                    problem = response.json() if response.headers.get("content-type") == "application/problem+json" else {}
                    fields = {e.get("field") for e in problem.get("errors", [])} | {problem.get("field")}
                    if not (400 <= response.status_code < 500 and named(leaf) in fields):
                        failures.append(f"{method} {path} {named(leaf)}={value!r}: {response.status_code} "
                                        f"{response.text[:200]}")
    assert swept > 300, swept
    assert not failures, f"{len(failures)} of {swept}:\n" + "\n".join(failures[:40])


def test_no_query_parameter_answers_5xx_whatever_it_holds(sweep_url, document, admin_world):
    """Times at the ends of Python's range with offsets that push them past it, strings with control
    characters: 4xx problem+json or 2xx, never 5xx. Integers as words, in other scripts' digits, with
    signs, spaces or separators, overflowing: 422 naming the parameter."""
    admin, ids = admin_world
    failures, swept = [], 0
    with httpx.Client(base_url=sweep_url, headers=admin, timeout=30) as api:
        for method, path, operation in operations(document):
            url = fill(path, ids)
            required = {p["name"]: "day" for p in operation.get("parameters", [])
                        if p["in"] == "query" and p.get("required")}  # the analytics' bucket
            for parameter in operation.get("parameters", []):
                if parameter["in"] != "query":
                    continue
                parameter_kinds = kinds(document, parameter.get("schema", {}))
                values = (BAD_QUERY_INTEGERS if "integer" in parameter_kinds else
                          EXTREME_TIMES if "date-time" in parameter_kinds else QUERY_STRINGS)
                for value in values:
                    swept += 1
                    response = api.request(method, url, params={**required, parameter["name"]: value},
                                           json={} if method in WRITE and method != "DELETE" else None)
                    is_problem = response.headers.get("content-type") == "application/problem+json"
                    refused_by_name = response.status_code == 422 and response.json().get("field") == parameter["name"]
                    if (response.status_code >= 500 or (response.status_code >= 400 and not is_problem)
                            or ("integer" in parameter_kinds and not refused_by_name)):
                        failures.append(f"{method} {path} ?{parameter['name']}={value!r}: {response.status_code} "
                                        f"{response.text[:200]}")
    assert swept > 100, swept
    assert not failures, f"{len(failures)} of {swept}:\n" + "\n".join(failures[:40])
