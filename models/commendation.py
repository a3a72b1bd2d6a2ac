"""Selection and commendation (评选表彰): one selection per period and award, its nominations."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, IntPK

__all__ = ["Commendation", "Nomination", "AWARDS"]

AWARDS = {"organization": "advanced_organization", "member": "outstanding_member"}


class Commendation(IntPK, Base):
    """The selection of one award in one period: quota, shortlist, notice, decision."""

    __tablename__ = "commendation"
    __table_args__ = (
        sa.UniqueConstraint("period_id", "award"),
        sa.CheckConstraint(
            "status IN ('selected', 'under_notice', 'decided')", name="status"
        ),
    )

    period_id: Mapped[int] = mapped_column(sa.ForeignKey("period.id"))
    award: Mapped[str] = mapped_column(sa.String(32))
    pool_size: Mapped[int]
    quota: Mapped[int]
    shortlist_size: Mapped[int]
    rules: Mapped[dict[str, Any]] = mapped_column()
    status: Mapped[str] = mapped_column(sa.String(16), default="selected")
    selected_at: Mapped[datetime]
    decided_at: Mapped[datetime | None]
    decided_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("person.id"))


class Nomination(IntPK, Base):
    """One case's place in a selection: eligibility reasons, rank, adjustments with rationale."""

    __tablename__ = "nomination"
    __table_args__ = (sa.UniqueConstraint("commendation_id", "case_id"),)

    commendation_id: Mapped[int] = mapped_column(sa.ForeignKey("commendation.id"), index=True)
    case_id: Mapped[int] = mapped_column(sa.ForeignKey("case.id"), unique=True)
    eligible: Mapped[bool]
    rank: Mapped[int | None]
    satisfaction: Mapped[float | None]
    reasons: Mapped[list[Any]] = mapped_column(default=list)
    shortlisted: Mapped[bool]
    adjustment_rationale: Mapped[str | None] = mapped_column(sa.Text)
