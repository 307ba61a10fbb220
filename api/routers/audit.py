"""For auditors: an aggregate's history, the global log in commit order, NDJSON exports and the
hash-chain integrity check. Everything but the integrity summary is limited to the caller's tenant."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Annotated, Iterator
from uuid import UUID

import orjson
from fastapi import Depends, Query
from fastapi.responses import StreamingResponse
from pydantic import StringConstraints

from api.auth import Caller, requires
from api.deps import Context, Engine
from commands.audit import LogFilter
from commands.context import CommandContext
from commands.models import AwareDatetime
from domain.errors import InvalidValue

from api.routing import resource_router

router = resource_router(tags=["audit"])
AUDIT_READ = "audit:read"


def audit_context(ctx: Context, caller: Caller) -> CommandContext:
    """The caller's context narrowed to the shops where it holds audit:read: seeing a shop in
    another role (an analyst's, say) does not open that shop's history."""
    accesses = [a for a in caller.grants.accesses if AUDIT_READ in a.permissions]
    shops = None if any(a.shops is None for a in accesses) else frozenset(s for a in accesses for s in a.shops)
    return replace(ctx, shops=shops)


AuditContext = Annotated[CommandContext, Depends(audit_context)]

Position = Annotated[int, Query(ge=0, le=2**63 - 1)]
Limit = Annotated[int, Query(ge=1, le=1000, description="Events per page")]
EventType = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_.]{0,199}$")]
Actor = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:@/-]{1,200}$")]


def log_filter(type: list[EventType] | None, actor: str | None, shop_id: UUID | None,
               since: datetime | None, until: datetime | None) -> LogFilter:
    if since is not None and until is not None and until <= since:
        raise InvalidValue("until", "must be after since")
    return LogFilter(tuple(type or ()), actor, shop_id, since, until)


# The same filters on the paged log and on the export (FastAPI reads them from the query string).
TypeQuery = Annotated[list[EventType] | None, Query(description="Event type, e.g. Listing.PriceChanged; repeatable")]
ActorQuery = Annotated[Actor | None, Query(description="Actor id")]
ShopQuery = Annotated[UUID | None, Query(description="One of the caller's shops")]
SinceQuery = Annotated[AwareDatetime | None, Query(description="Recorded at or after (ISO 8601 with offset)")]
UntilQuery = Annotated[AwareDatetime | None, Query(description="Recorded before (ISO 8601 with offset)")]


@router.get("/aggregates/{aggregate_id}/history", summary="One aggregate's events, oldest first, paged by version",
            dependencies=[requires(AUDIT_READ)])
def aggregate_history(aggregate_id: UUID, ctx: AuditContext, engine: Engine,
                      after_version: Position = 0, limit: Limit = 100) -> dict:
    return engine.aggregate_history(ctx, aggregate_id, after_version, limit)


@router.get("/audit/events", summary="The tenant's events in commit order, paged by position",
            dependencies=[requires(AUDIT_READ, tenant_wide=True)])
def audit_events(ctx: AuditContext, engine: Engine, after: Position = 0, limit: Limit = 100,
                 type: TypeQuery = None, actor: ActorQuery = None, shop_id: ShopQuery = None,
                 since: SinceQuery = None, until: UntilQuery = None) -> dict:
    """Pass `next_after` back as `after` for the next page: no event is skipped or repeated,
    even while others write (positions commit in increasing order)."""
    return engine.audit_events(ctx, after, limit, log_filter(type, actor, shop_id, since, until))


@router.get("/audit/export", summary="The tenant's events from one position to another, as NDJSON",
            dependencies=[requires(AUDIT_READ, tenant_wide=True)],
            response_class=StreamingResponse,
            responses={200: {"content": {"application/x-ndjson": {}},
                             "description": "One event per line; header X-Export-To gives the last position covered"}})
def audit_export(ctx: AuditContext, engine: Engine,
                 from_: Annotated[int, Query(alias="from", ge=1, le=2**63 - 1)] = 1,
                 to: Annotated[int | None, Query(ge=1, le=2**63 - 1, description="Inclusive; default: the log's head now")] = None,
                 type: TypeQuery = None, actor: ActorQuery = None, shop_id: ShopQuery = None,
                 since: SinceQuery = None, until: UntilQuery = None) -> StreamingResponse:
    if to is not None and to < from_:
        raise InvalidValue("to", "must not be before from")
    stop, events = engine.export_events(ctx, from_, to, log_filter(type, actor, shop_id, since, until))
    return StreamingResponse(_ndjson(events), media_type="application/x-ndjson",
                             headers={"X-Export-To": str(stop)})


def _ndjson(events: Iterator[dict]) -> Iterator[bytes]:
    for event in events:
        yield orjson.dumps(event) + b"\n"


@router.get("/audit/verify", summary="Check the hash chain over the whole log (no tenant's data is shown)",
            dependencies=[requires(AUDIT_READ)])
def verify(engine: Engine, from_position: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None) -> dict:
    return engine.verify_chain(from_position).as_dict()
