"""Who is signed in on a page, and CSRF for every form.

- **Sign-in.** The session cookie (``SESSION_COOKIE``, shared with the JSON API) is resolved as
  the API resolves it (``service.api.signin``); ``require_signed_in`` sends anyone else to
  ``/login?next=…`` with a 303.
- **CSRF, signed in.** Every POST form carries a hidden ``csrf_token`` equal to the session's
  token (compared in constant time); ``require_csrf`` refuses anything else with a 403 *page*.
- **CSRF, not signed in** (the sign-in form itself — against login CSRF — and the public
  objection form): a double-submit token, a random value in the ``FORM_CSRF_COOKIE`` cookie
  (HttpOnly, SameSite=Strict) that the form repeats in its hidden field.
- **Not here: action-link pages** (``/a/{token}``, ``routes/links.py``). Their form carries no
  CSRF token because the URL's 256-bit token is itself the capability: a forged cross-site POST
  would need it, and it acts only as the link's recipient, on one case, once.
- **Errors as pages.** Routers built with ``PageRoute`` turn these refusals, and the
  application's ``NotFound``/``Forbidden``, into HTML pages instead of problem+json.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

import sqlalchemy as sa
from fastapi import Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from models import Person
from service.accounts import Principal
from service.api.deps import SESSION_COOKIE
from service.api.signin import SignInLookup
from service.errors import Forbidden, NotFound
from service.web.i18n import pick_lang
from service.web.render import page

__all__ = ["PageUser", "PageRoute", "SignInRequired", "CsrfRefused", "current_user",
           "require_signed_in", "require_csrf", "form_csrf_token", "check_form_csrf",
           "remember_form_csrf", "safe_next", "message_page", "SignedIn", "CsrfChecked",
           "FORM_CSRF_COOKIE", "PRIVATE"]

FORM_CSRF_COOKIE = "pf_form_csrf"
#: Headers for pages that show a signed-in person's data.
PRIVATE = {"Cache-Control": "no-store"}


@dataclass(frozen=True)
class PageUser:
    """The signed-in person behind a page: their principal, name and preferred language."""

    principal: Principal
    name: str
    lang: str

    @property
    def csrf_token(self) -> str:
        return self.principal.csrf_token or ""


class SignInRequired(Exception):
    """Raised by ``require_signed_in``; ``PageRoute`` answers with a 303 to the sign-in page."""

    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.location = location


class CsrfRefused(Exception):
    """A form without the right CSRF token; ``PageRoute`` answers with a 403 page."""


def _name_and_lang(request: Request, person_id: int) -> tuple[str, str]:
    with request.app.state.lone_reads.connect() as connection:
        name, lang = connection.execute(
            sa.select(Person.name, Person.lang).where(Person.id == person_id)).one()
    return name, lang


async def _resolve(request: Request) -> PageUser | None:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    lookup: SignInLookup = request.app.state.sign_in
    principal = await lookup.for_session(token, request.app.state.clock.now())
    if principal is None or principal.person_id is None:
        return None
    name, lang = await run_in_threadpool(_name_and_lang, request, principal.person_id)
    return PageUser(principal=principal, name=name, lang=lang)


async def current_user(request: Request) -> PageUser | None:
    """The signed-in person, or None (resolved once per request)."""
    if not hasattr(request.state, "page_user"):
        request.state.page_user = await _resolve(request)
    return request.state.page_user


async def require_signed_in(request: Request) -> PageUser:
    """The signed-in person; anyone else goes to ``/login?next=<this page>`` (GET) or
    ``/login`` (a form posted after the session ended)."""
    user = await current_user(request)
    if user is None:
        if request.method in ("GET", "HEAD"):
            here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise SignInRequired(f"/login?next={quote(here, safe='')}")
        raise SignInRequired("/login")
    return user


async def require_csrf(request: Request) -> PageUser:
    """A signed-in person's form: its ``csrf_token`` must equal the session's."""
    user = await require_signed_in(request)
    form = await request.form()
    sent = form.get("csrf_token")
    if not (isinstance(sent, str) and sent and user.csrf_token
            and hmac.compare_digest(sent.encode(), user.csrf_token.encode())):
        raise CsrfRefused()
    return user


#: A page for signed-in people (``user: SignedIn``).
SignedIn = Annotated[PageUser, Depends(require_signed_in)]
#: A signed-in person's form, its CSRF token checked (``user: CsrfChecked``).
CsrfChecked = Annotated[PageUser, Depends(require_csrf)]


def form_csrf_token(request: Request) -> str:
    """The double-submit token for forms shown before sign-in (reused while the cookie lives)."""
    token = request.cookies.get(FORM_CSRF_COOKIE, "")
    return token if 20 <= len(token) <= 100 else secrets.token_urlsafe(32)


def remember_form_csrf(request: Request, response: Response, token: str) -> None:
    """Set the double-submit cookie that ``check_form_csrf`` compares with the form."""
    if request.cookies.get(FORM_CSRF_COOKIE) != token:
        response.set_cookie(FORM_CSRF_COOKIE, token, httponly=True, samesite="strict",
                            secure=request.app.state.settings.cookie_secure)


async def check_form_csrf(request: Request) -> None:
    """A form shown before sign-in: its ``csrf_token`` must equal the cookie's."""
    form = await request.form()
    sent, cookie = form.get("csrf_token"), request.cookies.get(FORM_CSRF_COOKIE)
    if not (isinstance(sent, str) and sent and cookie
            and hmac.compare_digest(sent.encode(), cookie.encode())):
        raise CsrfRefused()


def safe_next(value: str | None, default: str = "/inbox") -> str:
    """Where to go after signing in: a path on this site only (never another host)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return default
    return value


def message_page(request: Request, status: int, heading: tuple[str, str],
                 text: tuple[str, str], *, link: str = "/",
                 link_text: tuple[str, str] = ("返回首页", "Back to the start")) -> Response:
    """A page that only says something (403, 404, 409 …), in the page language."""
    user = getattr(request.state, "page_user", None)
    lang = pick_lang(request, user.lang if user else None)
    return page(request, "message.html", lang, status=status, user=user, heading=heading,
                text=text, link=link, link_text=link_text, headers=PRIVATE)


class PageRoute(APIRoute):
    """A route whose refusals are pages: sign-in redirects, 403 and 404 pages."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInRequired as exc:
                return RedirectResponse(exc.location, status_code=303)
            except CsrfRefused:
                return message_page(request, 403, ("未执行", "Not done"), (
                    "表单已过期或不是从本站提交的，未执行任何操作。请刷新页面后重试。",
                    "This form has expired or did not come from this site; nothing was done. "
                    "Reload the page and try again."))
            except (NotFound, RequestValidationError):
                return message_page(request, 404, ("未找到", "Not found"), (
                    "找不到这个页面，或您无权查看。",
                    "This page does not exist, or you may not see it."))
            except Forbidden:
                return message_page(request, 403, ("无权操作", "Not allowed"),
                                    ("您无权进行此操作。", "You may not do this."))

        return guarded
