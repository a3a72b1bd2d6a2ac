"""The FastAPI application: ``create_app(settings)`` wires routers, errors, limits, metrics."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from service.api import problems
from service.api.limits import BodySizeLimit
from service.api.metrics import Metrics, MetricsMiddleware
from service.api.signin import SignInLookup
from service.clock import Clock, SystemClock
from service.db import lone_reads, make_engine, make_session_factory
from service.settings import Settings, get_settings

__all__ = ["create_app", "freeze_startup_heap"]

DESCRIPTION = """\
pledgeflow runs the Strive-for-Excellence campaign (创先争优): public pledge → leader review →
mass evaluation → selection and commendation, for every unit and member in every period.

Every action goes through one choke point. Responses about a case carry its version as an
`ETag`; send it back as `If-Match` to refuse acting on a stale view. POST actions accept an
`Idempotency-Key`. Errors are RFC 9457 `application/problem+json`.
"""


def create_app(settings: Settings | None = None, *, clock: Clock | None = None) -> FastAPI:
    """Build the app for these settings (and, for tests and demos, a clock)."""
    from service.api.routes import ROUTERS
    from service.web.routes import (
        links,
        mail,
        office_audit,
        office_criteria,
        office_dashboard,
        office_desk,
        office_evaluators,
        office_home,
        office_import,
        office_periods,
        office_spot_checks,
        pages,
        pages_auth,
        pages_bulletin,
        pages_case,
        pages_forms,
        pages_inbox,
        pages_pledge,
    )

    settings = settings or get_settings()
    engine = make_engine(settings.database_url, echo=settings.sql_echo,
                         pool_size=settings.db_pool_size)
    factory = make_session_factory(engine)
    app = FastAPI(title="pledgeflow", version="0.1.0", description=DESCRIPTION,
                  openapi_url="/openapi.json", docs_url="/docs", redoc_url=None,
                  lifespan=_lifespan)
    app.state.settings = settings
    app.state.engine = engine
    app.state.lone_reads = lone_reads(engine)
    app.state.sign_in = SignInLookup(engine)
    app.state.session_factory = factory
    app.state.clock = clock or SystemClock()
    app.state.metrics = Metrics(factory)
    problems.install(app)
    for router in ROUTERS:
        app.include_router(router)
    app.include_router(links.router)
    for module in (pages, pages_auth, pages_inbox, pages_case, pages_forms, pages_pledge,
                   pages_bulletin):
        app.include_router(module.router)  # GET / goes to the inbox or the bulletin board
    for module in (office_home, office_periods, office_import, office_criteria,
                   office_evaluators, office_desk, office_spot_checks, office_audit,
                   office_dashboard):
        app.include_router(module.router)  # the campaign office's pages (/office/…)
    if settings.mail_catcher_dir:
        app.include_router(mail.router)
    app.mount("/static", StaticFiles(directory=Path(__file__).parent.parent / "web" / "static"),
              name="static")
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    return app


def freeze_startup_heap() -> None:
    """For a process that serves one app for its whole life, once the app is built.

    What exists by then (modules, the app and its routes, the ORM's mappers: ~145,000 objects)
    lives as long as the process. ``gc.freeze`` takes it out of the cyclic collector's reach,
    so a full collection scans only what requests left behind: in a worker, 4–7 ms instead of
    70–120 ms, a pause that fell on whichever request triggered it (docs/benchmarks.md,
    "Fourth session"). Not for tests, which build an app per test: a frozen object caught in
    a reference cycle is never freed."""
    gc.collect()
    gc.freeze()


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Listen for sign-in changes (``service.api.signin``), and run the outbox dispatcher
    beside the service, so an email leaves within seconds."""
    settings: Settings = app.state.settings
    await app.state.sign_in.open()
    stop, task = asyncio.Event(), None
    if settings.dispatcher:
        from notifications.dispatcher import Dispatcher

        dispatcher = Dispatcher.from_settings(settings, app.state.session_factory,
                                              app.state.clock)
        task = asyncio.create_task(dispatcher.run_forever(stop), name="outbox-dispatcher")
    try:
        yield
    finally:
        stop.set()
        if task is not None:
            await task
        await app.state.sign_in.close()
        app.state.engine.dispose()
