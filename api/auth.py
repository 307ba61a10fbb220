"""Authentication and authorization at the edge, in one place.

- A route is either marked `PUBLIC` (login, token refresh) or needs credentials: a Bearer access
  token (JWT, HS256 pinned, issuer and audience checked, short-lived, naming a live session) or an
  API key.
- Every protected route declares what it needs with `requires("prices:write")`, a dependency that
  does the check itself. `refuse_undeclared` (installed app-wide in api/app.py) refuses a route
  that declares nothing to everyone (fail closed), so a forgotten declaration is a bug that
  shows, not a hole.
- For routes under /shops/{shop_id}, the shop must be one the caller can see: another tenant's
  shop, or a shop outside the caller's grants, answers 404 (no existence leak); a visible shop
  without the permission answers 403. No credentials answers 401.
"""

from __future__ import annotations

import logging
import math
import threading
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Annotated
from uuid import UUID, uuid4

import jwt
from cachetools import TTLCache
from fastapi import Depends, HTTPException, Request
from limits import RateLimitItemPerMinute
from limits.storage import Storage, storage_from_string
from limits.strategies import MovingWindowRateLimiter
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from commands.credentials import Secrets
from domain.errors import NotFound
from commands.identity import Principal, Session
from domain.account import Account, client_key

log = logging.getLogger(__name__)
IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

ISSUER = "etsypro"
AUDIENCE = "etsypro-api"
ALGORITHM = "HS256"  # the only one accepted: "none" and asymmetric-key confusion are refused
API_KEY_PREFIX = "ek_"
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="etsypro"'}


@dataclass(frozen=True)
class AuthSettings:
    access_token_ttl: timedelta = timedelta(minutes=10)
    login_per_minute: int = 10   # per client address, over /auth/login and /auth/login/mfa
    token_per_minute: int = 30   # per client address, over /auth/token
    clock_leeway_s: int = 10     # tolerated clock difference between servers
    principal_cache_s: float = 1.0  # how long another process's change to an account may go unseen
                                    # by a shop's routes here (PrincipalCache); 0: look up every request
    trusted_proxies: tuple = ()     # proxies whose X-Forwarded-For is believed (client_address); none by default
    rate_limit_storage: str = "memory://"  # where rate limits count (limits' URL form); redis://... to share


# -- access tokens --------------------------------------------------------------------------
def issue_access_token(secrets: Secrets, session: Session, ttl: timedelta) -> str:
    now = datetime.now(timezone.utc)
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": session.account_id, "tid": session.tenant_id,
              "sid": session.family_id, "iat": now, "nbf": now, "exp": now + ttl, "jti": uuid4().hex}
    return jwt.encode(claims, secrets.jwt_key, algorithm=ALGORITHM)


def read_access_token(secrets: Secrets, token: str, leeway_s: int = 10) -> tuple[str, str]:
    """(account id, session id) from a valid token; jwt.InvalidTokenError otherwise."""
    claims = jwt.decode(token, secrets.jwt_key, algorithms=[ALGORITHM], audience=AUDIENCE, issuer=ISSUER,
                        leeway=leeway_s, options={"require": ["exp", "iat", "sub", "sid", "iss", "aud"]})
    UUID(claims["sub"]), UUID(claims["sid"])  # well-formed, or refused below
    return claims["sub"], claims["sid"]


def token_answer(request: Request, session: Session) -> dict:
    settings: AuthSettings = request.app.state.auth
    engine = request.app.state.engine
    return {"access_token": issue_access_token(engine.identity.secrets, session, settings.access_token_ttl),
            "token_type": "Bearer", "expires_in": int(settings.access_token_ttl.total_seconds()),
            "refresh_token": session.refresh_token}


# -- who is calling -------------------------------------------------------------------------
bearer = HTTPBearer(auto_error=False, scheme_name="Bearer",
                    description="An access token from POST /auth/login, or an API key (ek_...)")


def unauthorized(detail: str = "credentials are missing, invalid or expired") -> HTTPException:
    return HTTPException(401, detail, headers=CHALLENGE)


def _credential(request: Request) -> str:
    scheme, _, credential = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        raise unauthorized()
    return credential.strip()


def _look_up(request: Request, credential: str) -> Principal:
    """The principal of a credential, from the database (blocking); 401 if none."""
    engine = request.app.state.engine
    principals: PrincipalCache = request.app.state.principals
    generation = principals.generation
    if credential.startswith(API_KEY_PREFIX):
        found = engine.identity.principal_for_api_key(credential)
    else:
        try:
            account_id, session_id = read_access_token(engine.identity.secrets, credential,
                                                       request.app.state.auth.clock_leeway_s)
        except (jwt.InvalidTokenError, ValueError, KeyError):
            raise unauthorized() from None
        found = engine.identity.principal_for_session(account_id, session_id)  # None once logged out or revoked
    if found is None:
        raise unauthorized()
    principals.put(credential, found, generation)
    return found


def resolve_principal(request: Request) -> Principal:
    """The caller behind the Authorization header (once per request); 401 if none."""
    if (known := getattr(request.state, "principal", None)) is not None:
        return known
    request.state.principal = _look_up(request, _credential(request))
    return request.state.principal


async def principal(request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Principal:
    # Resolved by `authenticate`, which runs first: from request.state.
    return resolve_principal(request)


class PrincipalCache:
    """Principals looked up in the last `ttl` seconds, by credential, for the routes of one shop.

    Whatever can narrow what a credential may do (a role taken away, a revoked key or session, a
    new password) is an event of the account. The engine reports every commit (`forget_changed`):
    a change made through this process counts from the next request on, including requests whose
    lookup was under way. A change made by another process (another worker, `etsypro admin`) counts
    within `ttl` seconds, as does a session's expiry. A cached principal is only ever used to
    let a request through: one that would be refused (a shop it has just opened, a role just
    granted) is looked up again before the answer.
    """

    MAX_ENTRIES = 10_000

    def __init__(self, ttl: float):
        self.ttl = ttl
        self.generation = 0  # moves on with every change to any account
        # TTLCache wants a positive ttl; with 0, put stores nothing, so any placeholder does.
        self._entries: TTLCache[str, Principal] = TTLCache(self.MAX_ENTRIES, ttl if ttl > 0 else 1)
        self._lock = threading.Lock()  # TTLCache is not thread-safe

    def get(self, credential: str) -> Principal | None:
        with self._lock:
            return self._entries.get(credential)

    def put(self, credential: str, found: Principal, generation: int) -> None:
        """Remember `found`, looked up since `generation` (unless an account changed meanwhile)."""
        with self._lock:
            if self.ttl > 0 and generation == self.generation:
                self._entries[credential] = found

    def forget_changed(self, events) -> None:
        if any(isinstance(e, Account.Event) for e in events):
            with self._lock:
                self.generation += 1
                self._entries.clear()


Caller = Annotated[Principal, Depends(principal)]


# -- what a route needs ---------------------------------------------------------------------
Declared = tuple[str, bool]  # (permission, tenant_wide)


def requires(permission: str, tenant_wide: bool = False):
    """A route's permission, checked by the dependency itself: `dependencies=[requires("prices:write")]`.
    Who calls (401 if nobody), the route's shop in their tenant (404 otherwise), the permission (403).

    tenant_wide: the route answers about the whole tenant (its global log, its accounts), so a
    grant over some shops is not enough.
    """
    declared = (permission, tenant_wide)

    async def permitted(request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        await admit(request, declared)  # the bearer scheme in the signature shows in the OpenAPI document

    permitted.permission, permitted.tenant_wide = permission, tenant_wide
    return Depends(permitted)


SELF = "self"
SIGNED_IN = requires(SELF)  # for routes about the caller's own account: any valid credentials


def _public() -> None:
    pass


_public.public = True
PUBLIC = Depends(_public)  # for routes anyone may call: logging in, refreshing a token


def declaration(route: APIRoute) -> Declared | str | None:
    """'public', (permission, tenant_wide) as the route declares it, or None: read from the
    dependencies the route was given (its router's and its own)."""
    for depends in route.dependencies:
        call = depends.dependency
        if getattr(call, "public", False):
            return "public"
        if hasattr(call, "permission"):
            return call.permission, call.tenant_wide
    return None


async def refuse_undeclared(request: Request) -> None:
    """Installed on the whole app: a route that declares neither a permission nor PUBLIC is
    refused to everyone (fail closed), after the usual 401 for missing or bad credentials."""
    route = request.scope.get("route")
    if isinstance(route, APIRoute) and declaration(route) is not None:
        return
    await run_in_threadpool(_look_up, request, _credential(request))
    log.error("route %s %s declares no permission; refusing it (add requires(...))",
              ",".join(sorted(getattr(route, "methods", None) or ())) or "?", getattr(route, "path", "?"))
    raise HTTPException(403, "this route declares no permission, so nobody may use it")


async def admit(request: Request, declared: Declared) -> None:
    """Who is calling, and whether `declared` lets them; the principal stays on request.state.

    `async`: a shop's route whose caller is in the PrincipalCache, for a shop known here, passes
    without a query and without a hop to the threadpool. A cached principal is only ever used to
    let a request through."""
    credential = _credential(request)
    engine, shop = request.app.state.engine, request.path_params.get("shop_id")
    cached = request.app.state.principals.get(credential) if shop is not None else None
    if cached is not None and _answers_from_memory(engine, shop) and _refusal(engine, cached, declared, shop) is None:
        request.state.principal = cached
        if shop is not None:
            request.state.checked_shop = UUID(shop)
        return
    request.state.principal, refusal = await run_in_threadpool(_look_up_and_check, request, credential, declared, shop)
    if refusal is not None:
        raise refusal
    if shop is not None:
        request.state.checked_shop = UUID(shop)  # command_context passes it on: checked once


def _look_up_and_check(request: Request, credential: str, declared: Declared,
                       shop: str | None) -> tuple[Principal, HTTPException | None]:
    """The caller, from the database, and why the route refuses them (None: it does not)."""
    caller = _look_up(request, credential)
    return caller, _refusal(request.app.state.engine, caller, declared, shop)


def _refusal(engine, caller: Principal, declared: Declared, shop: str | None) -> HTTPException | None:
    """Why `caller` may not use a route that requires `declared` (None: it may). Checks the
    route's shop belongs to the caller's tenant; that queries on a shop's first use in this
    process (see _answers_from_memory)."""
    permission, tenant_wide = declared
    if permission == SELF:
        return None
    if shop is not None:
        try:
            engine.core.shop_facts(caller, UUID(shop))
        except ValueError:
            return HTTPException(422, "shop_id must be a UUID", headers={"X-Problem-Field": "shop_id"})
        except NotFound:
            return HTTPException(404, "shop not found")
    if not caller.grants.allows(permission, shop, tenant_wide):
        return HTTPException(403, f"this needs the {permission!r} permission"
                                  + (" over the whole tenant" if tenant_wide else ""))
    return None


def _answers_from_memory(engine, shop: str | None) -> bool:
    """Whether _refusal can decide without a query: no shop, a malformed one, or one known here."""
    try:
        return shop is None or engine.core.knows_shop(UUID(shop))
    except ValueError:
        return True


# -- rate limits ----------------------------------------------------------------------------
class RateLimiter:
    """At most `per_minute` requests per client in any minute (a moving window), for one purpose.
    The counts live in `storage`: this process's memory by default, or Redis (ETSYPRO_REDIS_URL)
    so that every worker and server shares them. (Per account, the throttling in domain/account.py
    holds across processes anyway; this bounds how fast one client can try anything.)"""

    def __init__(self, purpose: str, per_minute: int, storage: Storage):
        self.purpose = purpose
        self.item = RateLimitItemPerMinute(per_minute, namespace="etsypro")
        self.window = MovingWindowRateLimiter(storage)

    def retry_after(self, client: str) -> int:
        """0 when the request may go ahead (and is counted); else seconds to wait."""
        try:
            if self.window.hit(self.item, self.purpose, client):
                return 0
            reset, _ = self.window.get_window_stats(self.item, self.purpose, client)
        except Exception:  # storage unreachable: the accounts' own throttling still holds, logins go on
            log.exception("rate-limit storage failed; letting the request through")
            return 0
        return max(1, math.ceil(reset - time.time()))


def client_address(request: Request) -> str:
    """The client's address: the connection's peer, unless the peer is a proxy the operator named
    (ETSYPRO_TRUSTED_PROXIES); only then is X-Forwarded-For read, from the right, up to the first
    hop that is not a trusted proxy (hops further left are whatever the client chose to send).
    uvicorn's own proxy handling is off (api/server.py): it trusts 127.0.0.1 by default."""
    peer = request.client.host if request.client else "unknown"
    proxies = request.app.state.auth.trusted_proxies
    if not proxies or not _among(peer, proxies):
        return peer
    hops = [h.strip() for h in ",".join(request.headers.getlist("x-forwarded-for")).split(",")]
    for hop in reversed(hops):
        address = _ip(hop)
        if address is None:
            return peer  # a hop that is not an address: the proxy's own view is all we can trust
        if not _among(str(address), proxies):
            return str(address)
    return peer


def trusted_proxies(spec: str) -> tuple[IPNetwork, ...]:
    """ETSYPRO_TRUSTED_PROXIES: comma-separated addresses or networks ("10.0.0.5, 10.1.0.0/16")."""
    try:
        return tuple(ip_network(part.strip(), strict=False) for part in spec.split(",") if part.strip())
    except ValueError as error:
        raise ValueError(f"ETSYPRO_TRUSTED_PROXIES: {error}") from None


def _ip(text: str) -> IPAddress | None:
    try:
        address = ip_address(text)
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:a.b.c.d is a.b.c.d
    return mapped or address


def _among(host: str, proxies: tuple[IPNetwork, ...]) -> bool:
    address = _ip(host)
    return address is not None and any(address in network for network in proxies)


def rate_limited(purpose: str):
    """Dependency: 429 with Retry-After once a client exceeds the limit for this purpose."""

    def check(request: Request) -> None:
        limiter: RateLimiter = request.app.state.rate_limits[purpose]
        wait = limiter.retry_after(client_key(client_address(request)))  # an IPv6 /64 is one client
        if wait:
            raise HTTPException(429, f"too many attempts from this address; retry in {wait} s",
                                headers={"Retry-After": str(wait)})

    return Depends(check)


def install(app, settings: AuthSettings | None = None) -> None:
    settings = settings or AuthSettings()
    app.state.auth = settings
    app.state.principals = PrincipalCache(settings.principal_cache_s)
    app.state.engine.core.on_commit.append(app.state.principals.forget_changed)
    storage = storage_from_string(settings.rate_limit_storage)  # memory://: this app's own counts
    app.state.rate_limits = {"login": RateLimiter("login", settings.login_per_minute, storage),
                             "token": RateLimiter("token", settings.token_per_minute, storage)}
