"""One place that turns every error into an RFC 9457 ``application/problem+json`` response.

Types are stable URNs (``urn:pledgeflow:problem:<slug>``) so clients can branch on them; a
refused transition lists every reason. A database outage is 503 with Retry-After; anything
unexpected is a 500 problem with no traceback (it is logged instead).

The OpenAPI document says so too (``document``): every 4xx/5xx response of every operation is
``application/problem+json`` with the ``Problem`` schema. Statuses that shared machinery produces
are added from each route's dependencies — 401 (a bad bearer token) and, on unsafe methods, 403
(the CSRF check) wherever the caller is resolved; 400 and 413 where there is a body; 503
wherever the database is used. Statuses that a route's own logic produces (404, 403 for a role,
409, 412, 429, …) are declared on the route with ``responses=problems.responses(...)``.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.errors import PledgeflowError

__all__ = ["install", "problem", "responses", "Problem", "PROBLEM_JSON"]

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger("pledgeflow.api")

_SLUGS = {400: "bad-request", 401: "unauthenticated", 403: "forbidden", 404: "not-found",
          405: "method-not-allowed", 406: "not-acceptable", 409: "conflict",
          412: "stale-version", 413: "payload-too-large", 415: "unsupported-media-type",
          422: "invalid-input", 428: "precondition-required", 429: "too-many-requests",
          503: "database-unavailable"}


class ProblemReason(BaseModel):
    """One reason of a refusal: a stable code and an English sentence."""

    code: str
    message: str


class Problem(BaseModel):
    """An RFC 9457 problem; extension members (e.g. a 412's ``current_version``) may follow."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="A stable URN, urn:pledgeflow:problem:<slug>.",
                      examples=["urn:pledgeflow:problem:not-found"])
    title: str
    status: int
    detail: str
    instance: str | None = Field(default=None, description="The request path.")
    reasons: list[ProblemReason] = Field(
        default_factory=list, description="Every reason, for refusals and invalid input.")


_DESCRIPTIONS = {
    400: "The body cannot be parsed", 401: "Sign-in required, or the bearer token is unknown",
    403: "Not allowed for this caller (or a missing CSRF token)",
    404: "No such object, or not visible to the caller",
    409: "Refused by the workflow, or changed concurrently",
    412: "If-Match names a version that is no longer current",
    413: "The body is too large", 422: "The request does not match the schema",
    429: "Too many failed sign-ins (see Retry-After)",
    503: "The database cannot be reached (see Retry-After)",
}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: the problem statuses its own logic may answer with."""
    return {status: {"description": _DESCRIPTIONS[status]} for status in statuses}


def problem(status: int, slug: str, title: str, detail: str, *, instance: str | None = None,
            headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    """A problem+json response."""
    body = {"type": f"urn:pledgeflow:problem:{slug}", "title": title, "status": status,
            "detail": detail, **({"instance": instance} if instance else {}), **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def install(app: FastAPI) -> None:
    """Register the handlers on an app."""

    @app.exception_handler(PledgeflowError)
    async def _app_error(request: Request, exc: PledgeflowError) -> JSONResponse:
        extra = {k: v for k, v in exc.extra.items() if k != "headers"}
        headers = {}
        if exc.status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="pledgeflow"'
        if "retry_after" in exc.extra:
            headers["Retry-After"] = str(exc.extra["retry_after"])
        return problem(exc.status, exc.type_slug, exc.title, exc.message,
                       instance=request.url.path, headers=headers or None,
                       reasons=[r.as_dict() for r in exc.reasons], **extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        reasons = [{"code": "invalid_field",
                    "message": f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}"}
                   for e in exc.errors()]
        return problem(422, "invalid-input", "Invalid input",
                       "the request does not match the schema", instance=request.url.path,
                       reasons=reasons)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        slug = _SLUGS.get(exc.status_code, "error")
        return problem(exc.status_code, slug, slug.replace("-", " ").capitalize(),
                       str(exc.detail), instance=request.url.path,
                       headers=getattr(exc, "headers", None))

    @app.exception_handler(IntegrityError)
    async def _integrity(request: Request, exc: IntegrityError) -> JSONResponse:
        log.info("integrity conflict on %s: %s", request.url.path, exc.orig)
        return problem(409, "conflict", "Conflict",
                       "the change conflicts with another one made at the same time; retry",
                       instance=request.url.path)

    @app.exception_handler(DataError)
    async def _data(request: Request, exc: DataError) -> JSONResponse:
        # The database refused a value (out of range, a NUL byte in text, …): the input's fault.
        log.info("data refused by the database on %s: %s", request.url.path, exc.orig)
        return problem(422, "invalid-input", "Invalid input",
                       "a value in the request cannot be stored or compared",
                       instance=request.url.path, reasons=[{
                           "code": "invalid_value",
                           "message": "a value is out of range or contains a NUL character"}])

    @app.exception_handler(OperationalError)
    @app.exception_handler(DBAPIError)
    async def _database(request: Request, exc: DBAPIError) -> JSONResponse:
        log.warning("database unavailable on %s: %s", request.url.path, exc.orig)
        return problem(503, "database-unavailable", "Service unavailable",
                       "the database cannot be reached; retry shortly",
                       instance=request.url.path, headers={"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem(500, "internal-error", "Internal error",
                       "something went wrong on our side; it has been logged",
                       instance=request.url.path)

    document(app)


def document(app: FastAPI) -> None:
    """Make ``app.openapi()`` describe every error as problem+json (see the module doc)."""
    generate = app.openapi
    described: list[dict[str, Any]] = []

    def openapi() -> dict[str, Any]:
        schema = generate()  # FastAPI's own, cached until the routes change
        if not described or described[-1] is not schema:
            _describe_problems(app, schema)
            described[:] = [schema]
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _describe_problems(app: FastAPI, schema: dict[str, Any]) -> None:
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    definition = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(definition.pop("$defs", {}))
    schemas["Problem"] = definition
    ref = {"$ref": "#/components/schemas/Problem"}
    for route in iter_route_contexts(app.routes):
        if not (isinstance(route.original_route, APIRoute) and route.include_in_schema):
            continue
        for method in route.methods or ():
            operation = schema["paths"].get(route.path_format, {}).get(method.lower())
            if operation is None:
                continue
            answers = operation.setdefault("responses", {})
            for status in _infrastructure_statuses(route, method):
                answers.setdefault(str(status), {"description": _DESCRIPTIONS[status]})
            for status, answer in answers.items():
                if status[0] in "45":
                    if status == "422":  # FastAPI's default says "Validation Error"
                        answer["description"] = _DESCRIPTIONS[422]
                    answer["content"] = {PROBLEM_JSON: {"schema": ref}}
            operation["responses"] = dict(sorted(answers.items()))
    for name in ("HTTPValidationError", "ValidationError"):  # FastAPI's, never sent
        schemas.pop(name, None)


def _infrastructure_statuses(route: RouteContext, method: str) -> set[int]:
    """Problem statuses the shared machinery (dependencies, body parsing, limits) produces."""
    from service.api import deps

    calls: set[Any] = set()
    pending = [route.dependant]
    while pending:
        dependant = pending.pop()
        calls.add(dependant.call)
        pending.extend(dependant.dependencies)
    statuses: set[int] = set()
    if deps._principal in calls:
        statuses |= {401, 503} | ({403} if method not in deps.SAFE_METHODS else set())
    if deps._uow in calls:
        statuses.add(503)
    if route.body_field is not None:
        statuses |= {400, 413}
    return statuses
