"""Request-scoped things every route needs: the unit of work, the caller, the clock.

The request owns its transaction explicitly — ``with uow() as session:`` inside the route —
so the commit happens before the response is built, and a failed commit is an error response,
never a 200 for a change that did not happen.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from service.accounts import Principal, Unauthenticated
from service.api.signin import SignInLookup
from service.clock import Clock
from service.errors import Forbidden

__all__ = ["UoW", "CurrentPrincipal", "AppClock", "SESSION_COOKIE", "CSRF_HEADER"]

SESSION_COOKIE = "pf_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


# ``async`` although they await nothing: FastAPI runs a plain ``def`` dependency in the thread
# pool, a hand-off to another thread and back on every request, for what is an attribute read.
async def _uow(request: Request) -> Callable[[], AbstractContextManager[Session]]:
    factory = request.app.state.session_factory

    @contextmanager
    def unit_of_work() -> Iterator[Session]:
        with factory() as session, session.begin():
            yield session

    return unit_of_work


async def _clock(request: Request) -> Clock:
    return request.app.state.clock


async def _principal(request: Request) -> Principal:
    """Bearer token first, then the session cookie (with CSRF on unsafe methods)."""
    lookup: SignInLookup = request.app.state.sign_in
    authorization = request.headers.get("authorization", "")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("use 'Authorization: Bearer <token>'")
        principal = await lookup.for_token(token.strip())
        if principal is None:
            raise Unauthenticated("the bearer token is unknown or revoked")
        return principal
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return Principal()
    principal = await lookup.for_session(cookie, request.app.state.clock.now())
    if principal is None:
        return Principal()
    if request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not (sent and principal.csrf_token and hmac.compare_digest(sent, principal.csrf_token)):
            raise Forbidden("missing or wrong CSRF token (send the X-CSRF-Token header)")
    return principal


UoW = Annotated[Callable[[], AbstractContextManager[Session]], Depends(_uow)]
CurrentPrincipal = Annotated[Principal, Depends(_principal)]
AppClock = Annotated[Clock, Depends(_clock)]
