"""Uploads of the seller's CSV files (commands/etsy_import.py): the body is the file itself."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import Field

from api.auth import requires
from api.deps import Context, Engine
from api.problems import problem
from api.routing import resource_router
from api.schemas import Answer, example
from commands.csv_files import FileRefused, LineProblem
from commands.etsy_import import KINDS, InvalidLines
from commands.marketplace_facts import MarketplaceFacts, Pseudonyms

router = resource_router(prefix="/shops/{shop_id}/imports", tags=["imports"])
CSV_TYPES = ("text/csv", "application/csv", "text/plain", "application/octet-stream")
MAX_FILE_BYTES = 8 * 1024 * 1024  # the app's body limit answers 413 first when it is lower
MAX_ERRORS = 50  # listed in a problem; `invalid` counts them all

EXAMPLES = {  # each kind's smallest useful file
    "etsy-order-items": "Sale Date,Item Name,Buyer,Quantity,Price,Currency,Transaction ID,Listing ID,Order ID,SKU\n"
                        "11/28/26,Speckled mug,adal,1,24.00,GBP,4011223344,1234567890,3011220001,MUG-BLUE\n",
    "etsy-orders": "Sale Date,Order ID,Buyer,Number of Items,Currency,Order Value,Shipping,Sales Tax,Order Total\n"
                   "11/28/26,3011220001,adal,1,GBP,24.00,3.95,0.00,27.95\n",
    "etsy-listings": "TITLE,DESCRIPTION,PRICE,CURRENCY_CODE,QUANTITY,SKU\nSpeckled mug,Wheel-thrown,24.00,GBP,5,MUG-BLUE\n",
    "competitor-prices": "sku,competitor,price,currency,observed_at,source\n"
                         "MUG-BLUE,etsy:shop/ClayAndCo/98765,21.95,GBP,2026-11-25T09:30:00Z,pricefeed\n",
}


class ImportProblem(Answer):
    line: int = Field(description="The file's line (1 is the header)")
    column: str | None = Field(description="The column's header as the file spells it")
    detail: str


class ImportCommands(Answer):
    recorded: int
    replayed: int


class CsvImported(Answer):
    model_config = example({
        "kind": "etsy-order-items", "file": "upload.csv", "sha256": "9f2c…", "shop_id": "55d95577-b375-455a-8c80-879603d12831",
        "lines": 1, "recorded": 1, "already_recorded": 0, "duplicates": 0, "out_of_order": 0, "orders_recorded": 1,
        "prices_differ": [],
        "invalid": 0, "problems": [], "commands": {"recorded": 2, "replayed": 0}, "seconds": 0.02})
    kind: str
    file: str
    sha256: str
    shop_id: UUID
    lines: int = Field(description="Data lines in the file")
    recorded: int = Field(description="Facts (or listings) this upload wrote")
    already_recorded: int = Field(description="Already in the shop (an earlier file, an overlapping export, the sync)")
    duplicates: int = Field(description="The same record again in this file")
    out_of_order: int = Field(description="Competitor prices older than an earlier line's (recorded all the same)")
    orders_recorded: int = Field(description="Orders (buyer pseudonyms) an order-items file added")
    prices_differ: list[str] = Field(description="A listings download's known SKUs whose price differs from the "
                                                 "engine's (left as they are)")
    invalid: int = Field(description="Lines set aside (only with skip_invalid; otherwise the upload is refused)")
    problems: list[ImportProblem]
    commands: ImportCommands
    seconds: float


RESPONSES = {
    200: {"model": CsvImported, "description": "Nothing new: every record of the file was already in the shop"},
    413: {"description": "The file is over the upload limit"},
    415: {"description": "The body is not a CSV file (send it as text/csv)"},
}


def _upload(kind: str, permission: str, what: str) -> None:
    @router.post(f"/{kind}", status_code=201, response_model=CsvImported, dependencies=[requires(permission)],
                 summary=f"Upload {what} (CSV)", description=_description(kind),
                 name=f"upload_{kind.replace('-', '_')}", responses=RESPONSES,
                 openapi_extra={"requestBody": {"required": True, "content": {"text/csv": {
                     "schema": {"type": "string"}, "example": EXAMPLES[kind]}}}})
    async def upload(shop_id: UUID, request: Request, ctx: Context, engine: Engine, response: Response,
                     skip_invalid: Annotated[bool, Query(description="import the valid lines and report the others, "
                                                                     "instead of refusing the whole file")] = False):
        refused = _unsupported(request)
        if refused is not None:
            return refused
        data = await request.body()
        if len(data) > MAX_FILE_BYTES:
            return problem(413, "Payload too large", f"a CSV upload is limited to {MAX_FILE_BYTES} bytes")
        facts = MarketplaceFacts(engine.core, engine.listings)
        importer = KINDS[kind](facts, ctx, shop_id, data, "upload.csv", skip_invalid, Pseudonyms(engine.identity.secrets))
        try:
            summary = await run_in_threadpool(importer.run)
        except FileRefused as e:
            return _invalid([e.problem], 1)
        except InvalidLines as e:
            return _invalid(e.summary.problems, e.summary.invalid)
        response.status_code = 201 if summary.recorded or summary.orders_recorded else 200
        return summary.as_dict()


def _description(kind: str) -> str:
    return (f"{_DOCS[kind]} Columns are found by header name; the body is the file, UTF-8 (a BOM is fine). Any "
            "invalid line refuses the whole file (422, `errors` naming each line and column) unless `skip_invalid`."
            "\n\n**Changes:** appends one event per new record, up to 10,000 per command, each chunk all or "
            "nothing; records the shop already has are counted, not repeated.")


_DOCS = {
    "etsy-order-items": "Imports Etsy's EtsySoldOrderItems export: each line a sale of a listing (matched by Etsy "
                        "Listing ID, else SKU), recorded once per Transaction ID; each order's buyer only as a keyed "
                        "pseudonym.",
    "etsy-orders": "Imports Etsy's EtsySoldOrders export: each order's totals (value, discount, shipping, tax) once "
                   "per Order ID, the buyer only as a keyed pseudonym; names and addresses are never read.",
    "etsy-listings": "Imports Etsy's EtsyListingsDownload: a SKU the shop lacks becomes a listing; known SKUs are "
                     "left as they are.",
    "competitor-prices": "Imports a competitor price feed (listing_id, external_id or sku; competitor, price, "
                         "currency, observed_at with offset, source): the same checks as POST /observations, each "
                         "observation recorded once.",
}


def _unsupported(request: Request):
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in CSV_TYPES:
        return problem(415, "Unsupported media type", f"send the CSV file itself as the body (Content-Type: text/csv),"
                       f" not {media or 'nothing'}", "Content-Type")
    return None


def _invalid(problems: list[LineProblem], count: int):
    first = problems[0]
    return problem(422, "Invalid request", f"{count} invalid line(s), nothing written; {first}", first.field,
                   errors=[{"field": p.field, "detail": p.detail, "line": p.line, "column": p.column}
                           for p in problems[:MAX_ERRORS]], invalid=count)


for _kind, _permission, _what in (("etsy-order-items", "facts:write", "Etsy sold order items"),
                                  ("etsy-orders", "facts:write", "Etsy sold orders"),
                                  ("etsy-listings", "prices:write", "an Etsy listings download"),
                                  ("competitor-prices", "facts:write", "a competitor price feed")):
    _upload(_kind, _permission, _what)
