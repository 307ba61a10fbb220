"""Every error is an RFC 9457 problem+json document naming the offending field."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from domain.errors import CommandRefused, Conflict, IdempotencyKeyReused, NotFound
from domain.errors import DomainError

log = logging.getLogger(__name__)
PROBLEM = "application/problem+json"
BODY_UNREADABLE = "There was an error parsing the body"  # FastAPI's detail for a body it cannot decode


class FieldError(BaseModel):
    field: str = Field(description="The input at fault, e.g. `listings[3].price`", examples=["listings[3].price"])
    detail: str = Field(examples=["must have at most 2 decimals in GBP"])


class Problem(BaseModel):
    """An RFC 9457 problem document: the body of every error answer (`application/problem+json`)."""

    # Extension members beyond these (e.g. `current_version` on a stale `expected_version`) may appear.
    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [
        {"type": "https://etsypro.dev/problems/invalid-request", "title": "Invalid request", "status": 422,
         "detail": "price: must have at most 2 decimals in GBP", "field": "price",
         "errors": [{"field": "price", "detail": "must have at most 2 decimals in GBP"}]}]})

    type: str = Field(description="A URI naming the kind of problem", examples=["https://etsypro.dev/problems/conflict"])
    title: str = Field(description="Short, the same for every problem of this type", examples=["Conflict"])
    status: int = Field(description="The HTTP status of the answer", examples=[409])
    detail: str = Field(description="What went wrong with this request", examples=["expected version 3, found 4"])
    field: str | None = Field(None, description="The input at fault (body path, query parameter or header name)")
    errors: list[FieldError] | None = Field(None, description="Every invalid input, when validation failed (422)")
    current_version: int | None = Field(None, description="On a stale `expected_version` (409): the version now")


# What each status means on this API, for the document; every one answers a Problem.
STATUS_MEANINGS = {
    400: "The body could not be read (not UTF-8, nested too deep) or the command was refused",
    401: "Credentials are missing, invalid or expired (header WWW-Authenticate)",
    403: "The caller may not do this: the route's permission is missing (or not over the whole tenant)",
    404: "No such resource for this caller: another tenant's resources and shops outside the caller's"
         " grants look the same as missing ones",
    409: "The state moved on: a stale `expected_version` (the problem carries `current_version`), a taken"
         " unique value, or too much concurrent activity on one aggregate (retry with the same Idempotency-Key)",
    413: "The request body is over the server's limit (ETSYPRO_MAX_BODY_BYTES)",
    422: "Invalid input or refused by a business rule; `field` names the input and `errors` lists every one",
    429: "Too many attempts from this client; header Retry-After says when to try again",
}


def responses_for(statuses, descriptions: dict[int, str] | None = None) -> dict[int, dict]:
    """The OpenAPI `responses` of these error statuses: each a Problem as application/problem+json."""
    descriptions = descriptions or {}
    return {status: {"model": Problem, "content": {PROBLEM: {}},
                     "description": descriptions.get(status) or STATUS_MEANINGS.get(status, "Error")}
            for status in sorted(statuses)}


def problem(status: int, title: str, detail: str, field: str | None = None, **extra) -> JSONResponse:
    body = {"type": f"https://etsypro.dev/problems/{title.lower().replace(' ', '-')}",
            "title": title, "status": status, "detail": detail}
    if field:
        body["field"] = field
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM)


def field_path(loc: tuple) -> str:
    """('body', 'listings', 3, 'price') -> 'listings[3].price'; headers/query keep their name."""
    parts = list(loc[1:] if loc and loc[0] in ("body", "query", "path", "header") else loc)
    path = ""
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part:
            path += f".{part}" if path else str(part)
    return path or str(loc[0] if loc else "body")


# How each refusal answers; the most specific class in an exception's MRO wins.
REFUSALS = {
    DomainError: (422, "Refused by business rule"),
    NotFound: (404, "Not found"),
    Conflict: (409, "Conflict"),
    IdempotencyKeyReused: (422, "Idempotency key reused"),
    CommandRefused: (400, "Command refused"),
}


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError):
        errors = [{"field": "body" if e.get("type") == "json_invalid" else field_path(tuple(e.get("loc", ()))),
                   "detail": e.get("msg", "invalid")}
                  for e in exc.errors()[:50]]
        first = errors[0] if errors else {"field": "body", "detail": "invalid request"}
        return problem(422, "Invalid request", f"{first['field']}: {first['detail']}", first["field"], errors=errors)

    @app.exception_handler(DomainError)
    @app.exception_handler(CommandRefused)
    async def refused(_: Request, exc: DomainError | CommandRefused):
        status, title = next(REFUSALS[cls] for cls in type(exc).__mro__ if cls in REFUSALS)
        return problem(status, title, exc.detail, exc.field, **getattr(exc, "extra", {}))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException):
        title = {400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found", 405: "Method not allowed",
                 413: "Payload too large", 415: "Unsupported media type", 429: "Too many requests"}
        field = exc.headers.get("X-Problem-Field") if exc.headers else None
        if exc.status_code == 400 and exc.detail == BODY_UNREADABLE:
            field = "body"  # not UTF-8, or nested too deep to parse
        response = problem(exc.status_code, title.get(exc.status_code, "Error"), str(exc.detail), field)
        for name, value in (exc.headers or {}).items():  # WWW-Authenticate, Retry-After, Allow
            if name.lower() != "x-problem-field":
                response.headers[name] = value
        return response

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception):
        log.exception("unhandled error")  # never echo internals (SQL, stack) to the client
        return problem(500, "Internal error", "the server failed to process the request; it was logged")
