"""The organization tree, people, their accounts and their positions.

The tree (``parent_id``) is the reporting line (隶属关系): a unit pledges to, and is reviewed by,
its superior. ``path`` is the materialised chain of ids from the root (``/1/4/17/``) so that
"is X above Y" is a prefix test instead of a recursive query.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, IntPK, utcnow

__all__ = ["Organization", "Person", "Account", "Position", "ORG_KINDS", "ROLES"]

ORG_KINDS = ("campaign_office", "committee", "general_branch", "branch")
ROLES = (
    "secretary",  # 第一责任人 — first responsible
    "deputy",  # 直接责任人 — directly responsible
    "clerk",  # Party-affairs clerk
    "member",
    "member_representative",
    "worker_representative",
    "admin",  # campaign office staff
    "auditor",
)


class Organization(IntPK, Base):
    """A Party organisation (unit), or the campaign office at the root."""

    __tablename__ = "organization"
    __table_args__ = (sa.CheckConstraint(f"kind IN {ORG_KINDS!r}", name="kind"),)

    code: Mapped[str] = mapped_column(sa.String(64), unique=True)
    name_zh: Mapped[str] = mapped_column(sa.String(200))
    name_en: Mapped[str] = mapped_column(sa.String(200))
    kind: Mapped[str] = mapped_column(sa.String(32))
    parent_id: Mapped[int | None] = mapped_column(sa.ForeignKey("organization.id"), index=True)
    path: Mapped[str] = mapped_column(sa.String(400), index=True, default="")
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    def ancestor_ids(self) -> list[int]:
        """Ids from the root down to the parent (excluding this organization)."""
        return [int(p) for p in self.path.strip("/").split("/") if p][:-1]


class Person(IntPK, Base):
    """A Party member or a worker; belongs to one organization."""

    __tablename__ = "person"

    name: Mapped[str] = mapped_column(sa.String(100))
    email: Mapped[str | None] = mapped_column(sa.String(254), unique=True)
    organization_id: Mapped[int] = mapped_column(sa.ForeignKey("organization.id"), index=True)
    is_party_member: Mapped[bool] = mapped_column(default=True)
    lang: Mapped[str] = mapped_column(sa.String(8), default="zh")
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Account(IntPK, Base):
    """Sign-in credentials of a person (workers may have none)."""

    __tablename__ = "account"

    person_id: Mapped[int] = mapped_column(sa.ForeignKey("person.id"), unique=True)
    username: Mapped[str] = mapped_column(sa.String(100), unique=True)
    password_hash: Mapped[str] = mapped_column(sa.String(200))
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Position(IntPK, Base):
    """A role a person holds in an organization; roles come from positions only."""

    __tablename__ = "position"
    __table_args__ = (
        sa.UniqueConstraint("person_id", "organization_id", "role"),
        sa.CheckConstraint(f"role IN {ROLES!r}", name="role"),
    )

    person_id: Mapped[int] = mapped_column(sa.ForeignKey("person.id"), index=True)
    organization_id: Mapped[int] = mapped_column(sa.ForeignKey("organization.id"), index=True)
    role: Mapped[str] = mapped_column(sa.String(32))
