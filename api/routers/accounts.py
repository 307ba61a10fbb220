"""For a tenant's admins: accounts, roles over shops, unlocking, API keys; and, for admins and
auditors, the security view (failed logins per account and day, lockouts)."""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from fastapi import Query, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.auth import requires
from api.deps import Context, Engine
from api.passwords import check_password
from api.routing import resource_router
from api.schemas import (ACCOUNT, EVENT, WHEN, Account, AccountHistory, AccountList, Answer, ApiKeyIssued, ApiKeyList,
                         ApiKeyRevoked, AuditEvent, SecurityReport, answer, example)
from commands.models import QueryInt, Username, text
from domain.account import API_KEY_SCOPES, Role

router = resource_router(tags=["accounts"])
MANAGE = requires("accounts:manage", tenant_wide=True)

RoleName = Literal["admin", "seller", "analyst", "auditor", "service"]
Shops = Annotated[list[UUID], Field(max_length=1000)] | None


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class RoleGrantIn(Body):
    role: RoleName
    shops: Shops = Field(None, description="Shops the role covers; omit (null) for the whole tenant")

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"role": "analyst", "shops": None}, {"role": "seller", "shops": ["4c540e6c-a306-493d-8f2e-c4ffdfae895b"]}]})


class AccountIn(Body):
    username: Username
    kind: Literal["user", "service"] = "user"
    password: Annotated[str, Field(min_length=1, max_length=1024)] | None = Field(
        None, description="For people (kind user); service accounts get API keys instead")
    roles: Annotated[list[RoleGrantIn], Field(max_length=10)] = []

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"username": "bea", "password": "a long passphrase of words", "roles": [{"role": "seller", "shops": []}]},
        {"username": "etsy-sync", "kind": "service", "roles": [{"role": "service", "shops": None}]}]})

    @model_validator(mode="after")
    def roles_once(self):
        names = [r.role for r in self.roles]
        if len(names) != len(set(names)):
            raise ValueError("each role at most once")
        return self


class ApiKeyIn(Body):
    scopes: Annotated[list[Literal[tuple(sorted(API_KEY_SCOPES))]], Field(min_length=1, max_length=10)]
    shops: Shops = Field(None, description="Limit the key to these shops; null: every shop the account may use")

    model_config = ConfigDict(json_schema_extra={"examples": [{"scopes": ["facts:write", "shops:read"], "shops": None}]})


class DisableIn(Body):
    reason: text(500, description="Why: the next person to look needs to know")

    model_config = ConfigDict(json_schema_extra={"examples": [{"reason": "left the company"}]})


class PasswordResetIssued(Answer):
    model_config = example({"account_id": ACCOUNT, "reset_token": "pr_Zk3vQ1u9yTt0bW8rM2nH6cXe4sJ7aLdF5gP0iKqR2oU",
                            "expires_at": WHEN})
    account_id: UUID
    reset_token: str = Field(description="Give it to the person: shown this once; sets one password within 24 h")
    expires_at: str


class UnknownLogins(Answer):
    model_config = example({"events": [{**EVENT, "type": "TenantSecurity.UnknownUsernameLogin",
                                        "topic": "domain.security:TenantSecurity.UnknownUsernameLogin",
                                        "data": {"username": "bob", "client": "203.0.113.9", "suppressed_before": 0}}],
                            "next_after_version": 2, "more": False, "not_yet_recorded": 0})
    events: list[AuditEvent] = Field(description="Oldest first; `suppressed_before`: attempts over budget before this one")
    next_after_version: int
    more: bool
    not_yet_recorded: int = Field(description="Attempts over the per-minute budget since the last recorded one")


class ErasedSubject(Answer):
    subject_id: UUID
    kind: Literal["account", "buyer", "reason", "attempt"]


class Erased(Answer):
    model_config = example({"erased": [{"subject_id": ACCOUNT, "kind": "account"}]})
    erased: list[ErasedSubject] = Field(description="Each subject whose key was deleted, with its tombstone recorded "
                                                    "(the tenant's Privacy stream, SubjectErased)")


def _roles(grants: list[RoleGrantIn]) -> dict[str, list[str] | None]:
    return {g.role: None if g.shops is None else [str(s) for s in g.shops] for g in grants}


@router.post("/accounts", status_code=201, response_model=Account, summary="Create an account in the caller's tenant", dependencies=[MANAGE])
async def create_account(body: AccountIn, ctx: Context, engine: Engine, response: Response):
    if body.password is not None:
        check_password(body.password, body.username)
    return await answer(response, engine.identity.create_account, ctx, body.username, body.kind, body.password, _roles(body.roles))


@router.get("/accounts", response_model=AccountList, summary="The tenant's accounts", dependencies=[MANAGE])
def list_accounts(ctx: Context, engine: Engine) -> dict:
    return {"accounts": engine.identity.accounts_of(ctx)}


@router.get("/accounts/{account_id}", response_model=Account, summary="An account: roles, MFA, lock, API keys", dependencies=[MANAGE])
def get_account(account_id: UUID, ctx: Context, engine: Engine) -> dict:
    return engine.identity.describe(engine.identity.tenant_account(ctx, account_id))


@router.post("/accounts/{account_id}/roles", response_model=Account, summary="Grant a role (over shops, or the whole tenant)",
             dependencies=[MANAGE])
async def grant_role(account_id: UUID, body: RoleGrantIn, ctx: Context, engine: Engine, response: Response):
    return await answer(response, engine.identity.grant_role, ctx, account_id, body.role, _roles([body])[body.role])


@router.delete("/accounts/{account_id}/roles/{role}", response_model=Account, summary="Revoke a role, or only its grant over one shop",
               dependencies=[MANAGE])
async def revoke_role(account_id: UUID, role: Role, ctx: Context, engine: Engine, response: Response,
                shop_id: Annotated[UUID | None, Query(description="Only this shop")] = None):
    return await answer(response, engine.identity.revoke_role, ctx, account_id, role.value, None if shop_id is None else [str(shop_id)])


@router.post("/accounts/{account_id}/unlock", response_model=Account, summary="End a lockout now", dependencies=[MANAGE])
async def unlock(account_id: UUID, ctx: Context, engine: Engine, response: Response):
    return await answer(response, engine.identity.unlock_account, ctx, account_id)


@router.post("/accounts/{account_id}/mfa/reset", response_model=Account, summary="Remove a lost second factor", dependencies=[MANAGE])
async def reset_mfa(account_id: UUID, ctx: Context, engine: Engine, response: Response):
    return await answer(response, engine.identity.reset_mfa, ctx, account_id)


@router.post("/accounts/{account_id}/disable", response_model=Account,
             summary="Disable an account: logins refused, its sessions and API keys stop at once", dependencies=[MANAGE])
async def disable(account_id: UUID, body: DisableIn, ctx: Context, engine: Engine, response: Response):
    return await answer(response, engine.identity.disable_account, ctx, account_id, body.reason)


@router.post("/accounts/{account_id}/erase", response_model=Erased,
             summary="Erase a person's data (crypto-shredding): the account's key, the reasons it wrote and failed "
                     "logins naming it become unreadable everywhere; the account is disabled; history stays and "
                     "verifies", dependencies=[MANAGE])
async def erase(account_id: UUID, ctx: Context, engine: Engine, response: Response):
    return await answer(response, engine.identity.erase_account, ctx, account_id)


@router.post("/accounts/{account_id}/enable", response_model=Account,
             summary="Enable a disabled account (its ended sessions stay ended)", dependencies=[MANAGE])
async def enable(account_id: UUID, ctx: Context, engine: Engine, response: Response):
    return await answer(response, engine.identity.enable_account, ctx, account_id)


@router.post("/accounts/{account_id}/password-reset", status_code=201, response_model=PasswordResetIssued,
             summary="Issue a one-time password reset token for a person (shown once)", dependencies=[MANAGE])
async def issue_password_reset(account_id: UUID, ctx: Context, engine: Engine, response: Response):
    return await answer(response, engine.identity.issue_password_reset, ctx, account_id)


@router.post("/accounts/{account_id}/api-keys", status_code=201, response_model=ApiKeyIssued,
             summary="Issue an API key for a service account (shown once, stored hashed)", dependencies=[MANAGE])
async def issue_api_key(account_id: UUID, body: ApiKeyIn, ctx: Context, engine: Engine, response: Response):
    shops = None if body.shops is None else [str(s) for s in body.shops]
    return await answer(response, engine.identity.issue_api_key, ctx, account_id, list(body.scopes), shops)


@router.get("/accounts/{account_id}/api-keys", response_model=ApiKeyList, summary="A service account's keys (never the keys themselves)",
            dependencies=[MANAGE])
def list_api_keys(account_id: UUID, ctx: Context, engine: Engine) -> dict:
    return {"api_keys": engine.identity.api_keys_of(ctx, account_id)}


@router.delete("/accounts/{account_id}/api-keys/{key_id}", response_model=ApiKeyRevoked, summary="Revoke an API key", dependencies=[MANAGE])
async def revoke_api_key(account_id: UUID, key_id: UUID, ctx: Context, engine: Engine, response: Response):
    return await answer(response, engine.identity.revoke_api_key, ctx, account_id, key_id)


@router.get("/security/accounts/{account_id}/events", response_model=AccountHistory,
            summary="Replay an account's history: logins, failures, lockouts, roles, MFA, sessions, keys",
            dependencies=[requires("security:read", tenant_wide=True)])
def account_history(account_id: UUID, ctx: Context, engine: Engine,
                    after_version: Annotated[QueryInt, Query(ge=0, le=2**63 - 1)] = 0,
                    limit: Annotated[QueryInt, Query(ge=1, le=1000)] = 100) -> dict:
    return engine.identity.account_history(ctx, account_id, after_version, limit)


@router.get("/security/unknown-logins", response_model=UnknownLogins,
            summary="Failed logins naming no account of the tenant (the tenant's security stream)",
            dependencies=[requires("security:read", tenant_wide=True)])
def unknown_logins(ctx: Context, engine: Engine,
                   after_version: Annotated[QueryInt, Query(ge=0, le=2**63 - 1)] = 0,
                   limit: Annotated[QueryInt, Query(ge=1, le=1000)] = 100) -> dict:
    return engine.identity.security_stream(ctx, after_version, limit)


@router.get("/security/logins", response_model=SecurityReport, summary="Failed logins per account and day, and lockouts",
            dependencies=[requires("security:read", tenant_wide=True)])
def security_view(ctx: Context, engine: Engine,
                  days: Annotated[QueryInt, Query(ge=1, le=366, description="How far back")] = 7) -> dict:
    return engine.identity.security_report(ctx, days)
