"""Operational endpoints: liveness with a database check, and Prometheus metrics."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from service.api import problems
from service.api.problems import problem

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness and database check",
            responses=problems.responses(503))
async def healthz(request: Request) -> Response:
    """200 when the database answers, 503 (problem+json) when it does not."""
    def ping() -> None:
        with request.app.state.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    try:
        await run_in_threadpool(ping)
    except sa.exc.SQLAlchemyError:
        return problem(503, "database-unavailable", "Service unavailable",
                       "the database cannot be reached", headers={"Retry-After": "5"})
    return JSONResponse({"status": "ok", "database": "ok"})


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    body = await run_in_threadpool(request.app.state.metrics.render)
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")
