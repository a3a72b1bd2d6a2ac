"""One place that turns every error into an RFC 9457 ``application/problem+json`` response.

Types are stable URNs (``urn:pledgeflow:problem:<slug>``) so clients can branch on them; a
refused transition lists every reason. A database outage is 503 with Retry-After; anything
unexpected is a 500 problem with no traceback (it is logged instead).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.errors import PledgeflowError

__all__ = ["install", "problem", "PROBLEM_JSON"]

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger("pledgeflow.api")

_SLUGS = {400: "bad-request", 401: "unauthenticated", 403: "forbidden", 404: "not-found",
          405: "method-not-allowed", 406: "not-acceptable", 409: "conflict",
          412: "stale-version", 413: "payload-too-large", 415: "unsupported-media-type",
          422: "invalid-input", 428: "precondition-required", 429: "too-many-requests",
          503: "database-unavailable"}


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
