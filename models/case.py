"""A case: one subject (a unit or a member) walking the four steps in one period.

``stage`` and ``status`` are written only by the workflow choke point
(``service.workflow.engine``); ``version`` is bumped on every change and served as the ETag.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, IntPK, utcnow

__all__ = ["Case", "STAGES", "SUBJECT_KINDS"]

STAGES = ("pledge", "review", "evaluation", "commendation", "closed")
SUBJECT_KINDS = ("organization", "member")


class Case(IntPK, Base):
    """One subject in one period; ``subject_key`` makes "one case per subject" a constraint."""

    __tablename__ = "case"
    __table_args__ = (
        sa.UniqueConstraint("period_id", "subject_key"),
        sa.CheckConstraint(f"stage IN {STAGES!r}", name="stage"),
        sa.CheckConstraint(f"subject_kind IN {SUBJECT_KINDS!r}", name="subject_kind"),
        sa.CheckConstraint(
            "(subject_kind = 'member') = (person_id IS NOT NULL)", name="member_has_person"
        ),
        sa.Index("ix_case_period_stage_status", "period_id", "stage", "status"),
    )

    period_id: Mapped[int] = mapped_column(sa.ForeignKey("period.id"))
    subject_kind: Mapped[str] = mapped_column(sa.String(16))
    subject_key: Mapped[str] = mapped_column(sa.String(40))
    organization_id: Mapped[int] = mapped_column(sa.ForeignKey("organization.id"), index=True)
    person_id: Mapped[int | None] = mapped_column(sa.ForeignKey("person.id"), index=True)
    stage: Mapped[str] = mapped_column(sa.String(16))
    status: Mapped[str] = mapped_column(sa.String(32))
    version: Mapped[int] = mapped_column(default=1)
    due_at: Mapped[datetime | None] = mapped_column(index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    @staticmethod
    def key_for(subject_kind: str, subject_id: int) -> str:
        """The subject key: ``organization:12`` or ``member:345``."""
        return f"{subject_kind}:{subject_id}"
