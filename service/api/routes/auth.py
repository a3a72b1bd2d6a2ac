"""Sign-in for pages (session cookie + CSRF token) and bearer API tokens for scripts."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from models import Account, ApiToken, Person
from service import accounts
from service.api import problems
from service.api.deps import SESSION_COOKIE, AppClock, CurrentPrincipal, UoW
from service.api.schemas import PathId

router = APIRouter(prefix="/api/v1", tags=["sign-in"])


class Credentials(BaseModel):
    username: str = Field(min_length=1, max_length=100)
    password: str = Field(min_length=1, max_length=200)


class SignedIn(BaseModel):
    person_id: int
    name: str
    csrf_token: str = Field(description="Send as X-CSRF-Token on every unsafe request.")


class Me(BaseModel):
    person_id: int | None
    name: str | None
    flow: str | None
    via: str


class TokenRequest(BaseModel):
    name: str = Field(min_length=1, max_length=100)


class TokenOut(BaseModel):
    id: int
    name: str
    created_at: datetime
    revoked_at: datetime | None


class NewToken(TokenOut):
    token: str = Field(description="Shown once; store it now.")


@router.post("/auth/login", response_model=SignedIn, summary="Sign in (session cookie)",
             responses=problems.responses(401, 429))
async def login(body: Credentials, request: Request, response: Response, uow: UoW,
                clock: AppClock) -> SignedIn:
    """Check the password and set the session cookie; wrong credentials are rate-limited."""
    address = request.client.host if request.client else "unknown"

    def attempt() -> SignedIn | None:
        with uow() as session:
            result = accounts.sign_in(session, username=body.username, password=body.password,
                                      address=address, now=clock.now())
            if result is None:
                return None
            token, web_session = result
            person = session.get(Person, session.get(Account, web_session.account_id).person_id)
            response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="lax",
                                secure=request.app.state.settings.cookie_secure,
                                max_age=int(accounts.SESSION_LIFETIME.total_seconds()))
            return SignedIn(person_id=person.id, name=person.name,
                            csrf_token=web_session.csrf_token)

    signed_in = await run_in_threadpool(attempt)
    if signed_in is None:
        def remember() -> None:
            with uow() as session:
                accounts.record_failure(session, username=body.username, address=address,
                                        now=clock.now())
        await run_in_threadpool(remember)
        raise accounts.Unauthenticated("wrong username or password")
    return signed_in


@router.post("/auth/logout", status_code=204, summary="Sign out")
def logout(request: Request, response: Response, uow: UoW, clock: AppClock,
           principal: CurrentPrincipal) -> None:
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        with uow() as session:
            accounts.sign_out(session, token, clock.now())
    response.delete_cookie(SESSION_COOKIE)


@router.get("/auth/me", response_model=Me, summary="Who am I")
def me(uow: UoW, principal: CurrentPrincipal) -> Me:
    name = None
    if principal.person_id:
        with uow() as session:
            name = session.get(Person, principal.person_id).name
    return Me(person_id=principal.person_id, name=name, flow=principal.flow, via=principal.via)


@router.post("/tokens", response_model=NewToken, status_code=201, summary="Create an API token",
             responses=problems.responses(403))
def create_token(body: TokenRequest, uow: UoW, clock: AppClock,
                 principal: CurrentPrincipal) -> NewToken:
    accounts.require_person(principal)
    with uow() as session:
        token, row = accounts.create_token(session, name=body.name, now=clock.now(),
                                           account_id=principal.account_id)
        return NewToken(id=row.id, name=row.name, created_at=row.created_at,
                        revoked_at=None, token=token)


@router.get("/tokens", response_model=list[TokenOut], summary="My API tokens",
            responses=problems.responses(403))
def list_tokens(uow: UoW, principal: CurrentPrincipal) -> list[TokenOut]:
    accounts.require_person(principal)
    with uow() as session:
        rows = session.scalars(sa.select(ApiToken).where(
            ApiToken.account_id == principal.account_id).order_by(ApiToken.id))
        return [TokenOut(id=r.id, name=r.name, created_at=r.created_at,
                         revoked_at=r.revoked_at) for r in rows]


@router.delete("/tokens/{token_id}", status_code=204, summary="Revoke an API token",
               responses=problems.responses(403, 404))
def revoke_token(token_id: PathId, uow: UoW, clock: AppClock, principal: CurrentPrincipal) -> None:
    accounts.require_person(principal)
    with uow() as session:
        accounts.revoke_token(session, token_id=token_id, principal=principal, now=clock.now())
