"""Logging in and out, refreshing tokens, and one's own password and second factor."""

from __future__ import annotations

import asyncio
import time
from contextlib import contextmanager
from typing import Annotated, Callable

import segno
from fastapi import Depends, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.auth import PUBLIC, SIGNED_IN, Caller, client_address, rate_limited, token_answer, unauthorized
from api.deps import Context, Engine
from api.schemas import LoggedOut, Me, MfaConfirmed, MfaEnrollment, MfaRequired, MfaState, PasswordChanged, Tokens
from api.passwords import check_password
from commands.models import text
from commands.identity import REFRESH_TOKEN_TTL, LoginRefused, MfaChallenge, TokenRefused, TooManyAttempts

from api.routing import resource_router

router = resource_router(prefix="/auth", tags=["auth"])

# One answer for every refused login, whatever the reason: no account enumeration.
REFUSED = "invalid username or password, or the account is temporarily locked"
# Every refused login takes at least this long. An unknown user costs one argon2 verify; a wrong
# password costs the same plus loading the account and recording the failure: without a floor,
# that difference would tell which usernames exist.
REFUSAL_FLOOR_S = 0.25

Secret = Annotated[str, Field(min_length=1, max_length=1024)]
# ASCII only: str.isdigit() and regex \d also take fullwidth and Arabic-Indic digits.
TotpCode = Annotated[str, Field(pattern=r"^ *[0-9]{3} ?[0-9]{3} *$", examples=["123456"])]
RecoveryCode = Annotated[str, Field(pattern=r"^[ A-Za-z0-9-]{1,64}$", examples=["k7qm-2xwp-9fhd"])]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class LoginIn(Body):
    username: text(254)
    password: Secret
    tenant: text(200, description="The tenant the account belongs to: usernames are unique within a tenant only")

    model_config = ConfigDict(json_schema_extra={"examples": [{"tenant": "acme", "username": "alice", "password": "…"}]})


class SecondFactorIn(Body):
    challenge: text(200)
    code: TotpCode | None = None
    recovery_code: RecoveryCode | None = None

    model_config = ConfigDict(json_schema_extra={"examples": [{"challenge": "c_4f1d…", "code": "123456"},
                                                              {"challenge": "c_4f1d…", "recovery_code": "k7qm-2xwp-9fhd"}]})

    @model_validator(mode="after")
    def exactly_one(self):
        if (self.code is None) == (self.recovery_code is None):
            raise ValueError("give exactly one of code, recovery_code")
        return self


class RefreshIn(Body):
    refresh_token: text(200)

    model_config = ConfigDict(json_schema_extra={"examples": [{"refresh_token": "rt_ddONZc_1WNR71F5VfTScoayFci7_tIdyN_9obfZ_E84"}]})


class PasswordChangeIn(Body):
    current_password: Secret
    new_password: Secret

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"current_password": "a long passphrase of words", "new_password": "another long passphrase"}]})


class PasswordResetIn(Body):
    token: text(200)
    new_password: Secret

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"token": "pr_Zk3vQ1u9yTt0bW8rM2nH6cXe4sJ7aLdF5gP0iKqR2oU", "new_password": "a new long passphrase"}]})


class CodeIn(Body):
    code: TotpCode

    model_config = ConfigDict(json_schema_extra={"examples": [{"code": "123456"}]})


class PasswordIn(Body):
    password: Secret

    model_config = ConfigDict(json_schema_extra={"examples": [{"password": "a long passphrase of words"}]})


async def refused_in_equal_time(login: Callable, *args, **kwargs):
    """Run a login step (blocking: argon2, the database) off the event loop; every refusal answers
    401 no sooner than REFUSAL_FLOOR_S after the request, waited on the loop, not in a thread."""
    started = time.monotonic()
    try:
        return await run_in_threadpool(login, *args, **kwargs)
    except LoginRefused:
        await asyncio.sleep(max(0.0, started + REFUSAL_FLOOR_S - time.monotonic()))
        raise unauthorized(REFUSED) from None


@router.post("/login", response_model=Tokens | MfaRequired, summary="Log in with a password; answers tokens, or a challenge for the second factor",
             dependencies=[PUBLIC, rate_limited("login")],
             responses={401: {"description": REFUSED}, 429: {"description": "Too many attempts; see Retry-After"}})
async def login(body: LoginIn, request: Request, engine: Engine) -> dict:
    outcome = await refused_in_equal_time(
        engine.identity.login, body.username, body.password, client_address(request), body.tenant)
    if isinstance(outcome, MfaChallenge):
        return {"mfa_required": True, "challenge": outcome.challenge, "expires_in": outcome.expires_in}
    return token_answer(request, outcome)


@router.post("/login/mfa", response_model=Tokens, summary="Complete a login with a TOTP code or a recovery code",
             dependencies=[PUBLIC, rate_limited("login")],
             responses={401: {"description": REFUSED}, 429: {"description": "Too many attempts; see Retry-After"}})
async def login_second_factor(body: SecondFactorIn, request: Request, engine: Engine) -> dict:
    session = await refused_in_equal_time(engine.identity.login_second_factor, body.challenge,
                                          client_address(request), code=body.code, recovery_code=body.recovery_code)
    return token_answer(request, session)


@router.post("/token", response_model=Tokens, summary="Exchange a refresh token for new tokens (the old refresh token is spent)",
             dependencies=[PUBLIC, rate_limited("token")],
             responses={401: {"description": "Unknown, expired or revoked; a reused token revokes its session"},
                        429: {"description": "Too many attempts; see Retry-After"}})
def refresh(body: RefreshIn, request: Request, engine: Engine) -> dict:
    """Exchanges a refresh token for a new access token and a new refresh token.

    **Changes:** the refresh token is spent (no event); reusing a spent one revokes its whole session,
    which is recorded on the account."""
    try:
        session = engine.identity.refresh(body.refresh_token)
    except TokenRefused:
        raise unauthorized("the refresh token is not valid") from None
    return token_answer(request, session)


@router.post("/logout", response_model=LoggedOut, summary="End this session: its refresh and access tokens stop working",
             dependencies=[SIGNED_IN])
def logout(caller: Caller, engine: Engine) -> dict:
    if caller.via != "token":
        raise HTTPException(422, "API keys are revoked by an admin, not logged out")
    engine.identity.end_session(caller.account_id, caller.session_id, "logout")
    return {"logged_out": True}


@router.get("/me", response_model=Me, summary="Who the credentials belong to: roles, shops, MFA", dependencies=[SIGNED_IN])
def me(caller: Caller, engine: Engine) -> dict:
    return engine.identity.describe_self(caller)


# Routes that check a password or a code share the login's budget (per account and client) and events.
# Passwords and MFA are a person's: an API key is refused (see _person).
PERSONS_ONLY = {403: {"description": "API keys cannot manage passwords or MFA"}}
CHECKS_A_SECRET = {**PERSONS_ONLY, 429: {"description": "Too many wrong attempts from this client; see Retry-After"}}


@router.post("/password", response_model=PasswordChanged, summary="Change one's password (other sessions end)",
             dependencies=[SIGNED_IN, rate_limited("login")], responses=CHECKS_A_SECRET)
def change_password(body: PasswordChangeIn, caller: Caller, ctx: Context, engine: Engine, request: Request) -> dict:
    _person(caller)
    check_password(body.new_password, engine.identity.describe_self(caller)["username"], field="new_password")
    with _within_budget():
        return engine.identity.change_password(ctx, caller.session_id, body.current_password, body.new_password,
                                      client_address(request)).body


@router.post("/password/reset", response_model=PasswordChanged,
             summary="Set a new password with the one-time token an admin issued (every session ends)",
             dependencies=[PUBLIC, rate_limited("login")],
             responses={401: {"description": "The token is unknown, spent or expired"},
                        429: {"description": "Too many attempts; see Retry-After"}})
def reset_password(body: PasswordResetIn, engine: Engine) -> dict:
    try:
        account = engine.identity.password_reset_account(body.token)
        check_password(body.new_password, engine.identity.username_of(account), field="new_password")
        engine.identity.reset_password(body.token, body.new_password)
    except TokenRefused:
        raise unauthorized("the reset token is not valid") from None
    return {"changed": True}


@router.post("/mfa/enroll", response_model=MfaEnrollment, summary="Start TOTP enrollment: scan the QR code (or enter the secret) in an app",
             dependencies=[SIGNED_IN], responses=PERSONS_ONLY)
def enroll_mfa(caller: Caller, ctx: Context, engine: Engine) -> dict:
    _person(caller)
    secret, uri = engine.identity.enroll_mfa(ctx)
    return {"secret": secret, "otpauth_uri": uri, "qr_svg": segno.make(uri, error="m").svg_data_uri(scale=4),
            "next": "POST /auth/mfa/confirm with a current code"}


@router.post("/mfa/confirm", response_model=MfaConfirmed, summary="Turn MFA on with a first code; answers single-use recovery codes (once)",
             dependencies=[SIGNED_IN, rate_limited("login")], responses=CHECKS_A_SECRET)
def confirm_mfa(body: CodeIn, caller: Caller, ctx: Context, engine: Engine, request: Request) -> dict:
    _person(caller)
    with _within_budget():
        return {"mfa": "confirmed", "recovery_codes": engine.identity.confirm_mfa(ctx, body.code, client_address(request))}


@router.post("/mfa/disable", response_model=MfaState, summary="Turn MFA off (needs the password)",
             dependencies=[SIGNED_IN, rate_limited("login")], responses=CHECKS_A_SECRET)
def disable_mfa(body: PasswordIn, caller: Caller, ctx: Context, engine: Engine, request: Request) -> dict:
    _person(caller)
    with _within_budget():
        return engine.identity.disable_mfa(ctx, body.password, client_address(request)).body


@contextmanager
def _within_budget():
    """A signed-in caller may learn it must wait: it is the account (no existence to hide)."""
    try:
        yield
    except TooManyAttempts as waiting:
        raise HTTPException(429, str(waiting), headers={"Retry-After": str(waiting.retry_after_s),
                                                        "X-Problem-Field": waiting.field}) from None


def _person(caller) -> None:
    if caller.via != "token":
        raise HTTPException(403, "API keys cannot manage passwords or MFA")


# -- the dashboard's session (docs/dashboard.md) ------------------------------------------------
# A browser keeps the access token in memory only; the refresh token lives in an httpOnly cookie
# that script cannot read, sent only to these routes (Path) and only from this site (SameSite=Strict).
# Each also wants a custom header, which a cross-site form cannot send and cross-site script cannot
# without a CORS preflight this app never grants: with SameSite, that is the CSRF defence.
REFRESH_COOKIE = "etsypro_refresh"
BROWSER = "/browser"  # under the router's /auth
COOKIE_PATH = "/auth" + BROWSER
CSRF_HEADER, CSRF_VALUE = "x-requested-with", "etsypro-dashboard"
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


def same_site_only(request: Request) -> None:
    """403 unless the request carries the dashboard's header and, if it says, comes from this origin."""
    origin = request.headers.get("origin")
    if request.headers.get(CSRF_HEADER) != CSRF_VALUE or (origin is not None and origin != _origin(request)):
        raise HTTPException(403, f"browser session routes need the {CSRF_HEADER} header, from this site",
                            headers={"X-Problem-Field": CSRF_HEADER})


def _origin(request: Request) -> str:
    return f"{request.url.scheme}://{request.headers.get('host', request.url.netloc)}"


SAME_SITE = Depends(same_site_only)


def _into_cookie(request: Request, response: Response, tokens: dict) -> dict:
    """The answer without its refresh token, which goes into the cookie."""
    tokens = dict(tokens)
    # Secure unless served over plain http on this machine (a browser drops Secure cookies there).
    secure = request.url.scheme == "https" or request.url.hostname not in LOOPBACK
    response.set_cookie(REFRESH_COOKIE, tokens.pop("refresh_token"), max_age=int(REFRESH_TOKEN_TTL.total_seconds()),
                        path=COOKIE_PATH, httponly=True, samesite="strict", secure=secure)
    return tokens


@router.post(BROWSER + "/login", include_in_schema=False, dependencies=[PUBLIC, SAME_SITE, rate_limited("login")])
async def browser_login(body: LoginIn, request: Request, response: Response, engine: Engine) -> dict:
    answer = await login(body, request, engine)
    return answer if answer.get("mfa_required") else _into_cookie(request, response, answer)


@router.post(BROWSER + "/login/mfa", include_in_schema=False, dependencies=[PUBLIC, SAME_SITE, rate_limited("login")])
async def browser_login_second_factor(body: SecondFactorIn, request: Request, response: Response, engine: Engine) -> dict:
    return _into_cookie(request, response, await login_second_factor(body, request, engine))


@router.post(BROWSER + "/token", include_in_schema=False, dependencies=[PUBLIC, SAME_SITE, rate_limited("token")])
def browser_refresh(request: Request, response: Response, engine: Engine) -> dict:
    """A new access token for the cookie's refresh token (which is spent and replaced)."""
    token = request.cookies.get(REFRESH_COOKIE, "")
    try:
        session = engine.identity.refresh(token) if 0 < len(token) <= 200 else None
    except TokenRefused:
        session = None
    if session is None:
        raise unauthorized("the browser session has ended: sign in again")
    return _into_cookie(request, response, token_answer(request, session))


@router.post(BROWSER + "/logout", include_in_schema=False, dependencies=[SIGNED_IN, SAME_SITE])
def browser_logout(caller: Caller, response: Response, engine: Engine) -> dict:
    answer = logout(caller, engine)
    response.delete_cookie(REFRESH_COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")
    return answer
