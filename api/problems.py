"""Every error is an RFC 9457 problem+json document naming the offending field."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from commands.errors import CommandRefused, Conflict, IdempotencyKeyReused, NotFound
from domain.errors import DomainError

log = logging.getLogger(__name__)
PROBLEM = "application/problem+json"
BODY_UNREADABLE = "There was an error parsing the body"  # FastAPI's detail for a body it cannot decode


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
