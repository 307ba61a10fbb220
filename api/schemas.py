"""Response models: what the API answers, for OpenAPI and for clients."""

from __future__ import annotations

from pydantic import BaseModel

from commands.context import Result
from fastapi.responses import JSONResponse


class ShopOpened(BaseModel):
    shop_id: str
    version: int


class ListingRegistered(BaseModel):
    listing_id: str
    external_id: str
    version: int


class ListingsRegistered(BaseModel):
    listings: list[ListingRegistered]


class ListingChanged(BaseModel):
    listing_id: str
    version: int
    changed: bool
    price: str
    currency: str


class PricesChanged(BaseModel):
    changes: list[ListingChanged]


class BatchRecorded(BaseModel):
    batch_id: str
    recorded: int


def answer(result: Result) -> JSONResponse:
    headers = {"Idempotent-Replayed": "true"} if result.replayed else {}
    return JSONResponse(result.body, status_code=result.status, headers=headers)


PROBLEMS = {
    401: {"description": "No identity given"},
    404: {"description": "No such shop or listing for this tenant (others' resources look the same)"},
    409: {"description": "Conflict: stale expected_version (body carries current_version) or a taken unique value"},
    413: {"description": "Body too large"},
    422: {"description": "Invalid input or refused by a business rule; `field` names the input"},
}
