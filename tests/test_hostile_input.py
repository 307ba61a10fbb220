"""Hostile input on every command endpoint. Whatever a client sends, the answer is a 4xx
application/problem+json naming the input at fault, nothing is written, and nothing answers 500.

Each route is described once (a valid body, where its money, text and batch fields are); every
hostile case is then run against every route that has such a field.
"""

from __future__ import annotations

import base64
import copy
import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Callable
from urllib.parse import quote

import httpx
import psycopg
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import codec
from commands.models import BUSINESS_TIME_SKEW, EARLIEST_BUSINESS_TIME
from conftest import listing_spec, price_changes
from projections.queries import VIEWS

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
def test_sql_in_strings_is_stored_verbatim_and_harmless(world, route, path, engine):
    body = with_value(route.body(world.listing), path, SQL)
    if route.name == "set_price":  # a new price each time, so that the change (and its text) is recorded
        current = world.client.get(f"/shops/{world.shop}/listings/{world.listing}", headers=world.headers).json()
        body["price"] = "21.00" if current["price"] != "21.00" else "22.00"
    before = events_holding(world, SQL)
    response = world.send(route, body)
    assert response.status_code in (200, 201), response.text
    if path == "reason":  # a reason is sealed in the log (erasable): it opens to the text exactly as sent
        assert engine.identity.vault.reveal(price_changes(engine, world.listing)[-1].meta.reason) == SQL
    else:
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


# -- business time is bounded at the edge (commands/models.py: BusinessTime) --------------------------
ABSURD_TIMES = ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59Z",
                "0001-01-01T00:00:00Z", "1999-12-31T23:59:59Z", "1970-01-01T00:00:00Z", "2999-01-01T00:00:00Z"]
BUSINESS_TIMES = [  # (route, body with the time at `path`, path)
    (BY_NAME["record_observations"], lambda listing, t: {"observations": [{**observation(listing), "observed_at": t}]},
     "observations.0.observed_at"),
    (BY_NAME["record_sales"], lambda listing, t: {"sales": [{**sale(listing), "sold_at": t}]}, "sales.0.sold_at"),
    (BY_NAME["rollback_listing"], lambda _, t: {"to_time": t, "reason": "r"}, "to_time"),
    (BY_NAME["bulk_rollback"], lambda _, t: {"since": t, "reason": "r"}, "since"),
    (BY_NAME["bulk_rollback"], lambda _, t: {"until": t, "reason": "r"}, "until"),
]
time_cases = [pytest.param(route, body, path, id=f"{route.name}:{path}") for route, body, path in BUSINESS_TIMES]


def offsets():
    """Fixed UTC offsets as a client may send them: every whole minute that ISO 8601 and Python
    accept (±23:59), beyond the ±14:00 of real zones and the ±15:59 PostgreSQL can store."""
    return st.integers(-(24 * 60 - 1), 24 * 60 - 1).map(lambda m: timezone(timedelta(minutes=m)))


def outside_the_window():
    now = datetime.now(timezone.utc)
    return st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59),
                        timezones=offsets()).filter(
        lambda t: t < EARLIEST_BUSINESS_TIME or t > now + BUSINESS_TIME_SKEW + timedelta(minutes=1))


@pytest.mark.parametrize("route, body, path", time_cases)
@pytest.mark.parametrize("moment", ABSURD_TIMES)
def test_an_absurd_business_time_is_refused_naming_it(world, route, body, path, moment):
    refused(world, lambda: world.send(route, body(world.listing, moment)), field=dotted_to_field(path), status=422)


@pytest.mark.parametrize("route, body, path", time_cases)
@settings(max_examples=25, deadline=None)
@given(moment=outside_the_window())
def test_any_business_time_outside_the_window_is_refused(world, route, body, path, moment):
    refused(world, lambda: world.send(route, body(world.listing, moment.isoformat())), field=dotted_to_field(path),
            status=422)


@settings(max_examples=25, deadline=None)
@given(moment=st.datetimes(min_value=datetime(2000, 1, 2), max_value=datetime.now() - timedelta(days=1),
                           timezones=offsets()))
@example(moment=datetime(2026, 1, 1, 10, tzinfo=timezone(timedelta(hours=23, minutes=59))))
@example(moment=datetime(2026, 1, 1, 10, tzinfo=timezone(-timedelta(hours=23, minutes=59))))
def test_any_business_time_inside_the_window_is_accepted(world, moment):
    for route, body, _ in BUSINESS_TIMES[:2]:
        response = world.send(route, body(world.listing, moment.isoformat()))
        assert response.status_code == 201, response.text


def test_every_time_field_of_every_command_is_a_bounded_business_time():
    """Fields added later too: any datetime in a command model, a line of a batch, or what the
    importer builds (it builds models.SaleIn), refuses times outside the window."""
    from pydantic import TypeAdapter

    from commands import models, rule_models

    found = []
    for module in (models, rule_models):
        for name, model in vars(module).items():
            model_fields = getattr(model, "__pydantic_fields__", None)
            if not isinstance(model, type) or not model_fields or model.__module__ != module.__name__:
                continue
            for field_name, info in model_fields.items():
                if "datetime" not in str(info.annotation).lower():  # datetime, AwareDatetime...
                    continue
                found.append(f"{name}.{field_name}")
                adapter = TypeAdapter(info.rebuild_annotation())
                for moment in ABSURD_TIMES:
                    with pytest.raises(ValueError):
                        adapter.validate_python(moment)
                assert adapter.validate_python(WHEN) is not None
    assert {"ObservationIn.observed_at", "SaleIn.sold_at", "RollbackListing.to_time", "BulkRollback.since",
            "BulkRollback.until"} <= set(found)


# -- times in queries never overflow (commands/models.py: QueryTime) ----------------------------------
def time_query_urls(world: World) -> list[str]:
    views = [f"/shops/{world.shop}/analytics/{v.name}" + ("?bucket=week&" if v.bucketed else "?")
             for v in VIEWS.values() if v.time_column or v.bucketed]
    return [u + p for u in views for p in ("since={}", "until={}")] + [
        "/audit/events?since={}", "/audit/events?until={}", "/audit/export?since={}", "/audit/export?until={}",
        f"/shops/{world.shop}/listings/{world.listing}?at={{}}"]


@settings(max_examples=15, deadline=None)
@given(moment=st.one_of(st.sampled_from(ABSURD_TIMES),
                        st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59),
                                     timezones=offsets()).map(datetime.isoformat)))
def test_a_time_in_a_query_never_answers_5xx(world, moment):
    """Year 1 at +14:00 and year 9999 at -14:00 are outside Python's datetime once in UTC: the
    filter means "from the beginning" / "until the end", or is refused, never a 500."""
    for template in time_query_urls(world):
        response = world.client.get(template.format(quote(moment)), headers=world.headers)
        assert response.status_code < 500, (template, moment, response.text[:300])
        assert response.status_code < 400 or response.headers["content-type"] == "application/problem+json"


# -- free text: one policy for control characters (commands/models.py: text) -------------------------
UNSAFE_CHARACTERS = [chr(c) for c in (*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), *range(0x7F, 0xA0))] + [
    "\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069"]
LINE_BREAKS = ["\t", "\n", "\r", "\u2028", "\u2029"]
MULTI_LINE_FIELDS = {"reason"}  # where tab and line breaks are welcome


@pytest.mark.parametrize("route, path", cases("text"))
@settings(max_examples=15, deadline=None)
@given(prefix=st.text(st.characters(categories=["L", "N"]), max_size=5), bad=st.sampled_from(UNSAFE_CHARACTERS),
       suffix=st.text(st.characters(categories=["L", "N"]), max_size=5))
def test_an_unsafe_character_anywhere_in_free_text_is_refused(world, route, path, prefix, bad, suffix):
    body = with_value(route.body(world.listing), path, f"{prefix}{bad}{suffix}")
    refused(world, lambda: world.send(route, body), field=dotted_to_field(path), status=422)


SINGLE_LINE_TEXT = [case for case in cases("text") if case.values[1].rsplit(".", 1)[-1] not in MULTI_LINE_FIELDS]


@pytest.mark.parametrize("route, path", SINGLE_LINE_TEXT)
@pytest.mark.parametrize("brk", LINE_BREAKS, ids=repr)
def test_line_breaks_are_refused_in_single_line_text_only(world, route, path, brk):
    body = with_value(route.body(world.listing), path, f"a{brk}b")
    refused(world, lambda: world.send(route, body), field=dotted_to_field(path), status=422)


def test_a_reason_may_span_lines_and_any_script(world, engine):

    current = world.client.get(f"/shops/{world.shop}/listings/{world.listing}", headers=world.headers).json()
    price = "23.00" if current["price"] != "23.00" else "24.00"
    reason = "Soldes d'hiver\n\t– 冬のセール – تخفيضات"
    response = world.send(BY_NAME["set_price"], {"price": price, "currency": "GBP", "reason": reason})
    assert response.status_code == 200, response.text
    assert engine.identity.vault.reveal(price_changes(engine, world.listing)[-1].meta.reason) == reason


# -- integers are JSON integers (commands/models.py: integer) ---------------------------------------
INTEGER_FIELDS = [  # (route, body, dotted path of an integer field)
    (BY_NAME["rollback_listing"], lambda _: {"to_version": 1}, "to_version"),
    (BY_NAME["rollback_listing"], lambda _: {"undo_version": 1}, "undo_version"),
    (BY_NAME["rollback_listing"], lambda _: {"to_version": 1, "expected_version": 1}, "expected_version"),
    (BY_NAME["set_price"], lambda _: {"price": "21.00", "currency": "GBP", "expected_version": 1}, "expected_version"),
    (BY_NAME["set_guardrails"], lambda _: {"currency": "GBP", "expected_version": 1}, "expected_version"),
    (BY_NAME["bulk_set_prices"], lambda listing: {"changes": [{"listing_id": listing, "price": "22.00",
                                                               "expected_version": 1}], "currency": "GBP"},
     "changes.0.expected_version"),
    (BY_NAME["record_sales"], lambda listing: {"sales": [sale(listing)]}, "sales.0.quantity"),
    (BY_NAME["bulk_rollback"], lambda _: {"rule": "x", "rule_version": 1}, "rule_version"),
    (Route("set_automation", "PUT", "/shops/{shop}/listings/{listing}/automation", lambda _: {}),
     lambda _: {"max_daily_changes": 6}, "max_daily_changes"),
    (Route("set_automation", "PUT", "/shops/{shop}/listings/{listing}/automation", lambda _: {}),
     lambda _: {"cooldown_minutes": 30}, "cooldown_minutes"),
    (Route("define_rule", "POST", "/shops/{shop}/rules", lambda _: {}),
     lambda _: {"name": "r", "kind": "match_lowest", "max_age_minutes": 60}, "max_age_minutes"),
    (Route("dry_run", "POST", "/shops/{shop}/rules/dry-run", lambda _: {}),
     lambda _: {"rule": {"kind": "match_lowest"}, "limit": 10}, "limit"),
]
NOT_INTEGERS = {"true": True, "false": False, "string": "1", "fraction": 1.5, "list": [1], "too big": 2**64,
                "arabic-indic digit": "\u0661", "fullwidth digit": "\uff11"}


@pytest.mark.parametrize("route, body, path", [pytest.param(r, b, p, id=f"{r.name}:{p}") for r, b, p in INTEGER_FIELDS])
@pytest.mark.parametrize("value", NOT_INTEGERS.values(), ids=NOT_INTEGERS.keys())
def test_an_integer_field_takes_only_a_json_integer(world, route, body, path, value):
    refused(world, lambda: world.send(route, with_value(body(world.listing), path, value)),
            field=dotted_to_field(path), status=422)


@pytest.mark.parametrize("route, body, path", [pytest.param(r, b, p, id=f"{r.name}:{p}") for r, b, p in INTEGER_FIELDS])
def test_an_integer_field_refuses_a_json_number_with_a_fraction_part(world, route, body, path):
    """1.0 is read as Decimal('1.0') (api/routing.py): an integer field refuses it too."""
    text = json.dumps(with_value(body(world.listing), path, "__N__")).replace('"__N__"', "1.0")
    refused(world, lambda: world.send(route, raw=text.encode()), field=dotted_to_field(path), status=422)


# -- reads survive any value that was accepted (codec/time_loaders.py) -------------------------------
BEYOND_PYTHON = ["9999-12-31T23:00:00-14:00", "0001-01-01T00:00:00+14:00"]  # years 10000 and 0 in UTC


@pytest.fixture(scope="module")
def shop_with_facts_beyond_python(world, engine, database_url, accounts):
    """A shop holding observations and sales at times Python cannot represent in UTC, recorded as an
    older server accepted them: through the engine, past the edge's validation."""
    from types import SimpleNamespace

    from commands import models
    from commands.context import CommandContext
    from domain.meta import Actor
    from projections.projector import InBackground, Projector
    from read.model_runs import refresh

    me = accounts.new("seller")
    shop, listing = open_shop_with_listing(world.client, me)
    ctx = CommandContext(actor=Actor("pytest"), tenant_id=me.tenant_id)
    observations = [SimpleNamespace(listing_id=uuid.UUID(listing), competitor=f"rival-{i}", price=Decimal("19.00"),
                                    currency="GBP", observed_at=datetime.fromisoformat(t), source="manual")
                    for i, t in enumerate(BEYOND_PYTHON)]
    sales = [SimpleNamespace(listing_id=uuid.UUID(listing), quantity=1, unit_price=Decimal("20.00"), currency="GBP",
                             order_id="o-1", transaction_id=f"t-{i}", sold_at=datetime.fromisoformat(t))
             for i, t in enumerate(BEYOND_PYTHON)]
    engine.listings.record_observations(ctx, uuid.UUID(shop), models.RecordObservations.model_construct(
        observations=observations, source="manual", reason=""))
    engine.listings.record_sales(ctx, uuid.UUID(shop), models.RecordSales.model_construct(sales=sales, source="manual", reason=""))
    background = InBackground.projector(Projector(database_url, codec.to_domain_event)).start()
    try:
        deadline = time.monotonic() + 60
        while projected_beyond_python(database_url, shop) < 4:
            assert time.monotonic() < deadline, "the projector did not project the shop's facts"
            time.sleep(0.1)
    finally:
        background.stop()
    refresh(database_url, shop, processes=1)  # the models are fitted on these facts too, so their reads serve runs
    auditor = accounts.new("auditor", me.tenant_id)
    return me, auditor, shop, listing


def projected_beyond_python(database_url: str, shop: str) -> int:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT (SELECT count(*) FROM analytics.competitor_observations WHERE shop_id = %(s)s AND"
            "        observed_at NOT BETWEEN '0001-01-01Z' AND '9999-12-31T23:59:59Z')"
            " + (SELECT count(*) FROM analytics.sales WHERE shop_id = %(s)s AND"
            "        sold_at NOT BETWEEN '0001-01-01Z' AND '9999-12-31T23:59:59Z')", {"s": shop}).fetchone()[0]


def read_urls(engine, shop: str, listing: str) -> list[str]:
    """Every GET route of a shop in the app's own OpenAPI document, in every format and bucket."""
    from api.app import create_app

    urls = []
    for path, operations in create_app(engine).openapi()["paths"].items():
        if "get" not in operations or not path.startswith("/shops/{shop_id}"):
            continue
        url = path.replace("{shop_id}", shop).replace("{listing_id}", listing)
        if "{" in url:
            continue  # another resource (a rule...): nothing of these facts
        names = {p["name"] for p in operations["get"].get("parameters", [])}
        buckets = ["hour", "day", "week"] if "bucket" in names else [None]
        formats = ["json", "csv", "parquet"] if "format" in names else [None]
        for bucket in buckets:
            for fmt in formats:
                query = "&".join(f"{k}={v}" for k, v in (("bucket", bucket), ("format", fmt)) if v)
                urls.append(url + (f"?{query}" if query else ""))
    return urls


def test_every_read_of_a_shop_survives_times_python_cannot_hold(world, engine, shop_with_facts_beyond_python):
    me, auditor, shop, listing = shop_with_facts_beyond_python
    failures = []
    urls = read_urls(engine, shop, listing)
    assert any("competitor-bands" in u for u in urls) and any("explain" in u for u in urls)
    watched = world.client.put(f"/shops/{shop}/marketplace/etsy/watches/{listing}", json={"keywords": "mug"}, headers=me)
    assert watched.status_code == 200, watched.text  # so that the watch's read has something to answer
    for url in urls:
        response = world.client.get(url, headers=me)
        if response.status_code != 200:
            failures.append(f"GET {url}: {response.status_code} {response.text[:200]}")
    for body in ({"rule": {"kind": "match_lowest", "max_age_minutes": None}},
                 {"rule": {"kind": "beat_lowest", "percent": "5"}, "listing_ids": [listing]}):
        response = world.client.post(f"/shops/{shop}/rules/dry-run", json=body, headers=me)
        if response.status_code != 200:
            failures.append(f"dry-run {body}: {response.status_code} {response.text[:200]}")
    for url in ("/audit/events?limit=1000", f"/audit/events?shop_id={shop}&since=0001-01-01T00:00:00%2B14:00",
                "/audit/export", f"/aggregates/{listing}/history"):
        response = world.client.get(url, headers=auditor)
        if response.status_code != 200:
            failures.append(f"GET {url}: {response.status_code} {response.text[:200]}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("view", [v for v in VIEWS if v in ("competitor-observations", "sales", "competitor-bands",
                                                             "sales-by-shop", "sales-by-listing")])
def test_paging_through_times_python_cannot_hold_ends_and_shows_each_row_once(world, shop_with_facts_beyond_python,
                                                                              view):
    """The cursor carries the sort key as PostgreSQL prints it: a clamped time never repeats a page."""
    me, _, shop, _ = shop_with_facts_beyond_python
    params = {"limit": 1, **({"bucket": "week"} if VIEWS[view].bucketed else {})}
    whole = world.client.get(f"/shops/{shop}/analytics/{view}", params={**params, "limit": 1000}, headers=me).json()
    pages, cursor = [], None
    for _ in range(len(whole["items"]) + 1):
        page = world.client.get(f"/shops/{shop}/analytics/{view}", headers=me,
                                params={**params, **({"cursor": cursor} if cursor else {})}).json()
        pages += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert cursor is None and pages == whole["items"] and len(pages) >= 2


# -- paging cursors are opaque and signed (projections/queries.py) --------------------------------------
def b64(value) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


FORGED_CURSORS = {  # the shapes an unsigned cursor of [time, position] once took, and worse
    "huge position": b64(["2026-11-25T10:00:00+00:00", "9" * 30]),
    "negative position": b64(["2026-11-25T10:00:00+00:00", "-99999999999999999999"]),
    "boolean": b64([True, False]),
    "null": b64(None),
    "object": b64({"a": 1}),
    "too many keys": b64(["2026-11-25T10:00:00+00:00", "1", "2"]),
    "one key": b64(["2026-11-25T10:00:00+00:00"]),
    "arabic-indic digits": b64(["2026-11-25T10:00:00+00:00", "\u0661\u0662"]),
    "fullwidth digits": b64(["\uff12\uff10\uff12\uff16-11-25T10:00:00+00:00", "1"]),
    "year 10000": b64(["10000-01-01 13:00:00+00", "1"]),
    "number not string": b64(["2026-11-25T10:00:00+00:00", 1e308]),
    "nested": b64([["x"], {"y": 1}]),
    "not base64": "%%%%",
    "empty": "",
    "dot only": ".",
    "three parts": "a.b.c",
    "non-ascii": "\u00e9t\u00e9.\u00e9t\u00e9",
    "nul": "abc\x00.def",
    "long": "A" * 501,
}


@pytest.mark.parametrize("view", ["competitor-observations", "sales", "sales-by-shop", "prices"])
@pytest.mark.parametrize("cursor", FORGED_CURSORS.values(), ids=FORGED_CURSORS.keys())
def test_a_forged_cursor_is_refused_naming_it(world, view, cursor):
    params = {"cursor": cursor, **({"bucket": "day"} if VIEWS[view].bucketed else {})}
    refused(world, lambda: world.client.get(f"/shops/{world.shop}/analytics/{view}", params=params,
                                            headers=world.headers), field="cursor")


@settings(max_examples=40, deadline=None)
@given(cursor=st.one_of(st.text(max_size=200), st.binary(max_size=150).map(lambda b: base64.urlsafe_b64encode(b).decode()),
                        st.tuples(st.binary(max_size=80), st.binary(max_size=20)).map(
                            lambda t: ".".join(base64.urlsafe_b64encode(x).decode().rstrip("=") for x in t))))
def test_any_cursor_the_server_did_not_give_is_refused(world, cursor):
    refused(world, lambda: world.client.get(f"/shops/{world.shop}/analytics/sales", params={"cursor": cursor},
                                            headers=world.headers), field="cursor")


def test_a_real_cursor_pages_only_its_own_view_and_shop_and_refuses_any_change(world, accounts,
                                                                              shop_with_facts_beyond_python):
    me, _, shop, _ = shop_with_facts_beyond_python  # two sale lines, projected
    page = world.client.get(f"/shops/{shop}/analytics/sales", params={"limit": 1}, headers=me).json()
    cursor = page["next_cursor"]
    assert cursor and world.client.get(f"/shops/{shop}/analytics/sales", params={"cursor": cursor},
                                       headers=me).status_code == 200
    payload, mac = cursor.split(".")
    tampered = [payload[:-1] + ("A" if payload[-1] != "A" else "B") + "." + mac,
                payload + "." + mac[:-1] + ("A" if mac[-1] != "A" else "B"), payload, payload + "." + mac + "=="]
    for bad in tampered:
        refused(world, lambda: world.client.get(f"/shops/{shop}/analytics/sales", params={"cursor": bad},
                                                headers=me), field="cursor")
    for url, headers in ((f"/shops/{shop}/analytics/competitor-observations", me),  # another view
                         (f"/shops/{world.shop}/analytics/sales", world.headers)):  # another shop
        refused(world, lambda: world.client.get(url, params={"cursor": cursor}, headers=headers), field="cursor")


# -- positions the audit routes page by are strict integers -----------------------------------------------
AUDIT_POSITIONS = [("/audit/events", "after"), ("/audit/export", "from"), ("/audit/export", "to"),
                   ("/audit/verify", "from_position"), ("/aggregates/{listing}/history", "after_version")]
NOT_POSITIONS = ["true", "\u0661\u0662", "\uff11\uff12", "9" * 30, "-1", "1e3", "0x10", "\x00", "1.5", "", "[1]",
                 " 1", "1_000", "+1"]


@pytest.mark.parametrize("path, name", AUDIT_POSITIONS, ids=[f"{p}?{n}" for p, n in AUDIT_POSITIONS])
@pytest.mark.parametrize("value", NOT_POSITIONS, ids=repr)
def test_a_forged_audit_position_is_refused_naming_it(world, accounts, auditor, path, name, value):
    refused(world, lambda: world.client.get(path.format(listing=world.listing), params={name: value},
                                            headers=auditor), field=name, status=422)


@pytest.fixture(scope="module")
def auditor(world, accounts):
    return accounts.new("auditor", world.headers.tenant_id)


# -- credentials: codes are ASCII digits, names are text, nothing reaches PostgreSQL unchecked ----------
@pytest.fixture(scope="module")
def auth_client(engine):
    """The app with login limits out of the way: these tests send hundreds of refused logins."""
    from api.app import create_app
    from api.auth import AuthSettings
    from api.server import running

    settings_ = AuthSettings(login_per_minute=10**6, token_per_minute=10**6)
    with running(create_app(engine, auth_settings=settings_)) as url, httpx.Client(base_url=url, timeout=60) as client:
        yield client


NOT_TOTP_CODES = {"arabic-indic": "\u0661\u0662\u0663\u0664\u0665\u0666", "fullwidth": "\uff11\uff12\uff13\uff14\uff15\uff16",
                  "one fullwidth": "12345\uff16", "devanagari": "\u0967\u0968\u0969\u096a\u096b\u096c",
                  "superscript": "\u00b9\u00b2\u00b3\u2074\u2075\u2076", "nul": "123\x00456", "tab": "123\t456",
                  "em space": "123\u2003456", "five digits": "12345", "seven digits": "1234567", "letters": "abcdef",
                  "number": 123456, "true": True, "empty": ""}
NOT_RECOVERY_CODES = {"nul": "k7qm\x00-2xwp", "escape": "\x1b[2J", "fullwidth": "\uff4b\uff17\uff51\uff4d",
                      "accented": "k7qm-2xwp-9fh\u00e9", "long": "a" * 65, "empty": "", "number": 12}


def code_routes(accounts) -> list[tuple[str, dict, Callable[[object], dict]]]:
    """(path, headers, value -> body) of every route taking a TOTP code."""
    me = accounts.new("seller")
    return [("/auth/login/mfa", {}, lambda code: {"challenge": "c" * 40, "code": code}),
            ("/auth/mfa/confirm", dict(me), lambda code: {"code": code})]


@pytest.mark.parametrize("code", NOT_TOTP_CODES.values(), ids=NOT_TOTP_CODES.keys())
def test_a_totp_code_is_six_ascii_digits_on_every_route(auth_client, accounts, code):
    for path, headers, body in code_routes(accounts):
        response = auth_client.post(path, json=body(code), headers=headers)
        assert response.status_code == 422, (path, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["field"] == "code"


@pytest.mark.parametrize("code", NOT_RECOVERY_CODES.values(), ids=NOT_RECOVERY_CODES.keys())
def test_a_recovery_code_is_refused_unless_it_could_be_one(auth_client, code):
    response = auth_client.post("/auth/login/mfa", json={"challenge": "c" * 40, "recovery_code": code})
    assert (response.status_code, response.json().get("field")) == (422, "recovery_code"), response.text


@pytest.mark.parametrize("name", ["username", "tenant"])
@pytest.mark.parametrize("bad", ["\x00", "\x1b", "\x7f", "\x85", "\u202e", "\n"], ids=repr)
def test_a_login_name_with_a_control_character_is_refused_naming_it(auth_client, name, bad):
    body = {"tenant": "acme", "username": "alice", "password": "a long passphrase", name: f"ali{bad}ce"}
    response = auth_client.post("/auth/login", json=body)
    assert (response.status_code, response.json().get("field")) == (422, name), response.text


LOGIN_STRINGS = {  # every string field of the credential routes, with what else its body needs
    "/auth/login": ({"tenant": "acme", "username": "alice", "password": "pw"}, ("tenant", "username", "password")),
    "/auth/login/mfa": ({"challenge": "c" * 40, "code": "123456"}, ("challenge", "code")),
    "/auth/token": ({"refresh_token": "r" * 40}, ("refresh_token",)),
}


@settings(max_examples=60, deadline=None)
@given(path=st.sampled_from(sorted(LOGIN_STRINGS)), data=st.data(),
       value=st.text(st.characters(codec="utf-8"), max_size=40))
def test_no_credential_input_answers_5xx(auth_client, path, data, value):
    """Any text in any field (a NUL in a password included: it is hashed, never sent to PostgreSQL)."""
    body, names = LOGIN_STRINGS[path]
    name = data.draw(st.sampled_from(names))
    response = auth_client.post(path, json={**body, name: value})
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"] == "application/problem+json"


SECRET_VALUES = ["\x00", "pass\x00word", "\x1b[2J", "\u202e", "\ud800x", "\uff11" * 12]


@pytest.mark.parametrize("value", SECRET_VALUES, ids=repr)
def test_any_characters_in_a_password_never_answer_5xx(auth_client, accounts, value):
    """Passwords are exempt from the text policy (hashed, never stored or shown): whatever they hold,
    they never reach PostgreSQL, and every answer is a problem."""
    me = accounts.new("seller")
    for path, body in (("/auth/password", {"current_password": value, "new_password": "a long new passphrase 1"}),
                       ("/auth/password", {"current_password": "not my password", "new_password": value}),
                       ("/auth/mfa/disable", {"password": value}),
                       ("/auth/login", {"tenant": me.tenant_id, "username": me.username, "password": value})):
        response = auth_client.post(path, content=json.dumps(body).encode(),
                                    headers={**me, "Content-Type": "application/json"})
        assert 400 <= response.status_code < 500, (path, response.text)
        assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("code", [c for c in NOT_TOTP_CODES.values() if isinstance(c, str)], ids=repr)
def test_behind_the_edge_a_code_in_other_digits_matches_nothing_and_raises_nothing(code):
    """Defence in depth for callers that skip the edge (the CLI, a policy): pyotp compares codes with
    hmac.compare_digest, which raises on non-ASCII text."""
    import pyotp

    from commands.credentials import matching_totp_step

    assert matching_totp_step(pyotp.random_base32(), code) is None
