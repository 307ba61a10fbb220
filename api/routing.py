"""How every router of the API reads request bodies.

JSON numbers with a fraction or an exponent are read as Decimal, not float. Python's default
turns `1e-400` into 0.0 and `0.1` into an approximation before validation ever sees the number:
a zero cost would slip through, and a price would depend on binary rounding. Read as Decimal, the
number the client wrote is the number the money checks judge (domain/money.py refuses it when it
has more decimals than the currency allows). Pydantic accepts a Decimal wherever it accepts a
float, so non-money numbers behave as before. NaN and Infinity (which JSON lacks but Python's
parser accepts) still arrive as float specials, and the money checks refuse them.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, Callable

from fastapi import APIRouter, Request
from fastapi.routing import APIRoute


class DecimalJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = json.loads(await self.body(), parse_float=Decimal)
        return self._json


class DecimalJSONRoute(APIRoute):
    """The route class of FastAPI's "custom Request and APIRoute" recipe, with the request above.
    Answers are validated as the route's response_model and carry the fields the reader or handler
    gave (an optional field it left out stays out rather than appearing as null)."""

    def __init__(self, path: str, endpoint: Callable, **kwargs):
        super().__init__(path, endpoint, **{**kwargs, "response_model_exclude_unset": True})

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def decimal_json_handler(request: Request):
            return await handler(DecimalJSONRequest(request.scope, request.receive))

        return decimal_json_handler


def resource_router(**kwargs) -> APIRouter:
    """An APIRouter for one resource: bodies read as above (error answers are documented by api/openapi.py)."""
    return APIRouter(route_class=DecimalJSONRoute, **kwargs)
