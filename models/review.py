"""Leader reviews (领导点评): scheduled or ad hoc, acknowledged with a rectification plan."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, IntPK

__all__ = ["Review"]


class Review(IntPK, Base):
    """Achievements, problems, direction and a rating per criterion."""

    __tablename__ = "review"
    __table_args__ = (sa.CheckConstraint("kind IN ('scheduled', 'ad_hoc')", name="kind"),)

    case_id: Mapped[int] = mapped_column(sa.ForeignKey("case.id"), index=True)
    kind: Mapped[str] = mapped_column(sa.String(16))
    reviewer_id: Mapped[int | None] = mapped_column(sa.ForeignKey("person.id"))
    achievements: Mapped[str] = mapped_column(sa.Text)
    problems: Mapped[str] = mapped_column(sa.Text)
    direction: Mapped[str] = mapped_column(sa.Text)
    ratings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    recorded_at: Mapped[datetime]
    rectification_plan: Mapped[str | None] = mapped_column(sa.Text)
    acknowledged_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("person.id"))
    acknowledged_at: Mapped[datetime | None]
