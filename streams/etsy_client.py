"""Etsy's Open API v3 over HTTP (httpx): the token endpoint, listings, inventory and receipts, within
the rate budget Etsy's headers tell.

`Budget` keeps the calls under x-limit-per-second (evenly paced, shared through Redis by several
workers) and the daily quota, and backs off after a 429 with jitter (exponential, capped;
Retry-After when given). Answers come back as plain data, or as the exceptions of domain/marketplace.py: EtsyRefused
(4xx, or a shape that cannot be read), GrantRefused (invalid_grant / invalid_token), EtsyUnavailable
(5xx, timeouts, the day's quota spent).
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import httpx

from domain.marketplace import EtsyRefused, EtsyUnavailable, GrantRefused

ETSY_API = "https://api.etsy.com"
ETSY_AUTHORIZE = "https://www.etsy.com/oauth/connect"
PAGE_LIMIT = 100  # Etsy's most per page


@dataclass(frozen=True)
class EtsyApp:
    """The app registered at Etsy, and where Etsy is (the fake's URL in tests and the demo)."""

    keystring: str
    shared_secret: str
    api_url: str = ETSY_API
    authorize_url: str = ETSY_AUTHORIZE
    redirect_uri: str = "http://127.0.0.1:8000/marketplace/etsy/callback"

    @property
    def api_key(self) -> str:
        return f"{self.keystring}:{self.shared_secret}"


PACE = 0.97  # calls are spaced 1/(0.97 x limit) apart: see Budget


class SharedPace:
    """The next free call slot of one Etsy app, kept in Redis for every worker of the app: a script
    reserves the slot atomically on Redis' own clock and answers how long to wait for it."""

    SCRIPT = """
        local t = redis.call('TIME')
        local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
        local free = tonumber(redis.call('GET', KEYS[1]) or '0')
        local at = math.max(now, free)
        redis.call('SET', KEYS[1], tostring(at + tonumber(ARGV[1])), 'PX', 60000)
        return tostring(at - now)"""

    def __init__(self, url: str, app_key: str):
        import redis  # limits[redis]'s client: only workers that share a budget need it

        self.key = f"etsypro:etsy-pace:{app_key}"
        self._reserve = redis.Redis.from_url(url).register_script(self.SCRIPT)

    def reserve(self, interval: float) -> float:
        """Seconds until the reserved slot (0: now)."""
        return float(self._reserve(keys=[self.key], args=[repr(interval)]))


@dataclass
class Budget:
    """The calls Etsy allows, as its headers last told, paced for every thread of a process and,
    given `shared` (Redis), for every worker of the app.

    Calls are spaced evenly at PACE of x-limit-per-second rather than sent in bursts per second:
    Etsy counts a call in the second it arrives, and a burst at the end of one second meeting one at
    the start of the next would go over whatever the sender counted. Evenly spaced calls put at most
    the limit in any one-second span, also when their delays vary by up to (1 - PACE) / PACE of a
    second (~30 ms). A 429 stops all calls for a backoff with jitter; a spent daily quota ends the call."""

    per_second: int = 10         # Etsy's usual limit, until its headers say otherwise
    shared: SharedPace | None = None
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    backoff_base_s: float = 0.25
    backoff_cap_s: float = 30.0
    remaining_this_second: int | None = None
    remaining_today: int | None = None
    per_day: int | None = None
    throttled_until: float = 0.0
    storms: int = 0              # consecutive 429s
    calls: int = 0
    throttled: int = 0           # 429s received
    waited_s: float = 0.0
    _next_at: float = 0.0
    _last_at: float = 0.0        # the last slot given
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _random: random.Random = field(default_factory=random.Random)

    @property
    def interval(self) -> float:
        return 1.0 / (self.per_second * PACE)

    def take(self) -> None:
        """Wait for a slot within the budget, and count the call."""
        while True:
            with self._lock:
                now = self.clock()
                blocked = self._blocked(now)
                if blocked <= 0:
                    wait = self._reserve(now)
                    self.calls += 1
                    break
            self._wait(blocked)
        self._wait(wait)

    def _wait(self, seconds: float) -> None:
        if seconds > 0:
            self.waited_s += seconds
            self.sleep(seconds)

    def _blocked(self, now: float) -> float:
        if now < self.throttled_until:
            return self.throttled_until - now
        if self.remaining_today is not None and self.remaining_today <= 0:
            raise EtsyUnavailable(429, "the day's quota is spent")
        return 0.0

    def _reserve(self, now: float) -> float:
        if self.shared is not None:
            return self.shared.reserve(self.interval)
        at = max(now, self._next_at)
        self._last_at, self._next_at = at, at + self.interval
        return at - now

    def told(self, headers: httpx.Headers) -> None:
        """Etsy's headers after a call: its limits, and when this second's are spent, a wait for the next."""
        with self._lock:
            self.storms = 0
            if "x-limit-per-second" in headers:
                limit = max(int(headers["x-limit-per-second"]), 1)
                if limit < self.per_second:  # the next slot was spaced for the old limit: space it for the new
                    self.per_second = limit
                    self._next_at = max(self._next_at, self._last_at + self.interval)
                self.per_second = limit
                self.remaining_this_second = int(headers.get("x-remaining-this-second", self.per_second))
                if self.remaining_this_second <= 0:
                    now = self.clock()
                    self.throttled_until = max(self.throttled_until, int(now) + 1.0)
            if "x-remaining-today" in headers:
                self.remaining_today = int(headers["x-remaining-today"])
                self.per_day = int(headers.get("x-limit-per-day", self.per_day or 0)) or None

    def too_many(self, retry_after: str | None) -> float:
        """A 429: wait with jitter (or as Etsy says), longer after each consecutive one."""
        with self._lock:
            self.storms += 1
            self.throttled += 1
            ceiling = min(self.backoff_cap_s, self.backoff_base_s * 2 ** min(self.storms, 16))
            wait = self._random.uniform(ceiling / 2, ceiling)  # "equal jitter": never a zero wait in a storm
            if retry_after and retry_after.isdigit():
                wait = max(wait, float(retry_after))
            self.throttled_until = max(self.throttled_until, self.clock() + wait)
            return wait

    def snapshot(self) -> dict:
        return {"limit_per_second": self.per_second, "remaining_this_second": self.remaining_this_second,
                "limit_per_day": self.per_day, "remaining_today": self.remaining_today,
                "throttled_until": self.throttled_until if self.throttled_until > self.clock() else None,
                "calls": self.calls, "throttled": self.throttled, "waited_s": round(self.waited_s, 3)}


class EtsyClient:
    """One app's calls to Etsy. `max_429` consecutive 429s on one call end it as EtsyUnavailable."""

    def __init__(self, app: EtsyApp, budget: Budget | None = None, timeout: float = 10.0, max_429: int = 8):
        self.app = app
        self.budget = budget or Budget()
        self.max_429 = max_429
        self.http = httpx.Client(base_url=app.api_url, timeout=timeout,
                                 headers={"x-api-key": app.api_key, "accept": "application/json"})

    def close(self) -> None:
        self.http.close()

    # -- OAuth ---------------------------------------------------------------------------
    def exchange_code(self, code: str, verifier: str, redirect_uri: str) -> dict:
        return self._token({"grant_type": "authorization_code", "client_id": self.app.keystring,
                            "redirect_uri": redirect_uri, "code": code, "code_verifier": verifier})

    def refresh(self, refresh_token: str) -> dict:
        return self._token({"grant_type": "refresh_token", "client_id": self.app.keystring,
                            "refresh_token": refresh_token})

    def _token(self, form: dict) -> dict:
        try:
            response = self.http.post("/v3/public/oauth/token", data=form)
        except httpx.HTTPError as e:
            raise EtsyUnavailable(None, f"{type(e).__name__}: {e}") from None
        if response.status_code >= 500:
            raise EtsyUnavailable(response.status_code, response.text)
        body = _json(response)
        if response.status_code != 200:
            error = body.get("error") if isinstance(body, dict) else None
            kind = GrantRefused if error == "invalid_grant" else EtsyRefused
            raise kind(response.status_code, response.text)
        if not isinstance(body, dict) or not all(isinstance(body.get(k), str) for k in ("access_token", "refresh_token")) \
                or not isinstance(body.get("expires_in"), (int, float)):
            raise EtsyRefused(response.status_code, f"unexpected token answer: {response.text[:300]}")
        return body

    # -- the API -------------------------------------------------------------------------
    def call(self, method: str, path: str, token: str | None, params: dict | None = None, json=None):
        """One call within the budget; 429s are waited out (up to max_429 in a row). Without a
        token: a public call (others' listings), on the API key alone."""
        headers = {"authorization": f"Bearer {token}"} if token else {}
        for _ in range(self.max_429):
            self.budget.take()
            try:
                response = self.http.request(method, path, params=params, json=json, headers=headers)
            except httpx.HTTPError as e:
                raise EtsyUnavailable(None, f"{type(e).__name__}: {e}") from None
            if response.status_code == 429:
                self.budget.too_many(response.headers.get("retry-after"))  # the next take() waits it out
                continue
            self.budget.told(response.headers)
            return _answer(response)
        raise EtsyUnavailable(429, f"still rate limited after {self.max_429} tries")

    def shop_owner(self, token: str, etsy_shop_id: int) -> int:
        """The Etsy user id of the shop's owner (getShop)."""
        owner = self.call("GET", f"/v3/application/shops/{etsy_shop_id}", token).get("user_id")
        if isinstance(owner, bool) or not isinstance(owner, int):
            raise EtsyRefused(200, f"getShop answered no user_id: {owner!r:.100}")
        return owner

    def shop_listings(self, token: str, etsy_shop_id: int, offset: int, state: str = "active") -> dict:
        return self.call("GET", f"/v3/application/shops/{etsy_shop_id}/listings", token,
                         {"state": state, "limit": PAGE_LIMIT, "offset": offset, "includes": "Inventory"})

    def active_listings(self, keywords: str, limit: int) -> dict:
        """Others' active listings matching all the keywords (findAllListingsActive), by relevance as Etsy sorts them."""
        return self.call("GET", "/v3/application/listings/active", None, {"keywords": keywords, "limit": limit})

    def listings_batch(self, listing_ids: list[int]) -> dict:
        """Up to 100 listings by id (getListingsByListingIds)."""
        return self.call("GET", "/v3/application/listings/batch", None,
                         {"listing_ids": ",".join(str(i) for i in listing_ids)})

    def inventory(self, token: str, listing_id: int) -> dict:
        return self.call("GET", f"/v3/application/listings/{listing_id}/inventory", token)

    def put_inventory(self, token: str, listing_id: int, body: dict) -> dict:
        return self.call("PUT", f"/v3/application/listings/{listing_id}/inventory", token, json=body)

    def receipts(self, token: str, etsy_shop_id: int, since: int, offset: int) -> dict:
        return self.call("GET", f"/v3/application/shops/{etsy_shop_id}/receipts", token,
                         {"min_last_modified": since, "limit": PAGE_LIMIT, "offset": offset,
                          "sort_on": "updated", "sort_order": "asc"})


class AccessRefused(GrantRefused):
    """401: the access token is expired or revoked (a refresh may cure it)."""


def _json(response: httpx.Response):
    try:
        return response.json()
    except ValueError:
        return None


def _answer(response: httpx.Response):
    status = response.status_code
    if status >= 500:
        raise EtsyUnavailable(status, response.text)
    if status == 401:
        raise AccessRefused(status, response.text)
    if status >= 400:
        raise EtsyRefused(status, response.text)
    body = _json(response)
    if not isinstance(body, dict):
        raise EtsyRefused(status, f"expected a JSON object, got: {response.text[:300]}")
    return body
