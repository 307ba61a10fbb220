"""FastAPI dependencies: the engine, and the command context (who is asking, for which tenant)."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request

from commands.context import CommandContext
from commands.engine import PricingEngine
from domain.meta import Actor, ActorKind

_TOKEN = re.compile(r"^[A-Za-z0-9._:@/-]{1,200}$")


def engine(request: Request) -> PricingEngine:
    return request.app.state.engine


def _token(value: str | None, name: str) -> str | None:
    if value is not None and not _TOKEN.match(value):
        raise HTTPException(422, f"{name} must be 1-200 characters of letters, digits and ._:@/-",
                            headers={"X-Problem-Field": name})
    return value


def command_context(
    x_tenant_id: Annotated[str | None, Header(description="Tenant the caller acts for")] = None,
    x_actor_id: Annotated[str | None, Header(description="Who is acting (user or service id)")] = None,
    idempotency_key: Annotated[str | None, Header(description="Retry-safe key: the same key and body "
                                                  "returns the original answer and writes nothing")] = None,
    x_correlation_id: Annotated[str | None, Header()] = None,
) -> CommandContext:
    """Development identity: the caller names its tenant and actor in headers.

    This is the one place the identity issue replaces with verified tokens; every handler
    already receives its actor and tenant through this context.
    """
    if not x_tenant_id or not x_actor_id:
        raise HTTPException(401, "X-Tenant-Id and X-Actor-Id headers are required",
                            headers={"WWW-Authenticate": "Bearer"})
    return CommandContext(
        actor=Actor(_token(x_actor_id, "X-Actor-Id"), ActorKind.USER),
        tenant_id=_token(x_tenant_id, "X-Tenant-Id"),
        idempotency_key=_token(idempotency_key, "Idempotency-Key"),
        correlation_id=_token(x_correlation_id, "X-Correlation-Id"),
    )


Engine = Annotated[PricingEngine, Depends(engine)]
Context = Annotated[CommandContext, Depends(command_context)]
