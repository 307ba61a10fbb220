"""For auditors: an aggregate's history, the global log in commit order, NDJSON exports and the
hash-chain integrity check. Everything but the integrity summary is limited to the caller's tenant."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Iterator
from uuid import UUID

import orjson
from fastapi import Depends, Query
from fastapi.responses import StreamingResponse
from pydantic import Field, StringConstraints

from api.auth import Caller, requires
from api.deps import Context, Reads
from api.schemas import EVENT, LISTING, AggregateHistory, Answer, AuditLog, ChainVerified, example
from read.audit import AUDIT_READ, AuditReader, LogFilter
from read.time_travel import TimeTravel
from commands.models import QueryInt, QueryTime, Token
from domain.errors import InvalidValue

from api.routing import resource_router

router = resource_router(tags=["audit"])


async def audit_reader(ctx: Context, caller: Caller) -> AuditReader:
    """What the caller may read of the history: the rule is AuditReader.of's, for every route."""
    return AuditReader.of(ctx, caller.grants)


Reader = Annotated[AuditReader, Depends(audit_reader)]

Position = Annotated[QueryInt, Query(ge=0, le=2**63 - 1)]
Limit = Annotated[QueryInt, Query(ge=1, le=1000, description="Events per page")]
EventType = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_.]{0,199}$")]


def log_filter(type: list[EventType] | None, actor: str | None, shop_id: UUID | None,
               since: datetime | None, until: datetime | None) -> LogFilter:
    if since is not None and until is not None and until <= since:
        raise InvalidValue("until", "must be after since")
    return LogFilter(tuple(type or ()), actor, shop_id, since, until)


# The same filters on the paged log and on the export (FastAPI reads them from the query string).
TypeQuery = Annotated[list[EventType] | None, Query(description="Event type, e.g. Listing.PriceChanged; repeatable")]
ActorQuery = Annotated[Token | None, Query(description="Actor id")]
ShopQuery = Annotated[UUID | None, Query(description="One of the caller's shops")]
SinceQuery = Annotated[QueryTime | None, Query(description="Recorded at or after (ISO 8601 with offset)")]
UntilQuery = Annotated[QueryTime | None, Query(description="Recorded before (ISO 8601 with offset)")]


@router.get("/aggregates/{aggregate_id}/history", response_model=AggregateHistory, summary="One aggregate's events, oldest first, paged by version",
            dependencies=[requires(AUDIT_READ)])
def aggregate_history(aggregate_id: UUID, reader: Reader, reads: Reads,
                      after_version: Position = 0, limit: Limit = 100) -> dict:
    return reads.audit.aggregate_history(reader, aggregate_id, after_version, limit)


class AggregateState(Answer):
    """An aggregate replayed from its events up to a version or a moment."""

    model_config = example({"aggregate_id": LISTING, "type": "Listing", "version": 2, "latest_version": 5,
                            "recorded_at": EVENT["recorded_at"], "state": {"id": LISTING, "version": 2}})
    aggregate_id: UUID
    type: str
    version: int = Field(description="The version shown")
    latest_version: int
    recorded_at: str = Field(description="When the version shown was recorded")
    state: dict[str, Any] = Field(description="The aggregate's attributes as of that version")


@router.get("/aggregates/{aggregate_id}/state", response_model=AggregateState,
            summary="Any aggregate (listing, rule, shop, account, experiment...) as of a version or a moment",
            dependencies=[requires(AUDIT_READ)])
def aggregate_state(aggregate_id: UUID, reader: Reader, reads: Reads,
                    version: Annotated[QueryInt | None, Query(ge=1, le=2**63 - 1, description="One of its versions")] = None,
                    at: Annotated[QueryTime | None, Query(description="A moment of recorded time (ISO 8601 with offset)")] = None) -> dict:
    """Time travel for every kind: the latest state without `version` or `at`."""
    if version is not None and at is not None:
        raise InvalidValue("at", "give version or at, not both")
    return TimeTravel(reads.audit, reads.aggregates).state(reader, aggregate_id, version, at)


@router.get("/audit/events", response_model=AuditLog, summary="The tenant's events in commit order, paged by position",
            dependencies=[requires(AUDIT_READ, tenant_wide=True)])
def audit_events(reader: Reader, reads: Reads, after: Position = 0, limit: Limit = 100,
                 type: TypeQuery = None, actor: ActorQuery = None, shop_id: ShopQuery = None,
                 since: SinceQuery = None, until: UntilQuery = None) -> dict:
    """Pass `next_after` back as `after` for the next page: no event is skipped or repeated,
    even while others write (positions commit in increasing order)."""
    return reads.audit.audit_events(reader, after, limit, log_filter(type, actor, shop_id, since, until))


@router.get("/audit/export", summary="The tenant's events from one position to another, as NDJSON",
            dependencies=[requires(AUDIT_READ, tenant_wide=True)],
            response_class=StreamingResponse,
            responses={200: {"content": {"application/x-ndjson": {
                "schema": {"type": "string", "description": "One AuditEvent as JSON per line"},
                "x-item-schema": {"$ref": "#/components/schemas/AuditEvent"},
                "example": orjson.dumps(EVENT).decode() + "\n"}},
                "headers": {"X-Export-To": {"description": "The last position covered", "schema": {"type": "integer"}}},
                "description": "One event per line; header X-Export-To gives the last position covered"}})
def audit_export(reader: Reader, reads: Reads,
                 from_: Annotated[QueryInt, Query(alias="from", ge=1, le=2**63 - 1)] = 1,
                 to: Annotated[QueryInt | None, Query(ge=1, le=2**63 - 1, description="Inclusive; default: the log's head now")] = None,
                 type: TypeQuery = None, actor: ActorQuery = None, shop_id: ShopQuery = None,
                 since: SinceQuery = None, until: UntilQuery = None) -> StreamingResponse:
    if to is not None and to < from_:
        raise InvalidValue("to", "must not be before from")
    stop, events = reads.audit.export_events(reader, from_, to, log_filter(type, actor, shop_id, since, until))
    return StreamingResponse(_ndjson(events), media_type="application/x-ndjson",
                             headers={"X-Export-To": str(stop)})


def _ndjson(events: Iterator[dict]) -> Iterator[bytes]:
    for event in events:
        yield orjson.dumps(event) + b"\n"


@router.get("/audit/verify", response_model=ChainVerified, summary="Check the hash chain over the whole log; counts only the caller's events",
            dependencies=[requires(AUDIT_READ)])
def verify(reader: Reader, reads: Reads, from_position: Annotated[QueryInt | None, Query(ge=1, le=2**63 - 1)] = None) -> dict:
    """`checked_own`: how many events the caller may read were verified. The whole log's count is
    every tenant's activity: operators get it from `etsypro audit verify`."""
    return reads.audit.verify_for(reader, from_position)
