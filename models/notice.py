"""Public notices (公示) and the objections (异议) anyone may file against them."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, IntPK

__all__ = ["PublicNotice", "Objection"]


class PublicNotice(IntPK, Base):
    """A window in which a pledge or a shortlist is posted and can be objected to."""

    __tablename__ = "public_notice"
    __table_args__ = (
        sa.CheckConstraint("subject IN ('pledge', 'shortlist')", name="subject"),
        sa.CheckConstraint("status IN ('open', 'closed', 'withdrawn')", name="status"),
        sa.CheckConstraint("starts_at < ends_at", name="window"),
    )

    subject: Mapped[str] = mapped_column(sa.String(16))
    case_id: Mapped[int | None] = mapped_column(sa.ForeignKey("case.id"), index=True)
    commendation_id: Mapped[int | None] = mapped_column(sa.ForeignKey("commendation.id"))
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(sa.String(16), default="open")


class Objection(IntPK, Base):
    """An objection to something under notice; it must be upheld or dismissed with a reason."""

    __tablename__ = "objection"
    __table_args__ = (
        sa.CheckConstraint("status IN ('open', 'upheld', 'dismissed')", name="status"),
    )

    notice_id: Mapped[int] = mapped_column(sa.ForeignKey("public_notice.id"), index=True)
    case_id: Mapped[int | None] = mapped_column(sa.ForeignKey("case.id"), index=True)
    filed_by_name: Mapped[str] = mapped_column(sa.String(100), default="")
    contact: Mapped[str] = mapped_column(sa.String(254), default="")
    body: Mapped[str] = mapped_column(sa.Text)
    filed_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(sa.String(16), default="open")
    resolution: Mapped[str | None] = mapped_column(sa.Text)
    resolved_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("person.id"))
    resolved_at: Mapped[datetime | None]
