"""For analysts: the projected views of a shop over REST, with filters, keyset paging and exports
(JSON, CSV, Parquet), and the projections' lag. The views and their columns are documented in
docs/views.md; the same tables and functions are there for analysts who use SQL directly."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from fastapi import Query, Request
from pydantic import Field
from fastapi.responses import JSONResponse, Response

from api.auth import requires
from api.deps import Context, Engine, Reads
from api.schemas import AnalyticsPage, Answer, Lag, example
from domain.errors import NotFound
from commands.models import QueryInt, QueryTime
from read.side import ReadSide
from domain.errors import InvalidValue
from projections import export, queries
from projections.lag import parked, tenant_lag
from projections.registry import ALL
from read.customers import repeat_customers

from api.routing import resource_router


def page_or_file(csv_example: str) -> dict:
    """The 200 answer of an exportable view: a json page, or a csv or parquet file, and the cursor."""
    return {200: {"content": {"text/csv": {"schema": {"type": "string"}, "example": csv_example},
                              "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}}},
                  "headers": {"X-Next-Cursor": {"description": "The next page's cursor, if any",
                                                "schema": {"type": "string"}}},
                  "description": "A page (json) or a file (csv, parquet); header X-Next-Cursor carries the cursor"
                                 " of the next page when there is one"}}

router = resource_router(tags=["analytics"])
ANALYTICS_READ = "analytics:read"

ListingQuery = Annotated[UUID | None, Query(description="Only this listing")]
SinceQuery = Annotated[QueryTime | None, Query(description="From this time on (ISO 8601 with offset); "
                                                              "bucketed views: hourly buckets overlapping [since, until)")]
UntilQuery = Annotated[QueryTime | None, Query(description="Before this time (ISO 8601 with offset)")]
LimitQuery = Annotated[QueryInt, Query(ge=1, le=queries.MAX_LIMIT, description="Rows per page (exports: up to 100,000)")]
CursorQuery = Annotated[str | None, Query(max_length=500, description="`next_cursor` of the previous page (opaque, signed)")]
FormatQuery = Annotated[Literal["json", "csv", "parquet"], Query(description="json (a page), csv or parquet (a file)")]
BucketQuery = Annotated[Literal["hour", "day", "week"], Query(description="Bucket width (weeks start Monday, UTC)")]

SUMMARIES = {
    "prices": "The price board: every listing's current price and guardrails",
    "price-changes": "Every price a listing was given: who, why, source, rule, compensations",
    "competitor-observations": "Competitor prices as observed",
    "competitor-bands": "Competitor price bands per listing per bucket: min, p25, median, p75, max, count",
    "sales": "Sale and return lines (returns negative)",
    "sales-by-listing": "Units and revenue per listing per bucket (net of returns)",
    "sales-by-shop": "Units and revenue of the shop per bucket (net of returns)",
}


def answer(reads: ReadSide, engine, ctx, shop_id: UUID, view: str, fmt: str, listing_id: UUID | None = None,
           **filters) -> Response:
    reads.shops.facts(ctx, shop_id)  # the tenancy check (also made by requires()): others' shops are 404
    if listing_id is not None and not reads.shops.has_listing(shop_id, listing_id):
        raise NotFound("listing not found in this shop", field="listing_id")
    try:
        q = queries.query(view, shop_id, listing_id=listing_id, cursor_key=engine.identity.secrets.cursor_key, **filters)
    except queries.InvalidQuery as e:
        raise InvalidValue(e.field, e.detail) from None
    with reads.pool.connection() as conn:
        result = queries.run(conn, q)
    result = replace(result, rows=engine.identity.vault.reveal(result.rows))  # reasons people wrote, opened (files too)
    headers = {"X-Next-Cursor": result.next_cursor} if result.next_cursor else {}
    if fmt == "json":
        return JSONResponse({"view": view, "columns": list(result.columns), "types": list(result.types),
                             "items": export.records(result),
                             "next_cursor": result.next_cursor}, headers=headers)
    headers["Content-Disposition"] = f'attachment; filename="{view}.{fmt}"'
    return Response(export.to_bytes(result, fmt), media_type=export.MEDIA_TYPES[fmt], headers=headers)


def _register(view: queries.View) -> None:
    path = f"/shops/{{shop_id}}/analytics/{view.name}"
    options = dict(summary=SUMMARIES[view.name], dependencies=[requires(ANALYTICS_READ)],
                   response_class=JSONResponse, response_model=AnalyticsPage,
                   responses=page_or_file("listing_id,price,currency\n"
                                          "55d95577-b375-455a-8c80-879603d12831,20.00,GBP\n"))
    if view.bucketed and view.by_listing:
        def endpoint(shop_id: UUID, ctx: Context, reads: Reads, engine: Engine, bucket: BucketQuery,
                     listing_id: ListingQuery = None, since: SinceQuery = None, until: UntilQuery = None,
                     limit: LimitQuery = 100, cursor: CursorQuery = None, format: FormatQuery = "json"):
            return answer(reads, engine, ctx, shop_id, view.name, format, listing_id, bucket=bucket,
                          since=since, until=until, limit=limit, cursor=cursor)
    elif view.bucketed:
        def endpoint(shop_id: UUID, ctx: Context, reads: Reads, engine: Engine, bucket: BucketQuery,
                     since: SinceQuery = None, until: UntilQuery = None,
                     limit: LimitQuery = 100, cursor: CursorQuery = None, format: FormatQuery = "json"):
            return answer(reads, engine, ctx, shop_id, view.name, format, bucket=bucket,
                          since=since, until=until, limit=limit, cursor=cursor)
    elif view.time_column:
        def endpoint(shop_id: UUID, ctx: Context, reads: Reads, engine: Engine,
                     listing_id: ListingQuery = None, since: SinceQuery = None, until: UntilQuery = None,
                     limit: LimitQuery = 100, cursor: CursorQuery = None, format: FormatQuery = "json"):
            return answer(reads, engine, ctx, shop_id, view.name, format, listing_id,
                          since=since, until=until, limit=limit, cursor=cursor)
    else:
        def endpoint(shop_id: UUID, ctx: Context, reads: Reads, engine: Engine,
                     listing_id: ListingQuery = None, limit: LimitQuery = 100, cursor: CursorQuery = None,
                     format: FormatQuery = "json"):
            return answer(reads, engine, ctx, shop_id, view.name, format, listing_id, limit=limit, cursor=cursor)
    endpoint.__name__ = f"analytics_{view.name.replace('-', '_')}"
    router.add_api_route(path, endpoint, methods=["GET"], **options)


for _view in queries.VIEWS.values():
    _register(_view)


class RepeatCustomers(Answer):
    model_config = example({"orders": 120, "orders_with_buyer": 118, "buyers": 97, "repeat_buyers": 15,
                            "orders_from_repeat_buyers": 36, "repeat_order_share": 0.3051, "revenue_with_buyer": "3540.00",
                            "revenue_from_repeat_buyers": "1180.00", "repeat_revenue_share": 0.3333, "currency": "GBP",
                            "buyers_by_orders": {"1": 82, "2": 11, "3": 3, "4+": 1},
                            "first_order_at": "2026-01-03T10:12:00Z", "last_order_at": "2026-12-06T18:40:00Z"})
    orders: int
    orders_with_buyer: int = Field(description="Orders whose buyer is known (as a pseudonym; erased buyers' are not)")
    buyers: int = Field(description="Distinct buyers (pseudonyms) of those orders")
    repeat_buyers: int = Field(description="Buyers with more than one order in the period")
    orders_from_repeat_buyers: int
    repeat_order_share: float | None = Field(description="orders_from_repeat_buyers / orders_with_buyer")
    revenue_with_buyer: str | None = Field(description="Order totals of orders with a buyer (decimal); null: no totals known")
    revenue_from_repeat_buyers: str | None
    repeat_revenue_share: float | None
    currency: str | None
    buyers_by_orders: dict[str, int] = Field(description="Buyers by their number of orders: 1, 2, 3, 4 or more")
    first_order_at: datetime | None
    last_order_at: datetime | None


@router.get("/shops/{shop_id}/customers", response_model=RepeatCustomers, dependencies=[requires(ANALYTICS_READ)],
            summary="Repeat customers: orders and revenue from buyers who ordered more than once (buyers are pseudonyms)")
def customers(shop_id: UUID, ctx: Context, reads: Reads, since: SinceQuery = None, until: UntilQuery = None) -> dict:
    """From the `customers` view (analytics.shop_orders): orders recorded from Etsy's CSV
    exports (`etsypro import etsy-orders|etsy-order-items` or the upload routes), each buyer only as a pseudonym."""
    reads.shops.facts(ctx, shop_id)  # the tenancy check: others' shops are 404
    if since is not None and until is not None and since >= until:
        raise InvalidValue("until", "must be after since")
    return repeat_customers(reads.pool, shop_id, since, until)


@router.get("/analytics/lag", summary="How far the projections and the repricing policy are behind on your shops'"
            " events, and your events they could not process (parked, with the error)",
            dependencies=[requires(ANALYTICS_READ)], response_model=Lag)
def projection_lag(request: Request, ctx: Context, reads: Reads) -> dict:
    # A tenant's own figures only: whole-log figures (head, positions, other tenants' parked
    # events) are for operators, who have `etsypro projections status`.
    shops = [UUID(s) for s in sorted(ctx.shops)] if ctx.shops is not None else reads.shops.shops_of(ctx.tenant_id)
    names = [p.name for p in ALL]
    with reads.pool.connection() as conn:
        lags = tenant_lag(conn, names, shops)
        parked_events = parked(conn, shops) if shops else []
    state = request.app.state
    return {"scope": "your shops",
            **{role: _follower_state(getattr(state, role, None)) for role in ("projector", "repricing")},
            "projections": [x.as_dict() for x in lags if x.follower in names],
            "policies": [x.as_dict() for x in lags if x.follower not in names],
            "parked": [{k: v for k, v in row.items() if k != "tenant_id"} for row in parked_events]}


def _follower_state(background) -> str:
    """An in-process follower's state; its error message (which may name any tenant's data) is logged."""
    if background is None:
        return "external or off"
    return "retrying after an error" if background.follower.stats.last_error else "inprocess"
