"""The rollback guard's per-shop thresholds: read them, set them (streams/rollback_guard.py acts on them)."""

from __future__ import annotations

from uuid import UUID

from fastapi import Response
from fastapi.concurrency import run_in_threadpool

from api.auth import requires
from api.deps import Context, Engine
from api.routing import resource_router
from api.schemas import SHOP, Answer, answer, example
from commands.rollback_guard import ConfigureGuard, RollbackGuards

router = resource_router(tags=["rollback guard"])
READ, WRITE = requires("shops:read"), requires("prices:write")
BASE = "/shops/{shop_id}/rollback-guard"

GUARD_EXAMPLE = {"shop_id": SHOP, "metric": "revenue", "level": 80, "periods": 3, "enabled": True,
                 "configured": True, "version": 1, "trips": 0}


class GuardAnswer(Answer):
    model_config = example(GUARD_EXAMPLE)
    shop_id: UUID
    metric: str
    level: int
    periods: int
    enabled: bool
    configured: bool
    version: int
    trips: int


class GuardChanged(GuardAnswer):
    model_config = example({**GUARD_EXAMPLE, "changed": True})
    changed: bool


def _guards(engine) -> RollbackGuards:
    return engine.guards


@router.get(BASE, response_model=GuardAnswer, dependencies=[READ],
            summary="The shop's rollback guard: which metric, interval and how many days below it roll back")
async def get_guard(shop_id: UUID, ctx: Context, engine: Engine) -> dict:
    return await run_in_threadpool(_guards(engine).describe, ctx, shop_id)


@router.put(BASE, response_model=GuardChanged, dependencies=[WRITE],
            summary="Set the shop's rollback guard: automated changes whose listing's metric falls below the "
                    "forecast's lower bound for `periods` consecutive days are rolled back, and automation stopped")
async def configure_guard(shop_id: UUID, cmd: ConfigureGuard, ctx: Context, engine: Engine, response: Response):
    return await answer(response, _guards(engine).configure, ctx, shop_id, cmd)
