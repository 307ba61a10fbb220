"""Hostile input on every command endpoint. Whatever a client sends, the answer is a 4xx
application/problem+json naming the input at fault, nothing is written, and nothing answers 500.

Each route is described once (a valid body, where its money, text and batch fields are); every
hostile case is then run against every route that has such a field.
"""

from __future__ import annotations

import copy
import json
import uuid
from dataclasses import dataclass, field
from typing import Callable

import httpx
import psycopg
import pytest

from conftest import listing_spec

WHEN = "2026-11-25T10:00:00Z"
UNKNOWN = "00000000-0000-4000-8000-000000000000"
MAX_BATCH = 10_000


@dataclass(frozen=True)
class Route:
    name: str
    method: str
    path: str  # with {shop} and {listing}
    body: Callable[[str], dict]  # listing id -> a valid body
    money: tuple[str, ...] = ()  # dotted paths ("listings.0.price") of money amounts in the body
    text: tuple[str, ...] = ()   # ... and of strings
    batch: str | None = None     # the list that is limited to MAX_BATCH items

    def url(self, shop: str, listing: str) -> str:
        return self.path.format(shop=shop, listing=listing)

    @property
    def has_listing(self) -> bool:
        return "{listing}" in self.path


def observation(listing: str) -> dict:
    return {"listing_id": listing, "competitor": "etsy:shop/Rival/1", "price": "19.95", "currency": "GBP",
            "observed_at": WHEN, "source": "etsy-api"}


def sale(listing: str) -> dict:
    return {"listing_id": listing, "quantity": 1, "unit_price": "20.00", "currency": "GBP", "order_id": "o-1",
            "transaction_id": f"t-{uuid.uuid4().hex}", "sold_at": WHEN}


ROUTES = [
    Route("open_shop", "POST", "/shops", lambda _: {"name": "Hedgerow", "currency": "GBP"}, text=("name",)),
    Route("register_listings", "POST", "/shops/{shop}/listings",
          lambda _: {"listings": [listing_spec(uuid.uuid4().int % 10**9)]},
          money=("listings.0.price", "listings.0.floor", "listings.0.ceiling", "listings.0.cost"),
          text=("listings.0.external_id", "listings.0.sku", "listings.0.title"), batch="listings"),
    Route("set_price", "PUT", "/shops/{shop}/listings/{listing}/price",
          lambda _: {"price": "21.00", "currency": "GBP", "reason": "r", "rule": "x"},
          money=("price",), text=("reason", "rule")),
    Route("set_guardrails", "PUT", "/shops/{shop}/listings/{listing}/guardrails",
          lambda _: {"floor": "9.00", "ceiling": "41.00", "cost": "5.00", "currency": "GBP", "reason": "r"},
          money=("floor", "ceiling", "cost"), text=("reason",)),
    Route("bulk_set_prices", "POST", "/shops/{shop}/price-changes",
          lambda listing: {"changes": [{"listing_id": listing, "price": "22.00"}], "currency": "GBP",
                           "reason": "r", "rule": "x"},
          money=("changes.0.price",), text=("reason", "rule"), batch="changes"),
    Route("record_observations", "POST", "/shops/{shop}/observations",
          lambda listing: {"observations": [observation(listing)]},
          money=("observations.0.price",), text=("observations.0.competitor", "observations.0.source"),
          batch="observations"),
    Route("record_sales", "POST", "/shops/{shop}/sales", lambda listing: {"sales": [sale(listing)]},
          money=("sales.0.unit_price",), text=("sales.0.order_id", "sales.0.transaction_id"), batch="sales"),
    Route("rollback_listing", "POST", "/shops/{shop}/listings/{listing}/rollback",
          lambda _: {"to_version": 1, "reason": "r"}, text=("reason",)),
    Route("bulk_rollback", "POST", "/shops/{shop}/rollbacks",
          lambda _: {"source": "rule", "rule": "x", "actor": "a", "reason": "r"}, text=("reason", "rule", "actor")),
]
BY_NAME = {r.name: r for r in ROUTES}


def cases(attribute: str) -> list:
    """(route, field path) for every route that has such fields."""
    return [pytest.param(r, f, id=f"{r.name}:{f}") for r in ROUTES for f in getattr(r, attribute)]


def dotted_to_field(path: str) -> str:
    """'listings.0.price' -> 'listings[0].price', the way problems name fields."""
    out = ""
    for part in path.split("."):
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out


def with_value(body: dict, path: str, value) -> dict:
    body = copy.deepcopy(body)
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    target = body
    for p in parents:
        target = target[p]
    target[last] = value
    return body


# -- the world the hostile requests run against ------------------------------------------------------
@dataclass
class World:
    base_url: str
    headers: dict
    shop: str
    listing: str
    database_url: str
    other_shop: str = ""
    other_listing: str = ""
    client: httpx.Client = field(default=None, repr=False)

    def send(self, route: Route, body=None, *, raw: bytes | None = None, headers: dict | None = None,
             shop: str | None = None, listing: str | None = None) -> httpx.Response:
        url = route.url(shop or self.shop, listing or self.listing)
        all_headers = {**self.headers, **(headers or {})}
        if raw is not None:
            all_headers.setdefault("Content-Type", "application/json")
            return self.client.request(route.method, url, content=raw, headers=all_headers)
        return self.client.request(route.method, url, json=body, headers=all_headers)

    def written(self) -> tuple[int, int, int]:
        """Rows in the tables a command writes: events, uniqueness reservations, idempotency records."""
        with psycopg.connect(self.database_url) as conn:
            return conn.execute("SELECT (SELECT count(*) FROM pricing_events), (SELECT count(*) FROM reservations),"
                                " (SELECT count(*) FROM command_log)").fetchone()


def open_shop_with_listing(client: httpx.Client, headers: dict) -> tuple[str, str]:
    shop = client.post("/shops", json={"name": "Hedgerow", "currency": "GBP"}, headers=headers).json()["shop_id"]
    response = client.post(f"/shops/{shop}/listings", json={"listings": [listing_spec(0)]}, headers=headers)
    return shop, response.json()["listings"][0]["listing_id"]


@pytest.fixture(scope="module")
def world(base_url, database_url, accounts) -> World:
    with httpx.Client(base_url=base_url, timeout=120) as client:
        me, them = accounts.new("seller"), accounts.new("seller")  # two tenants
        shop, listing = open_shop_with_listing(client, me)
        other_shop, other_listing = open_shop_with_listing(client, them)
        yield World(base_url, me, shop, listing, database_url, other_shop, other_listing, client)


def refused(world: World, send: Callable[[], httpx.Response], field: str | None = None,
            status: int | None = None) -> dict:
    """Send, and check the answer is a 4xx problem naming `field` and that nothing was written."""
    before = world.written()
    response = send()
    assert 400 <= response.status_code < 500, f"{response.status_code}: {response.text[:500]}"
    if status is not None:
        assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"] == "application/problem+json", response.headers
    problem = response.json()
    assert problem["status"] == response.status_code and problem["title"] and problem["detail"]
    if field is not None:
        assert problem.get("field") == field, problem
    assert world.written() == before, "a refused command wrote something"
    return problem


# -- the routes are right --------------------------------------------------------------------------------
@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.name)
def test_every_route_accepts_its_valid_body(route, base_url, accounts):
    """The control: each hostile case below changes one thing in a body that is otherwise accepted."""
    with httpx.Client(base_url=base_url) as client:
        headers = accounts.new("seller")
        shop, listing = open_shop_with_listing(client, headers)
        response = client.request(route.method, route.url(shop, listing), json=route.body(listing), headers=headers)
        assert response.status_code in (200, 201), response.text


def shop_command_routes(engine) -> list[tuple[str, str, bool]]:
    """(method, path, takes a body) of every command route the app serves under /shops/{shop_id},
    however it grows."""
    from api.app import create_app

    paths = create_app(engine).openapi()["paths"]  # the app's own account of every route it serves
    return sorted({(method.upper(), path, "requestBody" in operation)
                   for path, operations in paths.items() for method, operation in operations.items()
                   if method in ("post", "put", "patch", "delete") and path.startswith("/shops/{shop_id}")})


def test_the_routes_described_here_are_served(engine):
    served = {(method, path) for method, path, _ in shop_command_routes(engine)}
    described = {(r.method, r.path.replace("{shop}", "{shop_id}").replace("{listing}", "{listing_id}"))
                 for r in ROUTES if "{shop}" in r.path}
    assert described and described <= served


def test_every_shop_command_route_refuses_what_needs_no_valid_body(world, engine):
    """Routes added later (not described in ROUTES) still get the cases that need no valid body:
    no credentials, malformed JSON, an unknown or another tenant's shop, an oversized body."""
    failures, routes = [], shop_command_routes(engine)
    assert len(routes) >= len(WITH_SHOP)
    for method, template, takes_body in routes:
        def url(shop: str) -> str:
            path = template.replace("{shop_id}", shop)
            while "{" in path:  # any other id in the path: our listing where it fits, else an unknown one
                name = path[path.index("{") + 1:path.index("}")]
                path = path.replace("{" + name + "}", world.listing if name == "listing_id" else UNKNOWN)
            return path

        def check(case: str, status: int | None, request) -> dict | None:
            before = world.written()
            response = request()
            ok = (400 <= response.status_code < 500 and (status is None or response.status_code == status)
                  and response.headers.get("content-type") == "application/problem+json"
                  and world.written() == before)
            if not ok:
                failures.append(f"{method} {template} [{case}]: {response.status_code} {response.text[:200]}")
            return response.json() if ok else None

        send = lambda shop, **kw: world.client.request(method, url(shop), **kw)  # noqa: E731
        check("no credentials", 401, lambda: send(world.shop, json={}))
        if takes_body:
            check("malformed JSON", None, lambda: send(world.shop, content=b'{"x": ', headers={
                **world.headers, "Content-Type": "application/json"}))
        check("oversized", 413, lambda: send(world.shop, content=b"x" * (8 * 1024 * 1024 + 1), headers={
            **world.headers, "Content-Type": "application/json"}))
        unknown = check("unknown shop", 404, lambda: send(UNKNOWN, json={}, headers=world.headers))
        theirs = check("other tenant's shop", 404, lambda: send(world.other_shop, json={}, headers=world.headers))
        if unknown and theirs and unknown != theirs:
            failures.append(f"{method} {template}: another tenant's shop answers differently from an unknown one")
    assert not failures, "\n".join(failures)


# -- malformed bodies -------------------------------------------------------------------------------------
MALFORMED = {
    "truncated": b'{"price": ',
    "not json": b"price=21.00&currency=GBP",
    "trailing garbage": b'{"currency": "GBP"} trailing',
    "single quotes": b"{'price': '21.00'}",
    "invalid utf-8": b'{"name": "\xff\xfe"}',
    "deeply nested": b"[" * 100_000 + b"]" * 100_000,
}


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.name)
@pytest.mark.parametrize("raw", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_json_is_refused(world, route, raw):
    refused(world, lambda: world.send(route, raw=raw), field="body")


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.name)
@pytest.mark.parametrize("raw", [b"", b"null", b"[]", b'"text"', b"42", b"{}"], ids=["empty", "null", "list",
                                                                                    "string", "number", "object"])
def test_a_body_that_is_not_the_command_object_is_refused(world, route, raw):
    refused(world, lambda: world.send(route, raw=raw))


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.name)
def test_a_wrong_content_type_is_refused(world, route):
    body = json.dumps(route.body(world.listing)).encode()
    refused(world, lambda: world.send(route, raw=body, headers={"Content-Type": "text/plain"}))


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.name)
def test_an_unknown_field_is_refused_by_name(world, route):
    refused(world, lambda: world.send(route, {**route.body(world.listing), "is_admin": True}), field="is_admin",
            status=422)


def leaves(body, prefix: str = "") -> list[str]:
    """Dotted paths of every scalar in a body ('listings.0.price', ...)."""
    if isinstance(body, dict):
        return [p for k, v in body.items() for p in leaves(v, f"{prefix}{k}.")]
    if isinstance(body, list):
        return [p for i, v in enumerate(body) for p in leaves(v, f"{prefix}{i}.")]
    return [prefix[:-1]]


@pytest.mark.parametrize("route, path", [pytest.param(r, p, id=f"{r.name}:{p}")
                                         for r in ROUTES for p in leaves(r.body(UNKNOWN))])
def test_a_field_of_the_wrong_type_is_refused_naming_it(world, route, path):
    """An object where a scalar belongs (also the shape of a NoSQL-injection attempt)."""
    body = with_value(route.body(world.listing), path, {"$ne": None})
    refused(world, lambda: world.send(route, body), field=dotted_to_field(path), status=422)


@pytest.mark.parametrize("route, path", [(BY_NAME["record_observations"], "observations.0.observed_at"),
                                         (BY_NAME["record_sales"], "sales.0.sold_at")], ids=["observed_at", "sold_at"])
@pytest.mark.parametrize("moment", ["2026-11-25T10:00:00", "yesterday", "2026-13-45T99:00:00Z", "", True])
def test_a_business_time_must_be_a_moment_with_a_timezone(world, route, path, moment):
    body = with_value(route.body(world.listing), path, moment)
    refused(world, lambda: world.send(route, body), field=dotted_to_field(path), status=422)


# -- money ------------------------------------------------------------------------------------------------
BAD_MONEY = {
    "NaN string": "NaN", "nan string": "nan", "Infinity string": "Infinity", "-Infinity string": "-Infinity",
    "inf string": "inf", "huge string": "1e309", "negative": "-1.00", "three decimals": "12.345",
    "empty": "", "comma": "12,50", "currency sign": "£12", "hex": "0x10", "boolean": True, "list": ["1"],
    "object": {"amount": "1"}, "inexact float": 0.1 + 0.2, "negative number": -5, "max": "1000000000",
}
RAW_MONEY = {"json NaN": "NaN", "json Infinity": "Infinity", "json -Infinity": "-Infinity",
             "json 1e309": "1e309", "json -1e309": "-1e309", "json 1e-400": "1e-400"}


@pytest.mark.parametrize("route, path", cases("money"))
@pytest.mark.parametrize("value", BAD_MONEY.values(), ids=BAD_MONEY.keys())
def test_bad_money_is_refused_naming_the_field(world, route, path, value):
    body = with_value(route.body(world.listing), path, value)
    refused(world, lambda: world.send(route, body), field=dotted_to_field(path), status=422)


def raw_money_cases() -> list:
    return [pytest.param(route, path, literal, id=f"{name}-{route.name}:{path}")
            for route, path in (p.values for p in cases("money")) for name, literal in RAW_MONEY.items()]


@pytest.mark.parametrize("route, path, literal", raw_money_cases())
def test_json_numbers_that_are_not_finite_decimals_are_refused(world, route, path, literal):
    """Python's JSON parser turns NaN, Infinity and 1e309 into float specials, and 1e-400 into 0.0 unless
    numbers are read as Decimal (api/routing.py): none may get through, a zero cost included."""
    marker = "__MONEY__"
    text = json.dumps(with_value(route.body(world.listing), path, marker)).replace(f'"{marker}"', literal)
    refused(world, lambda: world.send(route, raw=text.encode()), field=dotted_to_field(path), status=422)


# Where zero is refused: every price. A cost or a sale's unit price may be zero (free samples, digital goods).
ZERO_REFUSED = [p for p in cases("money") if p.values[1].rsplit(".", 1)[-1] in ("price", "floor", "ceiling")]


@pytest.mark.parametrize("route, path", ZERO_REFUSED)
@pytest.mark.parametrize("value", ["0", "0.00", 0, "-0"])
def test_a_zero_price_is_refused(world, route, path, value):
    body = with_value(route.body(world.listing), path, value)
    refused(world, lambda: world.send(route, body), field=dotted_to_field(path), status=422)


@pytest.mark.parametrize("route, item, bad", [
    (BY_NAME["record_observations"], observation, {"price": "19.999"}),
    (BY_NAME["record_observations"], observation, {"price": "0"}),
    (BY_NAME["record_sales"], sale, {"unit_price": "20.001"}),
    (BY_NAME["record_sales"], sale, {"currency": "USD"}),
], ids=["observation decimals", "observation zero", "sale decimals", "sale currency"])
def test_a_bad_line_deep_in_a_batch_is_named_by_its_index(world, route, item, bad):
    """Lines before it carry the same amounts, valid: checking each distinct amount once must
    still check every line."""
    lines = [item(world.listing) for _ in range(5)] + [{**item(world.listing), **bad}]
    (field_name,) = bad
    refused(world, lambda: world.send(route, {route.batch: lines}), field=f"{route.batch}[5].{field_name}")


@pytest.mark.parametrize("route", [r for r in ROUTES if "currency" in json.dumps(r.body(UNKNOWN))],
                         ids=lambda r: r.name)
@pytest.mark.parametrize("currency", ["XYZ", "gbp", "GB", "", 826, None, "USD"])
def test_an_unknown_or_foreign_currency_is_refused(world, route, currency):
    body = route.body(world.listing)
    path = next(p for p in ("currency", "listings.0.currency", "observations.0.currency", "sales.0.currency")
                if _has(body, p))
    if route.name == "open_shop" and currency == "USD":
        pytest.skip("a shop may be opened in any supported currency")
    refused(world, lambda: world.send(route, with_value(body, path, currency)), field=dotted_to_field(path))


def _has(body, path: str) -> bool:
    try:
        target = body
        for p in path.split("."):
            target = target[int(p) if p.isdigit() else p]
        return True
    except (KeyError, IndexError, TypeError):
        return False


# -- text ------------------------------------------------------------------------------------------------
BAD_TEXT = {
    "huge": "x" * 100_000,
    "nul": "bad\x00value",
    "escape sequence": "\x1b[31mred",
    "bell": "ding\x07",
    "lone surrogate": "\ud800",
    "number": 42,
    "list": ["a"],
}


@pytest.mark.parametrize("route, path", cases("text"))
@pytest.mark.parametrize("value", BAD_TEXT.values(), ids=BAD_TEXT.keys())
def test_bad_text_is_refused_naming_the_field(world, route, path, value):
    body = with_value(route.body(world.listing), path, value)
    if isinstance(value, str) and not value.isascii() and "\ud800" in value:
        raw = json.dumps(body).encode()  # json.dumps escapes the surrogate as \\ud800: valid JSON text
        refused(world, lambda: world.send(route, raw=raw), field=dotted_to_field(path), status=422)
    else:
        refused(world, lambda: world.send(route, body), field=dotted_to_field(path), status=422)


SQL = "Robert'); DROP TABLE pricing_events; --"


def events_holding(world: World, text: str) -> int:
    with psycopg.connect(world.database_url) as conn:
        return conn.execute("SELECT count(*) FROM pricing_events WHERE position(%s in convert_from(state, 'UTF8')) > 0",
                            [json.dumps(text)[1:-1]]).fetchone()[0]


@pytest.mark.parametrize("route, path", [p for p in cases("text") if p.values[0].name in
                                         ("open_shop", "register_listings", "set_price", "record_sales")])
def test_sql_in_strings_is_stored_verbatim_and_harmless(world, route, path):
    body = with_value(route.body(world.listing), path, SQL)
    if route.name == "set_price":  # a new price each time, so that the change (and its text) is recorded
        current = world.client.get(f"/shops/{world.shop}/listings/{world.listing}", headers=world.headers).json()
        body["price"] = "21.00" if current["price"] != "21.00" else "22.00"
    before = events_holding(world, SQL)
    response = world.send(route, body)
    assert response.status_code in (200, 201), response.text
    assert events_holding(world, SQL) > before  # the table is still there, holding the text exactly as sent


# -- batches ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("route", [r for r in ROUTES if r.batch], ids=lambda r: r.name)
def test_a_batch_over_ten_thousand_items_is_refused(world, route):
    one = route.body(world.listing)[route.batch][0]
    body = {**route.body(world.listing), route.batch: [one] * (MAX_BATCH + 1)}
    refused(world, lambda: world.send(route, body), field=route.batch, status=422)


@pytest.mark.parametrize("route", [r for r in ROUTES if r.batch], ids=lambda r: r.name)
def test_an_empty_batch_is_refused(world, route):
    refused(world, lambda: world.send(route, {**route.body(world.listing), route.batch: []}), field=route.batch,
            status=422)


# -- ids and tenancy --------------------------------------------------------------------------------------
WITH_SHOP = [r for r in ROUTES if "{shop}" in r.path]


@pytest.mark.parametrize("route", WITH_SHOP, ids=lambda r: r.name)
def test_another_tenants_shop_is_404_exactly_like_an_unknown_one(world, route):
    body = route.body(world.other_listing if route.has_listing else world.listing)
    unknown = refused(world, lambda: world.send(route, body, shop=UNKNOWN), status=404)
    theirs = refused(world, lambda: world.send(route, body, shop=world.other_shop, listing=world.other_listing),
                     status=404)
    assert theirs == unknown


@pytest.mark.parametrize("route", [r for r in ROUTES if r.has_listing], ids=lambda r: r.name)
def test_another_tenants_listing_is_404_exactly_like_an_unknown_one(world, route):
    body = route.body(world.listing)
    unknown = refused(world, lambda: world.send(route, body, listing=UNKNOWN), status=404)
    theirs = refused(world, lambda: world.send(route, body, listing=world.other_listing), status=404)
    assert theirs == unknown


@pytest.mark.parametrize("route", [r for r in ROUTES if r.name in ("bulk_set_prices", "record_observations",
                                                                   "record_sales")], ids=lambda r: r.name)
def test_another_tenants_listing_inside_a_body_is_refused_like_an_unknown_one(world, route):
    unknown = refused(world, lambda: world.send(route, route.body(UNKNOWN)))
    theirs = refused(world, lambda: world.send(route, route.body(world.other_listing)))
    assert theirs == unknown and unknown["field"].endswith("[0].listing_id")


@pytest.mark.parametrize("route", WITH_SHOP, ids=lambda r: r.name)
@pytest.mark.parametrize("bad_id", ["not-a-uuid", "1", "'; DROP TABLE pricing_events; --"])
def test_a_malformed_id_in_the_path_is_refused(world, route, bad_id):
    refused(world, lambda: world.send(route, route.body(world.listing), shop=bad_id), field="shop_id")


# -- size and identity ------------------------------------------------------------------------------------
@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.name)
def test_a_body_over_the_size_limit_is_413(world, route):
    body = {**route.body(world.listing), "padding": "x" * (8 * 1024 * 1024 + 1)}
    refused(world, lambda: world.send(route, body), status=413)


@pytest.mark.parametrize("route", ROUTES[:3], ids=lambda r: r.name)
def test_a_chunked_body_over_the_size_limit_is_413(world, route):
    def chunks():
        yield b'{"padding": "'
        for _ in range(9):
            yield b"x" * (1024 * 1024)
        yield b'"}'

    refused(world, lambda: world.send(route, raw=chunks()), status=413)


BAD_CREDENTIALS = {
    "none": None,
    "empty": "",
    "no scheme": "Bearer",
    "basic": "Basic YWxpY2U6c2VjcmV0",
    "garbage token": "Bearer not.a.token",
    "unsigned token": "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
    "unknown api key": "Bearer ek_" + "0" * 40,
    "sql": "Bearer ' OR 1=1; --",
}


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.name)
@pytest.mark.parametrize("authorization", BAD_CREDENTIALS.values(), ids=BAD_CREDENTIALS.keys())
def test_missing_or_bad_credentials_are_401(world, route, authorization):
    headers = {} if authorization is None else {"Authorization": authorization}
    before = world.written()
    response = httpx.request(route.method, world.base_url + route.url(world.shop, world.listing),
                             json=route.body(world.listing), headers=headers)
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert world.written() == before


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.name)
@pytest.mark.parametrize("header", ["Idempotency-Key", "X-Correlation-Id"])
def test_a_malformed_key_or_correlation_header_is_refused_naming_it(world, route, header):
    bad = {header: "a b; DROP TABLE x" + "y" * 300}
    refused(world, lambda: world.send(route, route.body(world.listing), headers=bad), field=header)
