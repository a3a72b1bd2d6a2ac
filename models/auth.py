"""Credentials beyond the password: API tokens, web sessions, and failed sign-in attempts.

Tokens are random and stored only as SHA-256 hashes. A service token belongs to no person: it
lets a named flow act (``Actor(flow=...)``), and the history says which flow did.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, IntPK

__all__ = ["ApiToken", "WebSession", "LoginFailure"]


class ApiToken(IntPK, Base):
    """A bearer token for scripts (a person's) or for the flows (a service token)."""

    __tablename__ = "api_token"
    __table_args__ = (
        sa.CheckConstraint("(account_id IS NULL) = (flow_name IS NOT NULL)", name="owner"),
    )

    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    name: Mapped[str] = mapped_column(sa.String(100))
    account_id: Mapped[int | None] = mapped_column(sa.ForeignKey("account.id"), index=True)
    flow_name: Mapped[str | None] = mapped_column(sa.String(64))
    created_at: Mapped[datetime]
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class WebSession(IntPK, Base):
    """A signed-in browser: the cookie carries the token, the row its hash and CSRF secret."""

    __tablename__ = "web_session"

    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    account_id: Mapped[int] = mapped_column(sa.ForeignKey("account.id"), index=True)
    csrf_token: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class LoginFailure(IntPK, Base):
    """One failed sign-in; recent ones per username and per address rate-limit new tries."""

    __tablename__ = "login_failure"
    __table_args__ = (sa.Index("ix_login_failure_username_at", "username", "at"),
                      sa.Index("ix_login_failure_address_at", "address", "at"))

    username: Mapped[str] = mapped_column(sa.String(100))
    address: Mapped[str] = mapped_column(sa.String(64))
    at: Mapped[datetime]
