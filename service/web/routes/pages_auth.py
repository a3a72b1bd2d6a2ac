"""Sign in (``/login``) and out (``/logout``) on the pages.

The sign-in form is protected against login CSRF by a double-submit token (cookie + hidden
field); a wrong password shows the form again with a message (and counts as a failure, in a
transaction of its own so it survives); too many failures say so, readably, with 429.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from service import accounts
from service.api.deps import SESSION_COOKIE, AppClock, UoW
from service.web.routes.pages import form_values, show
from service.web.session import (
    FORM_CSRF_COOKIE,
    PageRoute,
    check_form_csrf,
    current_user,
    form_csrf_token,
    remember_form_csrf,
    require_csrf,
    safe_next,
)

router = APIRouter(include_in_schema=False, route_class=PageRoute)


def _login_page(request: Request, *, status: int = 200, problem: str | None = None,
                username: str = "", next_url: str = "/inbox") -> Response:
    token = form_csrf_token(request)
    response = show(request, "login.html", None, status=status, problem=problem,
                    username=username, next_url=next_url, form_token=token,
                    headers={"Cache-Control": "no-store"})
    remember_form_csrf(request, response, token)
    return response


@router.get("/login")
async def login_form(request: Request) -> Response:
    """The sign-in form (or straight on, when already signed in)."""
    next_url = safe_next(request.query_params.get("next"))
    if await current_user(request) is not None:
        return RedirectResponse(next_url, status_code=303)
    return _login_page(request, next_url=next_url)


@router.post("/login")
async def login(request: Request, uow: UoW, clock: AppClock) -> Response:
    """Check the password; on success set the session cookie and go on to ``next``."""
    await check_form_csrf(request)
    values = form_values(await request.form())
    username = values.get("username", "").strip()[:100]
    password = values.get("password", "")[:200]
    next_url = safe_next(values.get("next"))
    if not username or not password:
        return _login_page(request, status=422, problem="missing", username=username,
                           next_url=next_url)
    address = request.client.host if request.client else "unknown"

    def attempt() -> str | None:
        with uow() as session:
            result = accounts.sign_in(session, username=username, password=password,
                                      address=address, now=clock.now())
            return None if result is None else result[0]

    try:
        token = await run_in_threadpool(attempt)
    except accounts.TooManyAttempts:
        return _login_page(request, status=429, problem="rate_limited", username=username,
                           next_url=next_url)
    if token is None:
        def remember() -> None:
            with uow() as session:
                accounts.record_failure(session, username=username, address=address,
                                        now=clock.now())
        await run_in_threadpool(remember)
        return _login_page(request, status=422, problem="wrong", username=username,
                           next_url=next_url)
    response = RedirectResponse(next_url, status_code=303)
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="lax",
                        secure=request.app.state.settings.cookie_secure,
                        max_age=int(accounts.SESSION_LIFETIME.total_seconds()))
    response.delete_cookie(FORM_CSRF_COOKIE)
    return response


@router.post("/logout")
async def logout(request: Request, uow: UoW, clock: AppClock) -> Response:
    """End the session (the form carries the session's CSRF token) and go to sign-in."""
    if await current_user(request) is not None:
        await require_csrf(request)
        token = request.cookies[SESSION_COOKIE]

        def end() -> None:
            with uow() as session:
                accounts.sign_out(session, token, clock.now())
        await run_in_threadpool(end)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response
