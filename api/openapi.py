"""The OpenAPI document as a client author needs it, and the docs pages that show it offline.

Each operation's error answers are derived from what the route declares (its permission, its
parameters, its body, whether it writes), each a `Problem` as application/problem+json; its
description says what it does, who may call it and what it changes.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI
from fastapi import params
from fastapi.dependencies.utils import get_flat_params
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import BaseModel
from starlette.requests import Request
from starlette.staticfiles import StaticFiles

from api.auth import SELF, declaration
from api.problems import PROBLEM, STATUS_MEANINGS, Problem
from domain.account import ROLE_PERMISSIONS

WRITES = {"POST", "PUT", "PATCH", "DELETE"}
DOCS_ASSETS = "/docs-assets"  # Swagger UI and ReDoc, served from the installed package (no CDN)
SCHEMAS = "#/components/schemas/"
REPLAYED = {"Idempotent-Replayed": {"description": "`true` when this is the original answer to an earlier request"
                                                  " with the same Idempotency-Key (nothing was written)",
                                   "schema": {"type": "string", "enum": ["true"]}}}
# Headers that come with some errors, for clients that act on them.
ERROR_HEADERS = {
    401: {"WWW-Authenticate": {"description": "The scheme to authenticate with", "schema": {"type": "string"}}},
    429: {"Retry-After": {"description": "Seconds to wait before trying again", "schema": {"type": "integer"}}},
}


def error_statuses(route: APIRoute) -> set[int]:
    """The error statuses a route can answer, from what it declares (explicit `responses` add to them)."""
    declared = declaration(route)
    inputs = get_flat_params(route.dependant)
    statuses = {int(s) for s in route.responses if str(s)[0] in "45"}
    if declared != "public":
        statuses.add(401)  # no, bad or expired credentials
        if declared is None or declared[0] != SELF:
            statuses.add(403)  # the permission is missing (a route declaring nothing refuses everyone)
        if route.methods & WRITES:
            statuses |= {409, 422}  # the state moved on; refused by a business rule
    if any(isinstance(p.field_info, params.Path) for p in inputs):
        statuses |= {404, 422}  # no such resource for this caller; a malformed id
    if inputs:
        statuses.add(422)
    if route.body_field is not None:
        statuses |= {400, 413, 422}
    return statuses


def who_may_call(route: APIRoute) -> str:
    declared = declaration(route)
    if declared == "public":
        return "Anyone: no credentials (this is how credentials are obtained)."
    if declared is None:
        return "Nobody: the route declares no permission."
    permission, tenant_wide = declared
    if permission == SELF:
        return "Any signed-in caller, about its own account."
    scope = ("over the whole tenant" if tenant_wide else
             "over this shop (or the whole tenant)" if "{shop_id}" in route.path_format else "over a shop or the tenant")
    roles = ", ".join(role.value for role, granted in ROLE_PERMISSIONS.items() if permission in granted)
    return f"Callers whose roles ({roles}) or API key scopes grant `{permission}` {scope}."


def takes_idempotency_key(route: APIRoute) -> bool:
    return any(p.alias.lower() == "idempotency-key" for p in get_flat_params(route.dependant))


def what_it_changes(route: APIRoute) -> str:
    if not route.methods & WRITES:
        return "Nothing: it only reads."
    idempotent = takes_idempotency_key(route)
    return "Appends events to the log (who, why, when); history is never edited." + (
        " Send an `Idempotency-Key` to retry safely: the same key and body answer the original result and"
        " write nothing." if idempotent else "")


def describe(route: APIRoute) -> str:
    """What the operation does (its docstring, else its summary), who may call it, what it changes.
    A docstring with its own '**Changes:**' paragraph keeps its words for that part."""
    what, _, changes = (route.description or route.summary or "").partition("**Changes:**")
    return "\n\n".join([what.strip(), f"**Who may call:** {who_may_call(route)}",
                        f"**Changes:** {changes.strip() or what_it_changes(route)}"])


def operations(app: FastAPI) -> list[APIRoute]:
    """The app's documented routes as served: with the dependencies and responses of the routers
    that include them."""
    return [context for context in iter_route_contexts(app.routes)
            if isinstance(context.original_route, APIRoute) and context.include_in_schema]


def document(app: FastAPI) -> dict:
    """FastAPI's document, with each operation's error answers and descriptions filled in."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    problem_schema = Problem.model_json_schema(ref_template=SCHEMAS + "{model}")
    components.update(problem_schema.pop("$defs", {}))
    components["Problem"] = problem_schema
    for route in operations(app):
        for method in route.methods:
            operation = schema["paths"][route.path_format][method.lower()]
            operation["description"] = describe(route)
            answers = operation.setdefault("responses", {})
            for status in error_statuses(route):
                declared = route.responses.get(status, {}).get("description")
                answers[str(status)] = {"description": declared or STATUS_MEANINGS[status],
                                        "content": {PROBLEM: {"schema": {"$ref": SCHEMAS + "Problem"}}}}
                if status in ERROR_HEADERS:
                    answers[str(status)]["headers"] = ERROR_HEADERS[status]
            if route.methods & WRITES and takes_idempotency_key(route):
                for status, answer in answers.items():
                    if status.startswith("2"):
                        answer.setdefault("headers", {}).update(REPLAYED)
            operation["responses"] = dict(sorted(answers.items()))
    restore_examples(components)
    for unused in ("HTTPValidationError", "ValidationError"):  # FastAPI's default 422 body, replaced above
        components.pop(unused, None)
    app.openapi_schema = schema
    return schema


def restore_examples(components: dict) -> None:
    """Put back the nulls of our models' examples: FastAPI drops every null when it encodes the
    document, which turns an example answer with `"locked_until": null` into one missing a field."""
    models, pending = {}, [BaseModel]
    while pending:
        for model in pending.pop().__subclasses__():
            pending.append(model)
            if model.__module__.startswith(("api.", "commands.")):
                models[model.__name__] = model
    for name, schema in components.items():
        model = models.get(name.removesuffix("-Output").removesuffix("-Input"))
        extra = model.model_config.get("json_schema_extra") if model else None
        if isinstance(extra, dict) and "examples" in extra and "examples" in schema:
            schema["examples"] = extra["examples"]


def install(app: FastAPI) -> None:
    """The document above at /openapi.json; Swagger UI at /docs and ReDoc at /redoc with their assets
    served by this app (FastAPI's "Self-hosting JavaScript and CSS for docs"), so they work offline."""
    app.openapi = lambda: document(app)
    app.mount(DOCS_ASSETS, StaticFiles(directory=Path(fastapi_offline.__file__).parent / "static"), name="docs-assets")

    async def swagger_ui(_: Request):
        return get_swagger_ui_html(openapi_url=app.openapi_url, title=f"{app.title} - Swagger UI",
                                   swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png")

    async def redoc(_: Request):
        return get_redoc_html(openapi_url=app.openapi_url, title=f"{app.title} - ReDoc",
                              redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js",
                              redoc_favicon_url=f"{DOCS_ASSETS}/favicon.png", with_google_fonts=False)

    # Plain routes, outside the API's authentication (as FastAPI's own /docs is).
    app.add_route("/docs", swagger_ui, include_in_schema=False)
    app.add_route("/redoc", redoc, include_in_schema=False)
