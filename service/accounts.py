"""Accounts, sign-in, web sessions and API tokens (no HTTP here: the API calls these).

Secrets are 256-bit random values shown once and stored only as SHA-256 hashes. Failed
sign-ins are rate-limited per username and per client address, from the database, so every
replica sees the same count.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from models import Account, ApiToken, LoginFailure, Person, WebSession
from service.errors import Forbidden, InvalidInput, NotFound, PledgeflowError, Reason
from service.passwords import hash_password, needs_rehash, verify_password
from service.workflow.roles import Actor

__all__ = [
    "Principal", "TooManyAttempts", "Unauthenticated", "sign_in", "sign_out", "create_account",
    "create_token", "revoke_token", "principal_for_token", "principal_for_session", "hash_secret",
]

SESSION_LIFETIME = timedelta(hours=12)
FAILURE_WINDOW = timedelta(minutes=15)
MAX_FAILURES_PER_USER = 5
MAX_FAILURES_PER_ADDRESS = 30


class Unauthenticated(PledgeflowError):
    status, type_slug, title = 401, "unauthenticated", "Sign-in required"


class TooManyAttempts(PledgeflowError):
    status, type_slug, title = 429, "too-many-attempts", "Too many failed sign-ins"


@dataclass(frozen=True)
class Principal:
    """Who is calling: a person (by session or token), a flow (service token), or nobody."""

    person_id: int | None = None
    account_id: int | None = None
    flow: str | None = None
    via: str = "anonymous"  # "session" | "token" | "anonymous"
    csrf_token: str | None = None
    #: When a session principal's session ends (how long ``service.api.signin`` may keep it);
    #: not part of who the caller is, so not compared.
    expires_at: datetime | None = field(default=None, compare=False)

    @property
    def key(self) -> str:
        """A stable identity for idempotency records."""
        return f"flow:{self.flow}" if self.flow else f"account:{self.account_id or 0}"

    @property
    def actor(self) -> Actor:
        """The caller as the workflow sees them: a flow, or a person (the public if neither)."""
        return Actor(flow=self.flow) if self.flow else Actor(person_id=self.person_id)


def hash_secret(secret: str) -> str:
    """How tokens are stored: SHA-256 hex (they are random, so no salt is needed)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def _new_secret() -> str:
    return secrets.token_urlsafe(32)  # 256 bits


def create_account(session: Session, *, person_id: int, username: str, password: str) -> Account:
    """Give a person a sign-in; the password is hashed with Argon2id."""
    if len(password) < 10:
        raise InvalidInput("password too short", [Reason("weak_password",
                                                         "use at least 10 characters")])
    if session.get(Person, person_id) is None:
        raise NotFound(f"no person {person_id}")
    if session.scalar(sa.select(Account.id).where(sa.or_(Account.username == username,
                                                         Account.person_id == person_id))):
        raise InvalidInput("account exists", [Reason(
            "account_exists", "that username or person already has an account")])
    account = Account(person_id=person_id, username=username,
                      password_hash=hash_password(password))
    session.add(account)
    session.flush()
    return account


def _recent_failures(session: Session, column: sa.ColumnElement[str], value: str,
                     now: datetime) -> int:
    return session.scalar(sa.select(sa.func.count()).select_from(LoginFailure).where(
        column == value, LoginFailure.at > now - FAILURE_WINDOW)) or 0


def check_rate_limit(session: Session, *, username: str, address: str, now: datetime) -> None:
    """Refuse before checking the password when too many recent attempts failed."""
    if (_recent_failures(session, LoginFailure.username, username, now) >= MAX_FAILURES_PER_USER
            or _recent_failures(session, LoginFailure.address, address, now)
            >= MAX_FAILURES_PER_ADDRESS):
        raise TooManyAttempts("too many failed sign-ins; try again in 15 minutes",
                              extra={"retry_after": int(FAILURE_WINDOW.total_seconds())})


def record_failure(session: Session, *, username: str, address: str, now: datetime) -> None:
    """Remember a failed attempt (call in its own committed transaction)."""
    session.add(LoginFailure(username=username[:100], address=address[:64], at=now))


def sign_in(session: Session, *, username: str, password: str, address: str,
            now: datetime) -> tuple[str, WebSession] | None:
    """Check the password; on success open a web session and return (cookie token, row).

    Returns None for a wrong username or password (the caller records the failure in a
    transaction of its own, so that it survives this one's rollback)."""
    check_rate_limit(session, username=username, address=address, now=now)
    account = session.scalars(sa.select(Account).where(Account.username == username,
                                                       Account.active.is_(True))).first()
    if account is None:
        verify_password(_DUMMY_HASH, password)  # same cost whether or not the user exists
        return None
    if not verify_password(account.password_hash, password):
        return None
    if needs_rehash(account.password_hash):
        account.password_hash = hash_password(password)
    token = _new_secret()
    web_session = WebSession(token_hash=hash_secret(token), account_id=account.id,
                             csrf_token=secrets.token_urlsafe(32), created_at=now,
                             expires_at=now + SESSION_LIFETIME)
    session.add(web_session)
    session.flush()
    return token, web_session


_DUMMY_HASH = hash_password("not a real password, only for constant-time refusals")


def sign_out(session: Session, token: str, now: datetime) -> None:
    """End a web session (no error if it is already gone)."""
    session.execute(sa.update(WebSession).where(WebSession.token_hash == hash_secret(token))
                    .values(revoked_at=now))


def principal_for_session(db: Session | sa.Connection, token: str, now: datetime
                          ) -> Principal | None:
    """The person behind a session cookie, or None when unknown, expired or revoked.

    ``db``: a session, or a plain connection (what a request's sign-in check uses)."""
    row = db.execute(_SESSION_PRINCIPAL, {"token_hash": hash_secret(token), "now": now}).first()
    if row is None:
        return None
    return Principal(person_id=row.person_id, account_id=row.account_id, via="session",
                     csrf_token=row.csrf_token, expires_at=row.expires_at)


def principal_for_token(db: Session | sa.Connection, token: str) -> Principal | None:
    """The person or flow behind a bearer token, or None when unknown, revoked, or its
    account is deactivated. ``db`` as for ``principal_for_session``."""
    row = db.execute(_TOKEN_PRINCIPAL, {"token_hash": hash_secret(token)}).first()
    if row is None:
        return None
    if row.flow_name:
        return Principal(flow=row.flow_name, via="token")
    return Principal(person_id=row.person_id, account_id=row.account_id, via="token")


# Built once: every request runs one of them, and building a statement costs more than
# running it.
_SESSION_PRINCIPAL = (
    sa.select(WebSession.account_id, WebSession.csrf_token, Account.person_id,
              WebSession.expires_at)
    .join(Account, Account.id == WebSession.account_id)
    .where(WebSession.token_hash == sa.bindparam("token_hash"), WebSession.revoked_at.is_(None),
           WebSession.expires_at > sa.bindparam("now"), Account.active.is_(True)))
_TOKEN_PRINCIPAL = (
    sa.select(ApiToken.account_id, ApiToken.flow_name, Account.person_id)
    .outerjoin(Account, Account.id == ApiToken.account_id)
    .where(ApiToken.token_hash == sa.bindparam("token_hash"), ApiToken.revoked_at.is_(None),
           # a person's token dies with their account, as their sessions do
           sa.or_(ApiToken.account_id.is_(None), Account.active.is_(True))))


def create_token(session: Session, *, name: str, now: datetime, account_id: int | None = None,
                 flow_name: str | None = None) -> tuple[str, ApiToken]:
    """A new bearer token (shown once): a person's, or a service token for a flow."""
    if (account_id is None) == (flow_name is None):
        raise InvalidInput("a token belongs to an account or to a flow, not both or neither")
    token = _new_secret()
    row = ApiToken(token_hash=hash_secret(token), name=name, account_id=account_id,
                   flow_name=flow_name, created_at=now)
    session.add(row)
    session.flush()
    return token, row


def revoke_token(session: Session, *, token_id: int, principal: Principal, now: datetime) -> None:
    """Revoke one of the caller's own tokens."""
    row = session.get(ApiToken, token_id)
    if row is None or row.account_id != principal.account_id or principal.account_id is None:
        raise NotFound(f"no token {token_id} of yours")
    if row.revoked_at is None:
        row.revoked_at = now


def require_person(principal: Principal) -> int:
    """The caller's person id, or an error saying sign-in is needed."""
    if principal.person_id is None:
        if principal.flow:
            raise Forbidden("this needs a person, not a service token")
        raise Unauthenticated("sign in, or send a bearer token")
    return principal.person_id
