"""Demand intelligence: each listing's elasticity, forecast and recommended price, and every
listing's elasticity as an analytics view. Answers are stored model runs (read/model_runs.py):
nothing is fitted on a request.

Statuses: a refused model is an answer (200, `refused: true`, the reason and what data would fix
it); a listing of the shop with no run yet (never refreshed, or registered since) is 404 with the
problem type `models-not-refreshed`, saying how to refresh; an unknown listing, or another
tenant's, is the usual 404 `not-found`."""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from fastapi import Query
from fastapi.responses import JSONResponse, Response

from api.auth import requires
from api.deps import Context, Engine, Reads
from api.problems import problem
from api.routers.analytics import page_or_file
from api.routing import resource_router
from api.schemas import ElasticitiesPage, ElasticityModelRun, ForecastModelRun, RecommendationModelRun
from commands.models import QueryInt
from domain.demand.forecast import MAX_HORIZON
from domain.errors import InvalidValue, NotFound
from projections import export
from projections.queries import MAX_LIMIT, InvalidQuery
from read.model_runs import elasticities_page, latest, public
from read.side import ReadSide

router = resource_router(tags=["demand models"])
READ = requires("shops:read")
LISTING = "/shops/{shop_id}/listings/{listing_id}"
NOT_REFRESHED = {404: {"description": "No such listing for this caller, or (problem type `models-not-refreshed`) "
                                      "no model run for it yet: `etsypro analyze refresh` makes them, and `serve` "
                                      "refreshes every ETSYPRO_ANALYZE_EVERY_HOURS hours"}}

HorizonQuery = Annotated[QueryInt, Query(ge=1, le=MAX_HORIZON, description=f"Days ahead, 1 to {MAX_HORIZON}")]
LimitQuery = Annotated[QueryInt, Query(ge=1, le=MAX_LIMIT, description="Rows per page (files: up to 100,000)")]
CursorQuery = Annotated[str | None, Query(max_length=500, description="`next_cursor` of the previous page (opaque, signed)")]
FormatQuery = Annotated[Literal["json", "csv", "parquet"], Query(description="json (a page), csv or parquet (a file)")]


def stored(reads: ReadSide, ctx, shop_id: UUID, listing_id: UUID | None, kind: str, horizon: int | None = None):
    """The run of `kind` of the listing (None: of the shop) as the API shows it, or the 404 that says
    why there is none."""
    reads.shops.facts(ctx, shop_id)  # the tenancy check (also made by requires()): others' shops are 404
    if listing_id is not None and not reads.shops.has_listing(shop_id, listing_id):
        raise NotFound("listing not found in this shop", field="listing_id")
    with reads.pool.connection() as conn:
        run = latest(conn, shop_id, listing_id, kind)
    if run is None:
        what, field = ("this listing", "listing_id") if listing_id is not None else ("this shop", "shop_id")
        return problem(404, "Models not refreshed", f"no {kind} model run for {what} yet: the models are fitted"
                       " by `etsypro analyze refresh [--shop S]` (and by `etsypro serve` on its schedule,"
                       " ETSYPRO_ANALYZE_EVERY_HOURS), not when they are read", field)
    return public(run, horizon)


@router.get(LISTING + "/elasticity", dependencies=[READ], response_model=ElasticityModelRun, responses=NOT_REFRESHED,
            summary="The listing's price elasticity of demand with its 95% interval, or why there is none")
def listing_elasticity(shop_id: UUID, listing_id: UUID, ctx: Context, reads: Reads):
    """From the latest model run: the listing's own estimate, or one shrunk toward the shop's pooled
    estimate when its own data is thin (`label`), or a refusal with the data it needs. Observational:
    confirm with a price experiment."""
    return stored(reads, ctx, shop_id, listing_id, "elasticity")


@router.get(LISTING + "/forecast", dependencies=[READ], response_model=ForecastModelRun, responses=NOT_REFRESHED,
            summary="The listing's daily units and revenue ahead, with 80% and 95% intervals")
def listing_forecast(shop_id: UUID, listing_id: UUID, ctx: Context, reads: Reads, horizon: HorizonQuery = 30):
    """From the latest model run (90 days are stored): the forecaster chosen by a rolling-origin
    backtest, its MASE against seasonal-naive, and the first `horizon` days."""
    return stored(reads, ctx, shop_id, listing_id, "forecast", horizon)


@router.get(LISTING + "/recommendation", dependencies=[READ], response_model=RecommendationModelRun,
            responses=NOT_REFRESHED,
            summary="The price that maximises expected profit within the guardrails, with outlooks at both prices")
def listing_recommendation(shop_id: UUID, listing_id: UUID, ctx: Context, reads: Reads):
    """From the latest model run: one step from the listing's price then, within floor, ceiling,
    margin floor and max step; a move only when it gains at both ends of the elasticity's interval."""
    return stored(reads, ctx, shop_id, listing_id, "recommendation")


@router.get("/shops/{shop_id}/elasticity", dependencies=[READ], response_model=ElasticityModelRun,
            responses=NOT_REFRESHED, summary="The shop's pooled price elasticity with its 95% interval, or why there is none")
def shop_elasticity(shop_id: UUID, ctx: Context, reads: Reads):
    """From the latest model run: one slope for all the shop's listings (listing fixed effects), the
    centre thin listings are shrunk toward. Observational: confirm with a price experiment."""
    return stored(reads, ctx, shop_id, None, "elasticity")


@router.get("/shops/{shop_id}/forecast", dependencies=[READ], response_model=ForecastModelRun,
            responses=NOT_REFRESHED, summary="The shop's daily units and revenue ahead, with 80% and 95% intervals")
def shop_forecast(shop_id: UUID, ctx: Context, reads: Reads, horizon: HorizonQuery = 30):
    """From the latest model run: the shop's total, forecast on its own (not a sum of listings'),
    with the backtest's MASE against seasonal-naive."""
    return stored(reads, ctx, shop_id, None, "forecast", horizon)


@router.get("/shops/{shop_id}/analytics/elasticities", dependencies=[requires("analytics:read")],
            response_class=JSONResponse, response_model=ElasticitiesPage,
            summary="Every listing's elasticity from the shop's latest model refresh (refusals included)",
            responses=page_or_file("listing_id,refused,elasticity\n"
                                   "55d95577-b375-455a-8c80-879603d12831,false,-2.27\n"))
def analytics_elasticities(shop_id: UUID, ctx: Context, reads: Reads, engine: Engine, limit: LimitQuery = 100,
                           cursor: CursorQuery = None, format: FormatQuery = "json") -> Response:
    """In listing order, paged like the other analytics views (signed cursors); an empty page before
    the first refresh. The same rows are in the SQL view `analytics.latest_elasticities`."""
    reads.shops.facts(ctx, shop_id)
    try:
        with reads.pool.connection() as conn:
            result = elasticities_page(conn, shop_id, limit, cursor, engine.identity.secrets.cursor_key)
    except InvalidQuery as e:
        raise InvalidValue(e.field, e.detail) from None
    headers = {"X-Next-Cursor": result.next_cursor} if result.next_cursor else {}
    if format == "json":
        return JSONResponse({"view": "elasticities", "columns": list(result.columns), "types": list(result.types),
                             "items": export.records(result), "next_cursor": result.next_cursor}, headers=headers)
    headers["Content-Disposition"] = f'attachment; filename="elasticities.{format}"'
    return Response(export.to_bytes(result, format), media_type=export.MEDIA_TYPES[format], headers=headers)

