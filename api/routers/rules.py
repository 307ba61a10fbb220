"""Pricing rules, their assignment to listings, automation limits and the emergency stops."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import Query, Response

from api.auth import requires
from api.deps import Context, Engine, Reads
from api.routing import resource_router
from api.schemas import (ListingAutomation, ListingAutomationChanged, Rule, RuleAssigned, RuleChanged, RuleList,
                         ShopAutomation, ShopAutomationChanged, TenantAutomation, TenantAutomationChanged, answer)
from commands import rule_models as m
from commands.models import QueryInt, Reason
from domain.pricing_rule import describe_rule

router = resource_router(tags=["pricing rules"])
READ, WRITE = requires("shops:read"), requires("prices:write")
# The "global" stop reaches every shop of the caller's tenant (never another tenant's): only the
# tenant's admins, over the whole tenant, may use it.
ADMIN = requires("accounts:manage", tenant_wide=True)
SHOP = "/shops/{shop_id}"


# -- rules -----------------------------------------------------------------------------------
@router.post(SHOP + "/rules", status_code=201, response_model=Rule, summary="Define a pricing rule (version 1)", dependencies=[WRITE])
async def define_rule(shop_id: UUID, cmd: m.DefineRule, ctx: Context, engine: Engine, response: Response):
    return await answer(response, engine.rules.define_rule, ctx, shop_id, cmd)


@router.get(SHOP + "/rules", response_model=RuleList, summary="The shop's rules, retired ones last", dependencies=[READ])
def list_rules(shop_id: UUID, ctx: Context, reads: Reads) -> dict:
    return {"rules": reads.shops.rules_of(ctx, shop_id)}


@router.get(SHOP + "/rules/{rule_id}", response_model=Rule, summary="A rule now, or as of one of its versions", dependencies=[READ])
def get_rule(shop_id: UUID, rule_id: UUID, ctx: Context, reads: Reads,
             version: Annotated[QueryInt | None, Query(ge=1, le=2**31)] = None) -> dict:
    return describe_rule(reads.aggregates.rule(ctx, shop_id, rule_id, version))


@router.put(SHOP + "/rules/{rule_id}", response_model=RuleChanged, summary="Revise a rule: appends version n+1", dependencies=[WRITE])
async def revise_rule(shop_id: UUID, rule_id: UUID, cmd: m.ReviseRule, ctx: Context, engine: Engine, response: Response):
    return await answer(response, engine.rules.revise_rule, ctx, shop_id, rule_id, cmd)


@router.post(SHOP + "/rules/{rule_id}/retire", response_model=RuleChanged, summary="Retire a rule: it prices nothing from now on",
             dependencies=[WRITE])
async def retire_rule(shop_id: UUID, rule_id: UUID, cmd: m.RetireRule, ctx: Context, engine: Engine, response: Response):
    return await answer(response, engine.rules.retire_rule, ctx, shop_id, rule_id, cmd)


# -- assignment ------------------------------------------------------------------------------
@router.post(SHOP + "/rule-assignments", response_model=RuleAssigned, summary="Assign a rule to many listings, or none (rule_id null)",
             dependencies=[WRITE])
async def assign_rule(shop_id: UUID, cmd: m.AssignRule, ctx: Context, engine: Engine, response: Response):
    return await answer(response, engine.rules.assign_rule, ctx, shop_id, cmd)


@router.put(SHOP + "/listings/{listing_id}/rule", response_model=RuleAssigned, summary="Assign a rule to one listing", dependencies=[WRITE])
async def assign_one(shop_id: UUID, listing_id: UUID, cmd: m.AssignOne, ctx: Context, engine: Engine, response: Response):
    assignment = m.AssignRule(rule_id=cmd.rule_id, listing_ids=[listing_id], reason=cmd.reason)
    return await answer(response, engine.rules.assign_rule, ctx, shop_id, assignment)


@router.delete(SHOP + "/listings/{listing_id}/rule", response_model=RuleAssigned, summary="Unassign a listing's rule", dependencies=[WRITE])
async def unassign_one(shop_id: UUID, listing_id: UUID, ctx: Context, engine: Engine, response: Response,
                 reason: Annotated[Reason, Query()] = ""):
    return await answer(response, engine.rules.assign_rule, ctx, shop_id, m.AssignRule(rule_id=None, listing_ids=[listing_id], reason=reason))


# -- automation limits of a listing ------------------------------------------------------------
@router.get(SHOP + "/listings/{listing_id}/automation", response_model=ListingAutomation, summary="A listing's rule and automation limits",
            dependencies=[READ])
def get_listing_automation(shop_id: UUID, listing_id: UUID, ctx: Context, reads: Reads) -> dict:
    return reads.listings.automation(ctx, shop_id, listing_id)


@router.put(SHOP + "/listings/{listing_id}/automation", response_model=ListingAutomationChanged,
            summary="Set limits on automated changes: margin floor, max step, daily cap, cooldown",
            dependencies=[WRITE])
async def set_listing_automation(shop_id: UUID, listing_id: UUID, cmd: m.SetAutomationLimits, ctx: Context, engine: Engine, response: Response):
    return await answer(response, engine.rules.set_automation_limits, ctx, shop_id, listing_id, cmd)


# -- emergency stop --------------------------------------------------------------------------
@router.get(SHOP + "/automation", response_model=ShopAutomation, response_model_exclude_unset=True, summary="Is automated repricing running in this shop?", dependencies=[READ])
def shop_automation(shop_id: UUID, ctx: Context, reads: Reads) -> dict:
    return reads.listings.shop_automation(ctx, shop_id)


@router.post(SHOP + "/automation/stop", response_model=ShopAutomationChanged, summary="Stop all automated price changes in the shop, at once",
             dependencies=[WRITE])
async def stop_shop(shop_id: UUID, cmd: m.StopAutomation, ctx: Context, engine: Engine, response: Response):
    return await answer(response, engine.rules.stop_shop_automation, ctx, shop_id, cmd)


@router.post(SHOP + "/automation/resume", response_model=ShopAutomationChanged, summary="Resume automated price changes in the shop",
             dependencies=[WRITE])
async def resume_shop(shop_id: UUID, cmd: m.StopAutomation, ctx: Context, engine: Engine, response: Response):
    return await answer(response, engine.rules.resume_shop_automation, ctx, shop_id, cmd)


@router.get("/automation", response_model=TenantAutomation, response_model_exclude_unset=True, summary="Is automated repricing stopped in all of the tenant's shops?",
            dependencies=[READ])
def global_automation(ctx: Context, reads: Reads) -> dict:
    return reads.listings.tenant_automation(ctx)


@router.post("/automation/stop", response_model=TenantAutomationChanged, summary="Stop automated price changes in every shop of the tenant (admins)",
             dependencies=[ADMIN])
async def stop_all(cmd: m.StopAutomation, ctx: Context, engine: Engine, response: Response):
    return await answer(response, engine.rules.stop_all_automation, ctx, cmd)


@router.post("/automation/resume", response_model=TenantAutomationChanged, summary="Resume automated price changes in the tenant's shops (admins)",
             dependencies=[ADMIN])
async def resume_all(cmd: m.StopAutomation, ctx: Context, engine: Engine, response: Response):
    return await answer(response, engine.rules.resume_all_automation, ctx, cmd)
