"""The fake Etsy: OAuth 2.0 with PKCE, the listings, inventory and receipts endpoints, rate limits.

What it holds to, as Etsy does:
- PKCE S256: the token exchange checks the verifier against the challenge; a code is single use
  (spent by any attempt) and short-lived; redirect_uri and client_id must match the authorize call.
- Access tokens expire (`access_ttl_s`); every refresh answers a new refresh token and the old one
  is refused from then on; `password_changed(user)` revokes every token of that seller.
- Every call needs `x-api-key: keystring:shared_secret` (the keystring alone is refused: 403)
  and a bearer token of the shop's owner.
- Rate limits per app: a per-second window (whole wall-clock seconds) and a daily quota, told in
  x-limit-per-second / x-remaining-this-second / x-limit-per-day / x-remaining-today; over them:
  429 without those headers. `storm(n)` answers the next n calls 429 whatever the budget.
- Inventory PUT replaces the whole inventory: products left out are gone, a product sent without
  its property_values loses its variations; product_id, offering_id, is_deleted and money objects
  are refused in a PUT, as Etsy refuses them.
- Lists page with `limit` (the document's bounds: at most 100) and `offset`; money is
  {amount, divisor, currency_code}; receipts filter on `min_last_modified` (epoch seconds).
- `error_rate` (seeded) or `fail_next(n)` answers 5xx, before any effect.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import random
import secrets
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from urllib.parse import parse_qs, urlencode

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

SPEC = json.loads(Path(__file__).with_name("etsy_v3_subset.json").read_text())
LISTINGS_PATH = "/v3/application/shops/{shop_id}/listings/active"
ACTIVE_PATH = "/v3/application/listings/active"  # findAllListingsActive: every shop's, API key only
BATCH_PATH = "/v3/application/listings/batch"  # getListingsByListingIds (newer than the document): <= 100 ids
BATCH_MAX = 100
INVENTORY_PATH = "/v3/application/listings/{listing_id}/inventory"
RECEIPTS_PATH = "/v3/application/shops/{shop_id}/receipts"
SHOP_PATH = "/v3/application/shops/{shop_id}"
CODE_TTL_S = 300
SCOPES = {"listings_r", "listings_w", "transactions_r", "shops_r"}
PUT_REFUSED_FIELDS = ("product_id", "offering_id", "is_deleted")


def _limit_bounds(path: str) -> tuple[int, int, int]:
    """(minimum, maximum, default) of the operation's `limit`, from Etsy's document."""
    for parameter in SPEC["paths"][path]["get"]["parameters"]:
        if parameter["name"] == "limit":
            schema = parameter["schema"]
            return schema.get("minimum", 1), schema["maximum"], schema.get("default", 25)
    raise KeyError(f"{path} has no limit parameter")


def _default_of(schema: dict):
    if "$ref" in schema or "allOf" in schema or "oneOf" in schema:
        return money(Decimal(0), "USD")
    return {"integer": 0, "number": 0.0, "string": "", "boolean": False, "array": []}.get(schema.get("type"), None)


def template(schema_name: str) -> dict:
    """An object of one of the document's schemas with every required field present (type defaults)."""
    schema = SPEC["schemas"][schema_name]
    return {name: _default_of(schema["properties"].get(name, {})) for name in schema.get("required", [])}


def money(amount: Decimal, currency: str, divisor: int = 100) -> dict:
    return {"amount": int((amount * divisor).to_integral_value()), "divisor": divisor, "currency_code": currency}


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


@dataclass
class FakeEtsyConfig:
    keystring: str = "fakekeystring"
    shared_secret: str = "fakesharedsecret"
    access_ttl_s: float = 3600.0
    refresh_ttl_s: float = 90 * 24 * 3600.0
    per_second: int = 10
    per_day: int = 10_000
    error_rate: float = 0.0  # share of calls answered 500 (seeded)
    seed: int = 14


@dataclass
class FakeListing:
    listing_id: int
    shop_id: int
    title: str
    sku: str
    state: str
    currency: str
    inventory: dict  # as Etsy stores it: products with ids, offerings with money objects
    last_modified: int


@dataclass
class FakeShop:
    shop_id: int
    user_id: int
    currency: str
    listings: dict[int, FakeListing] = field(default_factory=dict)
    receipts: dict[int, dict] = field(default_factory=dict)


@dataclass
class Grant:
    user_id: int
    expires_at: float


class FakeEtsy:
    """The fake's state; `create_app(fake)` serves it. Methods are safe from any thread."""

    def __init__(self, config: FakeEtsyConfig | None = None):
        self.config = config or FakeEtsyConfig()
        self.lock = threading.Lock()
        self.shops: dict[int, FakeShop] = {}
        self.listings: dict[int, FakeListing] = {}
        self.codes: dict[str, dict] = {}
        self.access: dict[str, Grant] = {}
        self.refresh: dict[str, Grant] = {}
        self.consenting_user: int | None = None  # the seller "logged in" at the authorize page
        self.calls: list[tuple[float, str, str, int]] = []  # (time, method, path, status)
        self._window = (0, 0)  # (second, calls in it)
        self._day = (0, 0)
        self._storm = 0
        self._fail_next = 0
        self._random = random.Random(self.config.seed)
        self._ids = secrets.randbelow(10**6) * 10**9  # ids of two fakes (test modules) never meet in one database

    # -- the fake's world (what sellers and buyers do at Etsy) ---------------------------
    def _next_id(self) -> int:
        self._ids += 1
        return self._ids

    def add_shop(self, currency: str = "GBP") -> FakeShop:
        with self.lock:
            shop = FakeShop(self._next_id(), self._next_id(), currency)
            self.shops[shop.shop_id] = shop
            self.consenting_user = self.consenting_user or shop.user_id
            return shop

    def add_listing(self, shop_id: int, title: str, sku: str, price: Decimal, variations: int = 0,
                    state: str = "active") -> FakeListing:
        """A listing; with `variations`, that many products differing in one property (size),
        priced alike, with price_on_property naming it."""
        with self.lock:
            shop = self.shops[shop_id]
            listing = FakeListing(self._next_id(), shop_id, title, sku, state, shop.currency, {}, int(time.time()))
            products = [self._product(sku if not variations else f"{sku}-{i}", price, shop.currency,
                                      [{"property_id": 100, "property_name": "Size", "scale_id": None,
                                        "value_ids": [200 + i], "values": [f"size {i}"]}] if variations else [])
                        for i in range(max(variations, 1))]
            listing.inventory = {"products": products, "price_on_property": [], "quantity_on_property": [],
                                 "sku_on_property": [100] if variations else []}
            shop.listings[listing.listing_id] = self.listings[listing.listing_id] = listing
            return listing

    def _product(self, sku: str, price: Decimal, currency: str, property_values: list) -> dict:
        return {"product_id": self._next_id(), "sku": sku, "is_deleted": False, "property_values": property_values,
                "offerings": [{"offering_id": self._next_id(), "quantity": 10, "is_enabled": True,
                               "is_deleted": False, "price": money(price, currency)}]}

    def set_price_at_etsy(self, listing_id: int, price: Decimal) -> None:
        """The seller edits the price in Etsy's own pages (drift from the engine's view)."""
        with self.lock:
            listing = self.listings[listing_id]
            for product in listing.inventory["products"]:
                for offering in product["offerings"]:
                    offering["price"] = money(price, listing.currency)
            listing.last_modified = int(time.time())

    def describe_at_etsy(self, listing_id: int, title: str | None = None, state: str | None = None) -> None:
        """The seller renames the listing or takes it off sale (state inactive, sold_out) in Etsy's pages."""
        with self.lock:
            listing = self.listings[listing_id]
            listing.title, listing.state = title or listing.title, state or listing.state
            listing.last_modified = int(time.time())

    def price_of(self, listing_id: int) -> Decimal:
        """The listing's price: its first product's first offering (every product, when priced alike)."""
        with self.lock:
            return self._price_of(self.listings[listing_id])

    def add_receipt(self, shop_id: int, lines: list[tuple[int, int, Decimal]], status: str = "Paid",
                    at: int | None = None) -> dict:
        """A buyer's order: lines of (listing id, quantity, unit price). Buyer details are made up."""
        with self.lock:
            shop, now = self.shops[shop_id], at or int(time.time())
            receipt = template("ShopReceipt") | {
                "receipt_id": self._next_id(), "seller_user_id": shop.user_id, "buyer_user_id": self._next_id(),
                "name": "A. Buyer", "first_line": "1 High Street", "city": "Leeds", "payment_email": "buyer@example.com",
                "status": status, "is_paid": True, "create_timestamp": now, "update_timestamp": now,
                "created_timestamp": now, "updated_timestamp": now, "refunds": []}
            receipt["transactions"] = [
                template("ShopReceiptTransaction") | {
                    "transaction_id": self._next_id(), "receipt_id": receipt["receipt_id"], "listing_id": listing_id,
                    "quantity": quantity, "price": money(price, shop.currency), "create_timestamp": now,
                    "seller_user_id": shop.user_id, "buyer_user_id": receipt["buyer_user_id"],
                    "shipping_cost": money(Decimal(0), shop.currency)}
                for listing_id, quantity, price in lines]
            total = sum((q * p for _, q, p in lines), Decimal(0))
            receipt["grandtotal"] = receipt["subtotal"] = receipt["total_price"] = money(total, shop.currency)
            shop.receipts[receipt["receipt_id"]] = receipt
            return copy.deepcopy(receipt)

    def cancel_receipt(self, shop_id: int, receipt_id: int, status: str = "Canceled") -> None:
        with self.lock:
            receipt = self.shops[shop_id].receipts[receipt_id]
            now = max(int(time.time()), receipt["update_timestamp"])
            receipt.update(status=status, update_timestamp=now, updated_timestamp=now)
            if status == "Fully Refunded":
                receipt["refunds"].append({"amount": receipt["grandtotal"], "created_timestamp": now,
                                           "reason": "refund", "status": "refunded"})

    def password_changed(self, user_id: int) -> None:
        """Etsy revokes every token of a seller who changes their password."""
        with self.lock:
            for tokens in (self.access, self.refresh):
                for token in [t for t, g in tokens.items() if g.user_id == user_id]:
                    del tokens[token]

    def storm(self, calls: int) -> None:
        """Answer the next `calls` calls 429, whatever the budget (another app on the same quota)."""
        with self.lock:
            self._storm = calls

    def fail_next(self, calls: int) -> None:
        with self.lock:
            self._fail_next = calls

    def over_limit_calls(self) -> int:
        """Calls that came while the per-second budget was spent (the client's fault, not a storm)."""
        with self.lock:
            return sum(1 for *_, status in self.calls if status == -429)

    # -- OAuth ---------------------------------------------------------------------------
    def authorize(self, params: dict) -> Response:
        required = ("response_type", "client_id", "redirect_uri", "scope", "state", "code_challenge",
                    "code_challenge_method")
        missing = [name for name in required if not params.get(name)]
        if missing:
            return error(400, f"missing {', '.join(missing)}")
        if params["response_type"] != "code" or params["code_challenge_method"] != "S256":
            return error(400, "response_type must be code and code_challenge_method S256")
        if params["client_id"] != self.config.keystring:
            return error(400, "unknown client_id")
        if not set(params["scope"].split()) <= SCOPES | {"email_r", "profile_r"}:
            return error(400, "invalid scope")
        with self.lock:
            if self.consenting_user is None:
                return error(400, "no seller is logged in")
            code = secrets.token_urlsafe(24)
            self.codes[code] = {"challenge": params["code_challenge"], "client_id": params["client_id"],
                                "redirect_uri": params["redirect_uri"], "user_id": self.consenting_user,
                                "expires_at": time.time() + CODE_TTL_S}
        separator = "&" if "?" in params["redirect_uri"] else "?"
        return RedirectResponse(f"{params['redirect_uri']}{separator}{urlencode({'code': code, 'state': params['state']})}",
                                status_code=302)

    def token(self, form: dict) -> Response:
        if form.get("client_id") != self.config.keystring:
            return error(401, "invalid_client")
        grant_type = form.get("grant_type")
        with self.lock:
            if grant_type == "authorization_code":
                return self._exchange(form)
            if grant_type == "refresh_token":
                return self._rotate(form)
        return error(400, "unsupported_grant_type")

    def _exchange(self, form: dict) -> Response:
        issued = self.codes.pop(form.get("code", ""), None)  # single use: spent by any attempt
        if issued is None or issued["expires_at"] < time.time():
            return error(400, "invalid_grant")
        if issued["redirect_uri"] != form.get("redirect_uri") or issued["client_id"] != form.get("client_id"):
            return error(400, "invalid_grant")
        if not secrets.compare_digest(s256(form.get("code_verifier", "")), issued["challenge"]):
            return error(400, "invalid_grant")
        return self._tokens_for(issued["user_id"])

    def _rotate(self, form: dict) -> Response:
        grant = self.refresh.pop(form.get("refresh_token", ""), None)  # the old one is refused from now on
        if grant is None or grant.expires_at < time.time():
            return error(400, "invalid_grant")
        return self._tokens_for(grant.user_id)

    def _tokens_for(self, user_id: int) -> Response:
        now = time.time()
        access = f"{user_id}.{secrets.token_urlsafe(32)}"  # Etsy prefixes tokens with the user id
        refresh = f"{user_id}.{secrets.token_urlsafe(32)}"
        self.access[access] = Grant(user_id, now + self.config.access_ttl_s)
        self.refresh[refresh] = Grant(user_id, now + self.config.refresh_ttl_s)
        return JSONResponse({"access_token": access, "token_type": "Bearer",
                             "expires_in": int(self.config.access_ttl_s) or 1, "refresh_token": refresh})

    # -- the gate every API call passes --------------------------------------------------
    def admit(self, request: Request, public: bool = False) -> tuple[int | None, Response | None, dict]:
        """(the caller's user id, a refusal or None, rate-limit headers). Counts the call. A public
        call (others' listings) needs the API key alone."""
        key = request.headers.get("x-api-key", "")
        keystring, _, secret = key.partition(":")
        if keystring != self.config.keystring:
            return None, error(403, "Invalid API key"), {}
        if not secrets.compare_digest(secret, self.config.shared_secret):
            return None, error(403, "x-api-key must be keystring:shared_secret"), {}
        with self.lock:
            refused, headers = self._spend(request)
            if refused is not None:
                return None, refused, headers
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            grant = self.access.get(token) if scheme.lower() == "bearer" else None
            if not public and (grant is None or grant.expires_at < time.time()):
                return None, error(401, "invalid_token", headers), headers
            if self._fail_next > 0 or (self.config.error_rate and self._random.random() < self.config.error_rate):
                self._fail_next = max(self._fail_next - 1, 0)
                return None, error(503, "temporarily unavailable", headers), headers
            return grant.user_id if grant else None, None, headers

    def _spend(self, request: Request) -> tuple[Response | None, dict]:
        now = time.time()
        second, day = int(now), int(now // 86400)
        if self._storm > 0:
            self._storm -= 1
            self._log(now, request, 429)
            return error(429, "Too many requests"), {}
        used_now = self._window[1] if self._window[0] == second else 0
        used_today = self._day[1] if self._day[0] == day else 0
        if used_now >= self.config.per_second or used_today >= self.config.per_day:
            self._log(now, request, -429)  # over the budget the headers told
            return error(429, "Too many requests"), {}
        self._window, self._day = (second, used_now + 1), (day, used_today + 1)
        self._log(now, request, 200)
        return None, {"x-limit-per-second": str(self.config.per_second),
                      "x-remaining-this-second": str(self.config.per_second - used_now - 1),
                      "x-limit-per-day": str(self.config.per_day),
                      "x-remaining-today": str(self.config.per_day - used_today - 1)}

    def _log(self, now: float, request: Request, status: int) -> None:
        self.calls.append((now, request.method, request.url.path, status))

    # -- the API -------------------------------------------------------------------------
    def shop_listings(self, user_id: int, shop_id: int, query: dict) -> tuple[int, dict]:
        page = self._page(LISTINGS_PATH, query)
        if isinstance(page, str):
            return 400, {"error": page}
        shop = self.shops.get(shop_id)
        if shop is None or shop.user_id != user_id:
            return 403 if shop else 404, {"error": "shop not found" if not shop else "not your shop"}
        state = query.get("state", "active")
        with self.lock:
            found = sorted((x for x in shop.listings.values() if x.state == state), key=lambda x: x.listing_id)
            results = [self._listing_answer(x, "Inventory" in query.get("includes", "")) for x in found[page[1]:page[1] + page[0]]]
        return 200, {"count": len(found), "results": results}

    def active_listings(self, query: dict) -> tuple[int, dict]:
        """Every shop's active listings whose title holds all the keywords, by creation or price."""
        page = self._page(ACTIVE_PATH, query)
        if isinstance(page, str):
            return 400, {"error": page}
        words = query.get("keywords", "").casefold().split()
        by_price = query.get("sort_on", "created") == "price"
        descending = query.get("sort_order", "desc") in ("desc", "descending", "down")
        with self.lock:
            found = [x for x in self.listings.values()
                     if x.state == "active" and all(w in x.title.casefold() for w in words)]
            found.sort(key=(lambda x: self._price_of(x)) if by_price else (lambda x: x.listing_id), reverse=descending)
            results = [self._listing_answer(x, False) for x in found[page[1]:page[1] + page[0]]]
        return 200, {"count": len(found), "results": results}

    def listings_batch(self, query: dict) -> tuple[int, dict]:
        try:
            ids = [int(x) for x in query.get("listing_ids", "").split(",") if x.strip()]
        except ValueError:
            return 400, {"error": "listing_ids must be integers, comma-separated"}
        if not 1 <= len(ids) <= BATCH_MAX:
            return 400, {"error": f"listing_ids must name 1 to {BATCH_MAX} listings"}
        with self.lock:
            results = [self._listing_answer(self.listings[i], False) for i in ids if i in self.listings]
        return 200, {"count": len(results), "results": results}

    @staticmethod
    def _price_of(listing: FakeListing) -> Decimal:
        price = listing.inventory["products"][0]["offerings"][0]["price"]
        return Decimal(price["amount"]) / price["divisor"]

    def _listing_answer(self, listing: FakeListing, with_inventory: bool) -> dict:
        offering = listing.inventory["products"][0]["offerings"][0]
        answer = template("ShopListing") | {
            "listing_id": listing.listing_id, "shop_id": listing.shop_id, "user_id": self.shops[listing.shop_id].user_id,
            "title": listing.title, "state": listing.state, "skus": [p["sku"] for p in listing.inventory["products"]],
            "price": dict(offering["price"]), "last_modified_timestamp": listing.last_modified,
            "has_variations": any(p["property_values"] for p in listing.inventory["products"])}
        if with_inventory:
            answer["inventory"] = copy.deepcopy(listing.inventory)
        return answer

    @staticmethod
    def _page(path: str, query: dict) -> tuple[int, int] | str:
        """(limit, offset) within the document's bounds, or what is wrong."""
        low, high, default = _limit_bounds(path)
        try:
            limit, offset = int(query.get("limit", default)), int(query.get("offset", 0))
        except ValueError:
            return "limit and offset must be integers"
        if not low <= limit <= high:
            return f"limit must be from {low} to {high}"
        if offset < 0:
            return "offset must not be negative"
        return limit, offset

    def _owned_listing(self, user_id: int, listing_id: int) -> FakeListing | tuple[int, dict]:
        listing = self.listings.get(listing_id)
        if listing is None:
            return 404, {"error": f"listing {listing_id} not found"}
        if self.shops[listing.shop_id].user_id != user_id:
            return 403, {"error": "not your listing"}
        return listing

    def get_inventory(self, user_id: int, listing_id: int) -> tuple[int, dict]:
        with self.lock:
            listing = self._owned_listing(user_id, listing_id)
            if isinstance(listing, tuple):
                return listing
            return 200, copy.deepcopy(listing.inventory)

    def put_inventory(self, user_id: int, listing_id: int, body) -> tuple[int, dict]:
        problem = _inventory_problem(body)
        if problem:
            return 400, {"error": problem}
        with self.lock:
            listing = self._owned_listing(user_id, listing_id)
            if isinstance(listing, tuple):
                return listing
            products = [{"product_id": self._next_id(), "sku": p.get("sku") or "", "is_deleted": False,
                         "property_values": copy.deepcopy(p.get("property_values", [])),
                         "offerings": [{"offering_id": self._next_id(), "quantity": o["quantity"],
                                        "is_enabled": o["is_enabled"], "is_deleted": False,
                                        "price": money(Decimal(str(o["price"])), listing.currency)}
                                       for o in p["offerings"]]}
                        for p in body["products"]]
            listing.inventory = {"products": products,  # the whole inventory is replaced
                                 **{k: list(body.get(k, [])) for k in ("price_on_property", "quantity_on_property",
                                                                      "sku_on_property")}}
            listing.last_modified = int(time.time())
            return 200, copy.deepcopy(listing.inventory)

    def shop(self, shop_id: int) -> tuple[int, dict]:
        shop = self.shops.get(shop_id)
        if shop is None:
            return 404, {"error": f"shop {shop_id} not found"}
        return 200, template("Shop") | {"shop_id": shop.shop_id, "user_id": shop.user_id, "shop_name": f"Shop{shop.shop_id}",
                                        "currency_code": shop.currency}

    def receipts(self, user_id: int, shop_id: int, query: dict) -> tuple[int, dict]:
        page = self._page(RECEIPTS_PATH, query)
        if isinstance(page, str):
            return 400, {"error": page}
        shop = self.shops.get(shop_id)
        if shop is None or shop.user_id != user_id:
            return 403 if shop else 404, {"error": "not your shop"}
        try:
            since = int(query.get("min_last_modified", 0))
        except ValueError:
            return 400, {"error": "min_last_modified must be an integer (epoch seconds)"}
        with self.lock:
            found = sorted((r for r in shop.receipts.values() if r["update_timestamp"] >= since),
                           key=lambda r: (r["update_timestamp"], r["receipt_id"]))
            results = copy.deepcopy(found[page[1]:page[1] + page[0]])
        return 200, {"count": len(found), "results": results}


def _inventory_problem(body) -> str | None:
    """What Etsy would refuse in an inventory PUT's body, or None."""
    if not isinstance(body, dict) or not isinstance(body.get("products"), list) or not body["products"]:
        return "products must be a non-empty array"
    for i, product in enumerate(body["products"]):
        if not isinstance(product, dict) or any(k in product for k in PUT_REFUSED_FIELDS):
            return f"products[{i}]: product_id and is_deleted are not accepted"
        offerings = product.get("offerings")
        if not isinstance(offerings, list) or not offerings:
            return f"products[{i}].offerings must be a non-empty array"
        for j, offering in enumerate(offerings):
            where = f"products[{i}].offerings[{j}]"
            if not isinstance(offering, dict) or any(k in offering for k in PUT_REFUSED_FIELDS):
                return f"{where}: offering_id and is_deleted are not accepted"
            price = offering.get("price")
            if isinstance(price, bool) or not isinstance(price, (int, float)) or not 0.2 <= price <= 50_000:
                return f"{where}.price must be a number from 0.20 to 50000"
            if isinstance(offering.get("quantity"), bool) or not isinstance(offering.get("quantity"), int):
                return f"{where}.quantity must be an integer"
            if not isinstance(offering.get("is_enabled"), bool):
                return f"{where}.is_enabled must be a boolean"
    return None


def create_app(fake: FakeEtsy) -> FastAPI:
    app = FastAPI(title="Fake Etsy Open API v3", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.fake = fake

    @app.get("/oauth/connect")
    async def connect(request: Request):
        return fake.authorize(dict(request.query_params))

    @app.post("/v3/public/oauth/token")
    async def token(request: Request):
        form = parse_qs((await request.body()).decode("utf-8", "replace"))  # form-encoded, as OAuth's token endpoint takes
        return fake.token({k: v[-1] for k, v in form.items()})

    async def gated(request: Request, act, public: bool = False):
        user_id, refused, headers = fake.admit(request, public)
        if refused is not None:
            return refused
        status, body = act(user_id)
        return JSONResponse(body, status_code=status, headers=headers)

    @app.get("/v3/application/shops/{shop_id}/listings")
    @app.get(LISTINGS_PATH)
    async def shop_listings(shop_id: int, request: Request):
        return await gated(request, lambda user: fake.shop_listings(user, shop_id, dict(request.query_params)))

    @app.get(ACTIVE_PATH)
    async def active_listings(request: Request):
        return await gated(request, lambda _: fake.active_listings(dict(request.query_params)), public=True)

    @app.get(BATCH_PATH)
    async def listings_batch(request: Request):
        return await gated(request, lambda _: fake.listings_batch(dict(request.query_params)), public=True)

    @app.get(SHOP_PATH)
    async def shop(shop_id: int, request: Request):
        return await gated(request, lambda user: fake.shop(shop_id))

    @app.get(INVENTORY_PATH)
    async def get_inventory(listing_id: int, request: Request):
        return await gated(request, lambda user: fake.get_inventory(user, listing_id))

    @app.put(INVENTORY_PATH)
    async def put_inventory(listing_id: int, request: Request):
        try:
            body = json.loads(await request.body())
        except ValueError:
            body = None
        return await gated(request, lambda user: fake.put_inventory(user, listing_id, body))

    @app.get(RECEIPTS_PATH)
    async def receipts(shop_id: int, request: Request):
        return await gated(request, lambda user: fake.receipts(user, shop_id, dict(request.query_params)))

    return app
