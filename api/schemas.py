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

