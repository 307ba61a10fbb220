"""The OpenAPI document is the contract a client author codes against: it is valid OpenAPI, every
operation says what it does, who may call it and shows an example, and real answers of every route
(successes and errors, over real HTTP) match the schema it documents for that status and media type.

A route added without a documented answer, or without a sample here, fails this file.
"""

from __future__ import annotations

import io
import re
import time
import uuid
from html.parser import HTMLParser
from uuid import UUID

import httpx
import orjson
import pyarrow.parquet as pq
import pyotp
import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

import codec
from conftest import listing_spec, openapi_document
from etsy_world import sample_marketplace_routes
from read.model_runs import refresh

JSON_TYPES = {"application/json", "application/problem+json"}
PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def base_url(unthrottled_url) -> str:
    """The scenario logs in and checks secrets often."""
    return unthrottled_url


@pytest.fixture(scope="module")
def document(base_url) -> dict:
    return openapi_document(base_url)


def operations(document: dict):
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield method.upper(), path, operation


def schema_errors(document: dict, schema: dict, value) -> list[str]:
    """Why `value` does not match `schema` (its $refs resolved in the document's components)."""
    validator = Draft202012Validator({**schema, "components": document["components"]})
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(value)]


# -- the document -----------------------------------------------------------------------------------
def test_the_document_is_valid_openapi(document):
    validate(document)  # raises with the first error


def test_every_operation_says_what_it_does_who_may_call_it_and_shows_examples(document):
    schemas = document["components"]["schemas"]

    def has_example(content: dict) -> bool:
        for media in content.values():
            if media.get("example") is not None or media.get("examples"):
                return True
            schema = media.get("schema", {})
            refs = [s.get("$ref") for s in [schema, schema.get("items", {}), *schema.get("anyOf", [])]]
            if schema.get("examples") or any(ref and schemas[ref.rsplit("/", 1)[-1]].get("examples") for ref in refs):
                return True
        return False

    missing = []
    for method, path, operation in operations(document):
        if not operation.get("summary") or "**Who may call:**" not in operation.get("description", ""):
            missing.append(f"{method} {path}: summary or description")
        if "requestBody" in operation and not has_example(operation["requestBody"]["content"]):
            missing.append(f"{method} {path}: request example")
        successes = [r for status, r in operation["responses"].items() if status.startswith("2")]
        if not successes or not all(has_example(r.get("content", {})) for r in successes):
            missing.append(f"{method} {path}: success example")
        for status, answer in operation["responses"].items():
            if status[0] in "45" and answer.get("content") != {
                    PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}:
                missing.append(f"{method} {path}: {status} is not a Problem")
    assert not missing, "\n".join(missing)


def test_each_operation_lists_the_errors_its_declarations_allow(document):
    """Derived per route, not a blanket list: reads never list 409 or 413, public routes never 403."""
    responses = {(m, p): set(o["responses"]) for m, p, o in operations(document)}
    assert {"401", "403", "404", "422"} <= responses[("GET", "/shops/{shop_id}/listings/{listing_id}")]
    assert not {"409", "413"} & responses[("GET", "/shops/{shop_id}/listings/{listing_id}")]
    assert {"400", "401", "403", "404", "409", "413", "422"} <= responses[
        ("PUT", "/shops/{shop_id}/listings/{listing_id}/price")]
    assert "429" in responses[("POST", "/auth/login")] and "403" not in responses[("POST", "/auth/login")]
    assert "404" not in responses[("GET", "/shops")]


MONEY = {"price", "previous", "floor", "ceiling", "cost", "unit_price", "amount", "proposed", "price_after",
         "automated_floor", "min_margin", "max_step_percent", "percent"}


def test_money_is_a_decimal_string_never_a_number(document):
    """Money in and out is a decimal string with a pattern; no schema says `number | string` any more."""
    found = []

    def walk(node, where: str) -> None:
        if isinstance(node, dict):
            branches = node.get("anyOf", [])
            if {"number", "string"} <= {b.get("type") for b in branches}:
                found.append(where)
            for name, prop in node.get("properties", {}).items():
                kinds = [prop] + prop.get("anyOf", [])
                if name in MONEY and not any(k.get("type") == "string" and k.get("pattern") for k in kinds):
                    found.append(f"{where}/properties/{name}")
            for key, value in node.items():
                walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}/{i}")

    walk(document, "#")
    assert not found, found
    price = document["components"]["schemas"]["SetPrice"]["properties"]["price"]
    assert price["type"] == "string" and re.fullmatch(price["pattern"], price["examples"][0])


# -- /docs offline ----------------------------------------------------------------------------------
class Assets(HTMLParser):
    def __init__(self):
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_pages_load_only_local_assets(base_url, page):
    html = httpx.get(f"{base_url}{page}")
    assert html.status_code == 200
    parser = Assets()
    parser.feed(html.text)
    assert len(parser.urls) >= 2
    assert all(url.startswith("/") and not url.startswith("//") for url in parser.urls), parser.urls
    assert "http://" not in html.text and "https://" not in html.text
    for url in parser.urls:
        assert httpx.get(f"{base_url}{url}").status_code == 200, url
    assert re.search(r"['\"]/openapi\.json['\"]", html.text)


# -- real answers -----------------------------------------------------------------------------------
class Recorder:
    """Every answer of the scenario below, by the operation (method, path template) it came from."""

    def __init__(self, document: dict):
        self.templates = sorted(((m, p, re.compile("^" + re.sub(r"\{\w+\}", "[^/]+", p) + "$"))
                                 for m, p, _ in operations(document)), key=lambda t: t[1].count("{"))
        self.answers: list[tuple[str, str, httpx.Response]] = []

    def __call__(self, response: httpx.Response) -> None:
        response.read()
        method, path = response.request.method, response.request.url.path
        template = next((p for m, p, rx in self.templates if m == method and rx.match(path)), None)
        assert template is not None, f"{method} {path} is not in the document"
        self.answers.append((method, template, response))


def play_experiments(api: httpx.Client, shop: str, unknown: str, engine) -> None:
    """Every experiment route: one experiment stopped and abandoned, one run through its horizon
    (hourly periods that began hours ago, started by the policy's step) and concluded."""
    from datetime import datetime, timedelta, timezone

    def ok(response: httpx.Response) -> dict:
        assert response.is_success, f"{response.request.method} {response.request.url}: {response.text[:300]}"
        return response.json()

    def caught_up() -> None:
        deadline = time.monotonic() + 30
        while any(p["events_behind"] for p in ok(api.get("/analytics/lag"))["projections"]):
            assert time.monotonic() < deadline, "the projector did not catch up"
            time.sleep(0.05)

    spec = listing_spec(9, price="30.00", floor="20.00", ceiling="50.00", cost="9.00")
    jug = ok(api.post(f"/shops/{shop}/listings", json={"listings": [spec]}))["listings"][0]["listing_id"]
    today = datetime.now(timezone.utc).replace(hour=12, minute=0, second=0, microsecond=0)
    ok(api.post(f"/shops/{shop}/sales", json={"sales": [
        {"listing_id": jug, "quantity": 3 + day % 4, "unit_price": "30.00", "currency": "GBP", "order_id": f"j{day}",
         "transaction_id": f"j-{uuid.uuid4().hex}", "sold_at": (today - timedelta(days=day)).isoformat()}
        for day in range(1, 22)]}))
    caught_up()
    arms = [{"name": "control", "kind": "relative", "value": "0"}, {"name": "plus-10", "kind": "relative", "value": "10"}]
    design = {"name": "jug +10%", "listing_ids": [jug], "arms": arms, "period_hours": 24, "metric": "profit", "mde": "0.5"}
    running = ok(api.post(f"/shops/{shop}/experiments", json=design))["experiment_id"]
    api.post(f"/shops/{shop}/experiments", json={**design, "listing_ids": [unknown]})
    api.get(f"/shops/{shop}/experiments")
    api.get(f"/shops/{unknown}/experiments")
    api.get(f"/shops/{shop}/experiments/{running}")
    api.get(f"/shops/{shop}/experiments/{unknown}")
    api.get(f"/shops/{shop}/experiments/{running}/analysis")
    api.get(f"/shops/{shop}/experiments/{unknown}/analysis")
    api.post(f"/shops/{shop}/experiments/{running}/conclude", json={})  # before the horizon: 422
    ok(api.post(f"/shops/{shop}/experiments/{running}/stop", json={"reason": "enough"}))
    api.post(f"/shops/{shop}/experiments/{running}/stop", json={})
    ok(api.post(f"/shops/{shop}/experiments/{running}/abandon", json={}))
    api.post(f"/shops/{shop}/experiments/{running}/abandon", json={})
    starts = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - timedelta(hours=6)
    both_moved = [{"name": "plus-5", "kind": "relative", "value": "5"}, {"name": "plus-10", "kind": "relative", "value": "10"}]
    hourly = ok(api.post(f"/shops/{shop}/experiments", json={**design, "name": "hourly", "period_hours": 1, "arms": both_moved,
                                                              "horizon_cycles": 2, "starts_at": starts.isoformat()}))
    for period in range(5):
        engine.experiments.tend(UUID(hourly["experiment_id"]), starts + timedelta(hours=period, minutes=1))
    caught_up()
    ok(api.post(f"/shops/{shop}/experiments/{hourly['experiment_id']}/conclude", json={"reason": "horizon reached"}))


def check_answer(document: dict, method: str, template: str, response: httpx.Response) -> list[str]:
    where = f"{method} {template} -> {response.status_code}"
    answers = document["paths"][template][method.lower()]["responses"]
    documented = answers.get(str(response.status_code))
    if documented is None:
        return [f"{where}: status not documented ({sorted(answers)})"]
    media = response.headers.get("content-type", "").split(";")[0]
    content = documented.get("content", {})
    if media not in content:
        return [f"{where}: {media} not documented ({sorted(content)})"]
    schema = content[media].get("schema", {})
    if not ({"$ref", "type", "anyOf", "oneOf"} & set(schema)):
        return [f"{where}: {media} has no schema"]
    if media in JSON_TYPES:
        errors = schema_errors(document, schema, response.json())
    elif media == "application/x-ndjson":
        errors = [e for line in response.content.splitlines()
                  for e in schema_errors(document, content[media]["x-item-schema"], orjson.loads(line))]
    elif media == "text/csv":
        errors = [] if response.text.splitlines()[0].count(",") >= 1 else ["not CSV"]
    elif media == "application/vnd.apache.parquet":
        errors = [] if pq.read_table(io.BytesIO(response.content)).num_columns else ["not Parquet"]
    else:
        errors = [f"no check for {media}"]
    return [f"{where}: {e}" for e in errors[:5]]


@pytest.fixture(scope="module")
def projector(database_url, engine):
    """The views kept current, so that analytics pages and the lag carry rows."""
    from projections.projector import InBackground, Projector

    background = InBackground.projector(Projector(database_url, codec.to_domain_event)).start()
    yield
    background.stop()


@pytest.fixture(scope="module")
def answers(base_url, document, accounts, engine, projector):
    """A sample of real answers of every operation: a scenario an admin plays through the API,
    then the errors each route's declarations allow."""
    record = Recorder(document)
    admin = accounts.new("admin")
    with httpx.Client(base_url=base_url, headers=admin, timeout=60, event_hooks={"response": [record]}) as api:
        play(api, admin, accounts)
        throttled(engine, record, admin)
        for method, path, operation in operations(document):  # every protected route, without credentials
            if operation.get("security"):
                api.request(method, re.sub(r"\{\w+\}", str(uuid.uuid4()), path), headers={"Authorization": ""})
    return record.answers


def throttled(engine, record, admin) -> None:
    """429s: a server whose login budget is one attempt per minute and client."""
    from api.app import create_app
    from api.auth import AuthSettings
    from api.server import running

    strict = AuthSettings(login_per_minute=1, token_per_minute=1)
    with running(create_app(engine, auth_settings=strict)) as url, \
            httpx.Client(base_url=url, timeout=60, event_hooks={"response": [record]}) as api:
        for _ in range(2):
            api.post("/auth/login", json={"tenant": admin.tenant_id, "username": admin.username, "password": "wrong"})
            api.post("/auth/token", json={"refresh_token": "rt_unknown"})
            api.post("/auth/login/mfa", json={"challenge": "c_unknown", "code": "123456"})


def play(api: httpx.Client, admin, accounts) -> None:
    def ok(response: httpx.Response) -> dict:
        assert response.is_success, f"{response.request.method} {response.request.url}: {response.text[:300]}"
        return response.json()

    unknown = str(uuid.uuid4())
    anonymous = {"Authorization": ""}

    # shops and listings
    shop = ok(api.post("/shops", json={"name": "Contract Ceramics", "currency": "GBP"}))["shop_id"]
    api.get("/shops")
    api.get(f"/shops/{shop}")
    api.get(f"/shops/{unknown}")
    listings = ok(api.post(f"/shops/{shop}/listings", json={"listings": [listing_spec(1), listing_spec(2)]}))
    listing, other = (x["listing_id"] for x in listings["listings"])
    api.post(f"/shops/{shop}/listings", json={"listings": [listing_spec(1)]})  # the same external id: 409
    api.post(f"/shops/{shop}/listings", json={"listings": [listing_spec(3, price="1.234")]})  # 422
    api.post(f"/shops/{shop}/listings", content=b"\xff", headers={"Content-Type": "application/json"})  # 400
    api.post(f"/shops/{shop}/listings", content=b" " * (9 * 1024 * 1024), headers={"Content-Type": "application/json"})  # 413

    # prices
    ok(api.put(f"/shops/{shop}/listings/{listing}/price", json={"price": "21.00", "currency": "GBP", "reason": "r"}))
    api.put(f"/shops/{shop}/listings/{listing}/price", json={"price": "22.00", "currency": "GBP", "expected_version": 1})
    api.put(f"/shops/{shop}/listings/{unknown}/price", json={"price": "22.00", "currency": "GBP"})
    ok(api.put(f"/shops/{shop}/listings/{listing}/guardrails",
               json={"floor": "9.00", "ceiling": "41.00", "cost": "5.00", "currency": "GBP"}))
    api.put(f"/shops/{shop}/listings/{listing}/guardrails", json={"floor": "50.00", "ceiling": "41.00", "currency": "GBP"})
    ok(api.post(f"/shops/{shop}/price-changes",
                json={"changes": [{"listing_id": listing, "price": "23.00"}, {"listing_id": other, "price": "24.00"}],
                      "currency": "GBP", "reason": "bulk"}))
    api.post(f"/shops/{shop}/price-changes", json={"changes": [], "currency": "GBP"})
    api.get(f"/shops/{shop}/listings/{listing}")
    api.get(f"/shops/{shop}/listings/{listing}", params={"version": 2})
    api.get(f"/shops/{shop}/listings/{listing}", params={"version": "two"})
    api.get(f"/shops/{shop}/listings/{unknown}")
    api.get(f"/shops/{shop}/listings/not-a-uuid")

    # facts
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60))
    ok(api.post(f"/shops/{shop}/observations", json={"observations": [
        {"listing_id": listing, "competitor": "etsy:shop/Rival", "price": "19.95", "currency": "GBP",
         "observed_at": now, "source": "etsy-api"}]}))
    api.post(f"/shops/{shop}/observations", json={"observations": [{"listing_id": listing}]})
    ok(api.post(f"/shops/{shop}/sales", json={"sales": [
        {"listing_id": listing, "quantity": 2, "unit_price": "23.00", "currency": "GBP", "order_id": "o-1",
         "transaction_id": f"t-{uuid.uuid4().hex}", "sold_at": now}]}))
    api.post(f"/shops/{shop}/sales", json={"sales": "none"})
    csv = {"Content-Type": "text/csv"}
    ok(api.post(f"/shops/{shop}/imports/competitor-prices", headers=csv,
                content=f"listing_id,competitor,price,currency,observed_at\n{listing},etsy:shop/Rival,19.50,GBP,{now}\n"))
    api.post(f"/shops/{shop}/imports/competitor-prices", headers=csv, content="listing_id,price\n")
    ok(api.post(f"/shops/{shop}/imports/etsy-listings", headers=csv, content="TITLE,PRICE,SKU\nOak board,45.00,CSV-OAK\n"))
    api.post(f"/shops/{shop}/imports/etsy-listings", headers=csv, content="TITLE,PRICE,SKU\nOak board,cheap,CSV-ASH\n")
    ok(api.post(f"/shops/{shop}/imports/etsy-orders", headers=csv,
                content="Sale Date,Order ID,Order Value,Buyer\n11/28/26,csv-o-1,24.00,adal\n"))
    api.post(f"/shops/{shop}/imports/etsy-orders", headers=csv, content="Sale Date,Order ID\n")
    ok(api.post(f"/shops/{shop}/imports/etsy-order-items", headers=csv,
                content="Sale Date,Buyer,Quantity,Price,Transaction ID,Listing ID,Order ID,SKU\n"
                        f"11/28/26,adal,1,23.00,csv-t-{uuid.uuid4().hex},ext-1,csv-o-2,SKU-1\n"))
    api.post(f"/shops/{shop}/imports/etsy-order-items", headers=csv, content="Sale Date,Quantity\n")
    sample_marketplace_routes(api, shop)

    # rollback
    ok(api.post(f"/shops/{shop}/listings/{listing}/rollback", json={"to_version": 1, "reason": "undo"}))
    api.post(f"/shops/{shop}/listings/{listing}/rollback", json={"reason": "no target"})
    ok(api.post(f"/shops/{shop}/rollbacks", json={"source": "manual", "reason": "undo the bulk change"}))
    api.post(f"/shops/{shop}/rollbacks", json={"source": "nonsense"})

    # rules, assignment, automation
    rule = ok(api.post(f"/shops/{shop}/rules", json={"name": "beat", "kind": "beat_lowest", "percent": "5"}))["rule_id"]
    api.post(f"/shops/{shop}/rules", json={"name": "beat", "kind": "beat_lowest"})
    api.get(f"/shops/{shop}/rules")
    api.get(f"/shops/{shop}/rules/{rule}")
    api.get(f"/shops/{shop}/rules/{unknown}")
    ok(api.put(f"/shops/{shop}/rules/{rule}", json={"name": "beat", "kind": "beat_lowest", "percent": "3",
                                                    "expected_version": 1}))
    api.put(f"/shops/{shop}/rules/{rule}", json={"name": "beat", "kind": "match_lowest", "expected_version": 1})
    ok(api.post(f"/shops/{shop}/rule-assignments", json={"rule_id": rule, "listing_ids": [other]}))
    api.post(f"/shops/{shop}/rule-assignments", json={"rule_id": rule, "listing_ids": [unknown]})
    ok(api.put(f"/shops/{shop}/listings/{listing}/rule", json={"rule_id": rule, "reason": "try it"}))
    api.put(f"/shops/{shop}/listings/{listing}/rule", json={"rule_id": unknown})
    ok(api.post(f"/shops/{shop}/rules/dry-run", json={"rule_id": rule, "listing_ids": [listing]}))
    api.post(f"/shops/{shop}/rules/dry-run", json={})
    api.get(f"/shops/{shop}/listings/{listing}/explain")
    api.get(f"/shops/{shop}/listings/{unknown}/explain")
    api.get(f"/shops/{shop}/listings/{listing}/automation")
    api.get(f"/shops/{shop}/listings/{unknown}/automation")
    ok(api.put(f"/shops/{shop}/listings/{listing}/automation", json={"max_step_percent": "10", "max_daily_changes": 6}))
    api.put(f"/shops/{shop}/listings/{listing}/automation", json={"max_daily_changes": -1})
    ok(api.put(f"/shops/{shop}/listings/{listing}/stock", json={"quantity": 5, "restock_on": None}))
    api.put(f"/shops/{shop}/listings/{listing}/stock", json={"quantity": -1})
    api.get(f"/shops/{shop}/listings/{listing}/stock")
    api.get(f"/shops/{shop}/listings/{unknown}/stock")
    ok(api.delete(f"/shops/{shop}/listings/{listing}/rule", params={"reason": "enough"}))
    api.delete(f"/shops/{shop}/listings/{unknown}/rule")
    ok(api.post(f"/shops/{shop}/rules/{rule}/retire", json={"reason": "season over"}))
    api.post(f"/shops/{shop}/rules/{rule}/retire", json={"expected_version": 1})
    api.get(f"/shops/{shop}/automation")
    api.get(f"/shops/{unknown}/automation")
    for action in ("stop", "resume"):
        ok(api.post(f"/shops/{shop}/automation/{action}", json={"reason": "supplier error"}))
        api.post(f"/shops/{shop}/automation/{action}", json={"reason": 5})
        ok(api.post(f"/automation/{action}", json={"reason": "holiday"}))
        api.post(f"/automation/{action}", json={"reason": "\x00"})
    api.get("/automation")

    # analytics, once the views have caught up with the log
    deadline = time.monotonic() + 30
    while any(p["events_behind"] for p in ok(api.get("/analytics/lag"))["projections"]):
        assert time.monotonic() < deadline, "the projector did not catch up"
        time.sleep(0.05)
    for view, extra in (("prices", {}), ("price-changes", {}), ("competitor-observations", {}),
                        ("competitor-bands", {"bucket": "day"}), ("sales", {}),
                        ("sales-by-listing", {"bucket": "day"}), ("sales-by-shop", {"bucket": "day"})):
        url = f"/shops/{shop}/analytics/{view}"
        api.get(url, params={**extra, "limit": 1})
        api.get(url, params={**extra, "format": "csv"})
        api.get(url, params={**extra, "format": "parquet"})
        api.get(url, params={**extra, "cursor": "forged"})
    api.get("/analytics/lag")
    ok(api.get(f"/shops/{shop}/customers"))
    api.get(f"/shops/{shop}/customers", params={"since": "yesterday"})

    # demand models, once refreshed (they are fitted off the request path)
    refresh(accounts.engine.core.conninfo, shop, processes=1)
    for kind in ("elasticity", "forecast", "recommendation"):
        api.get(f"/shops/{shop}/listings/{listing}/{kind}")
        api.get(f"/shops/{shop}/listings/{unknown}/{kind}")
    api.get(f"/shops/{shop}/listings/{listing}/forecast", params={"horizon": 91})
    for kind in ("elasticity", "forecast"):
        api.get(f"/shops/{shop}/{kind}")
        api.get(f"/shops/{uuid.uuid4()}/{kind}")
    for extra in ({}, {"format": "csv"}, {"format": "parquet"}, {"cursor": "forged"}):
        api.get(f"/shops/{shop}/analytics/elasticities", params=extra)

    # price experiments (tests/test_experiments_http.py): a listing with three weeks of sales, for the power calculation
    play_experiments(api, shop, unknown, accounts.engine)
    # the rollback guard's settings
    ok(api.get(f"/shops/{shop}/rollback-guard"))
    api.get(f"/shops/{unknown}/rollback-guard")
    ok(api.put(f"/shops/{shop}/rollback-guard", json={"metric": "revenue", "level": 80, "periods": 3}))
    api.put(f"/shops/{shop}/rollback-guard", json={"periods": 0})

    # audit
    api.get(f"/aggregates/{listing}/history", params={"limit": 2})
    api.get(f"/aggregates/{unknown}/history")
    api.get(f"/aggregates/{listing}/state", params={"version": 1})
    api.get(f"/aggregates/{listing}/state", params={"version": 99})
    api.get("/audit/events", params={"limit": 3})
    api.get("/audit/events", params={"after": "-"})
    api.get("/audit/export", params={"from": 1})
    api.get("/audit/export", params={"from": 5, "to": 1})
    api.get("/audit/verify")
    api.get("/audit/verify", params={"from_position": 0})

    # accounts and the security view
    created = ok(api.post("/accounts", json={"username": f"bea-{uuid.uuid4().hex[:8]}", "password": "a long passphrase of words",
                                             "roles": [{"role": "seller", "shops": [shop]}]}))
    person = created["account_id"]
    api.post("/accounts", json={"username": created["username"], "password": "a long passphrase of words"})
    service = ok(api.post("/accounts", json={"username": f"sync-{uuid.uuid4().hex[:8]}", "kind": "service",
                                             "roles": [{"role": "service", "shops": None}]}))["account_id"]
    api.get("/accounts")
    api.get(f"/accounts/{person}")
    api.get(f"/accounts/{unknown}")
    ok(api.post(f"/accounts/{person}/roles", json={"role": "analyst", "shops": None}))
    api.post(f"/accounts/{person}/roles", json={"role": "wizard"})
    ok(api.delete(f"/accounts/{person}/roles/analyst"))
    api.delete(f"/accounts/{person}/roles/wizard")
    ok(api.post(f"/accounts/{person}/unlock"))
    api.post(f"/accounts/{unknown}/unlock")
    ok(api.post(f"/accounts/{person}/mfa/reset"))
    api.post(f"/accounts/{unknown}/mfa/reset")
    key = ok(api.post(f"/accounts/{service}/api-keys", json={"scopes": ["shops:read"]}))["key_id"]
    api.post(f"/accounts/{service}/api-keys", json={"scopes": []})
    api.get(f"/accounts/{service}/api-keys")
    api.get(f"/accounts/{unknown}/api-keys")
    ok(api.delete(f"/accounts/{service}/api-keys/{key}"))
    api.delete(f"/accounts/{service}/api-keys/{unknown}")
    api.get(f"/security/accounts/{person}/events", params={"limit": 5})
    api.get(f"/security/accounts/{person}/events", params={"limit": 0})
    api.get("/security/logins")
    api.get("/security/logins", params={"days": 0})
    leaver = ok(api.post("/accounts", json={"username": f"cy-{uuid.uuid4().hex[:8]}", "password": "a long passphrase of words",
                                            "roles": []}))["account_id"]
    reset = ok(api.post(f"/accounts/{leaver}/password-reset"))["reset_token"]
    api.post(f"/accounts/{unknown}/password-reset")
    api.post("/auth/password/reset", json={"token": reset, "new_password": "password123"}, headers=anonymous)
    ok(api.post("/auth/password/reset", json={"token": reset, "new_password": "a reset long passphrase"}, headers=anonymous))
    api.post("/auth/password/reset", json={"token": reset, "new_password": "a reset long passphrase"}, headers=anonymous)
    ok(api.post(f"/accounts/{leaver}/disable", json={"reason": "contract"}))
    api.post(f"/accounts/{leaver}/disable", json={})
    ok(api.post(f"/accounts/{leaver}/enable"))
    api.post(f"/accounts/{unknown}/enable")
    ok(api.post(f"/accounts/{leaver}/erase"))
    api.post(f"/accounts/{unknown}/erase")
    api.post("/auth/login", json={"tenant": admin.tenant_id, "username": "nobody-here", "password": "x"}, headers=anonymous)
    api.get("/security/unknown-logins")
    api.get("/security/unknown-logins", params={"limit": 0})

    # one's own account: log in as the person created above
    tenant = admin.tenant_id
    login = {"tenant": tenant, "username": created["username"], "password": "a long passphrase of words"}
    session = ok(api.post("/auth/login", json=login, headers=anonymous))
    api.post("/auth/login", json={**login, "password": "wrong"}, headers=anonymous)
    api.post("/auth/login", json={"tenant": tenant}, headers=anonymous)
    me = {"Authorization": f"Bearer {session['access_token']}"}
    api.get("/auth/me", headers=me)
    api.get("/auth/me", headers=anonymous)
    session = ok(api.post("/auth/token", json={"refresh_token": session["refresh_token"]}, headers=anonymous))
    api.post("/auth/token", json={"refresh_token": "spent-or-unknown"}, headers=anonymous)
    me = {"Authorization": f"Bearer {session['access_token']}"}
    enrolled = ok(api.post("/auth/mfa/enroll", headers=me))
    api.post("/auth/mfa/enroll", headers=anonymous)
    totp = pyotp.TOTP(enrolled["secret"])
    api.post("/auth/mfa/confirm", json={"code": "12345x"}, headers=me)
    ok(api.post("/auth/mfa/confirm", json={"code": totp.now()}, headers=me))
    challenge = ok(api.post("/auth/login", json=login, headers=anonymous))["challenge"]
    ok(api.post("/auth/login/mfa", json={"challenge": challenge, "code": totp.at(time.time() + 30)}, headers=anonymous))
    api.post("/auth/login/mfa", json={"challenge": challenge, "code": "123456"}, headers=anonymous)
    api.post("/auth/mfa/disable", json={"password": "wrong"}, headers=me)
    ok(api.post("/auth/mfa/disable", json={"password": login["password"]}, headers=me))
    ok(api.post("/auth/password", json={"current_password": login["password"],
                                        "new_password": "another long passphrase"}, headers=me))
    api.post("/auth/password", json={"current_password": "x"}, headers=me)
    ok(api.post("/auth/logout", headers=me))
    api.post("/auth/logout", headers=me)  # the session has ended: 401

    # an API key on a person's own routes, and a reader's write, are refused
    key = accounts.new("service", tenant)
    for path in ("/auth/mfa/enroll", "/auth/mfa/disable", "/auth/password", "/auth/mfa/confirm"):
        body = {"/auth/mfa/disable": {"password": "x"}, "/auth/mfa/confirm": {"code": "123456"},
                "/auth/password": {"current_password": "x", "new_password": "another long passphrase"}}.get(path)
        api.post(path, json=body, headers=key)
    api.post("/auth/logout", headers=key)
    api.get("/auth/me", headers=key)
    analyst = accounts.new("analyst", tenant)
    api.put(f"/shops/{shop}/listings/{listing}/price", json={"price": "1.00", "currency": "GBP"}, headers=analyst)
    api.get("/audit/events", headers=analyst)


def test_real_answers_of_every_operation_match_the_document(document, answers):
    problems = [p for method, template, response in answers for p in check_answer(document, method, template, response)]
    assert not problems, f"{len(problems)} of {len(answers)} answers:\n" + "\n".join(problems[:60])


def test_the_sample_covers_every_operation_with_a_success_and_an_error(document, answers):
    seen: dict[tuple[str, str], set[int]] = {}
    for method, template, response in answers:
        seen.setdefault((method, template), set()).add(response.status_code)
    missing = [f"{m} {p}: {sorted(seen.get((m, p), ()))}" for m, p, _ in operations(document)
               if not any(s < 300 for s in seen.get((m, p), ())) or not any(s >= 400 for s in seen.get((m, p), ()))]
    assert not missing, "operations without a sampled success and error:\n" + "\n".join(missing)
    sampled = set().union(*seen.values())
    assert {200, 201, 400, 401, 403, 404, 409, 413, 422, 429} <= sampled, sorted(sampled)


def test_error_answers_are_problems_naming_their_status(answers):
    for method, template, response in answers:
        if response.status_code >= 400:
            assert response.headers["content-type"] == PROBLEM, (method, template, response.text[:200])
            assert response.json()["status"] == response.status_code


def test_every_example_in_the_document_matches_its_schema(document):
    wrong = [f"{name}: {error}" for name, schema in document["components"]["schemas"].items()
             for example in schema.get("examples", []) for error in schema_errors(document, schema, example)]
    for method, path, operation in operations(document):
        for status, answer in operation["responses"].items():
            for media, content in answer.get("content", {}).items():
                if "example" in content and media in JSON_TYPES:
                    wrong += [f"{method} {path} {status}: {e}" for e in
                              schema_errors(document, content["schema"], content["example"])]
    assert not wrong, "\n".join(wrong)
