"""FastAPI dependencies: the engine, and the command context (who is asking, for which tenant)."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request

from api.auth import resolve_principal
from commands.context import CommandContext
from commands.engine import PricingEngine
from commands.models import TOKEN_PATTERN
from read.side import ReadSide

_TOKEN = re.compile(TOKEN_PATTERN)


# Dependencies that do no I/O are `async def`: FastAPI runs a plain `def` dependency in its
# threadpool, and those hand-offs cost more than the work (about a quarter of a command's CPU).
async def engine(request: Request) -> PricingEngine:
    return request.app.state.engine


async def reads(request: Request) -> ReadSide:
    return request.app.state.reads


def _token(value: str | None, name: str) -> str | None:
    if value is not None and not _TOKEN.match(value):
        raise HTTPException(422, f"{name} must be 1-200 characters of letters, digits and ._:@/-",
                            headers={"X-Problem-Field": name})
    return value


async def command_context(
    request: Request,
    idempotency_key: Annotated[str | None, Header(description="Retry-safe key: the same key and body "
                                                  "returns the original answer and writes nothing")] = None,
    x_correlation_id: Annotated[str | None, Header()] = None,
) -> CommandContext:
    """The handlers' view of the caller: the verified principal (api/auth.py) as actor and tenant,
    with the shops it may see, plus the request's idempotency key and correlation id.

    The principal is the one the route's `requires()` admitted, which ran first (not the `Caller`
    dependency, whose own dependencies FastAPI would solve again on every command)."""
    return resolve_principal(request).context(idempotency_key=_token(idempotency_key, "Idempotency-Key"),
                                              correlation_id=_token(x_correlation_id, "X-Correlation-Id"),
                                              checked_shop=getattr(request.state, "checked_shop", None))


Engine = Annotated[PricingEngine, Depends(engine)]
Reads = Annotated[ReadSide, Depends(reads)]
Context = Annotated[CommandContext, Depends(command_context)]
