"""Campaign periods with their calendars, and the criteria sets cases are judged on."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, IntPK, utcnow

__all__ = ["Period", "CriteriaSet", "Criterion", "PERIOD_STATUSES"]

PERIOD_STATUSES = ("planned", "open", "closed")


class Period(IntPK, Base):
    """A campaign period (活动时段) and its calendar; ``rules`` holds CampaignRules overrides."""

    __tablename__ = "period"
    __table_args__ = (
        sa.CheckConstraint(f"status IN {PERIOD_STATUSES!r}", name="status"),
        sa.CheckConstraint("starts_on <= ends_on", name="dates"),
    )

    code: Mapped[str] = mapped_column(sa.String(32), unique=True)
    sequence: Mapped[int] = mapped_column(unique=True)
    name_zh: Mapped[str] = mapped_column(sa.String(200))
    name_en: Mapped[str] = mapped_column(sa.String(200))
    starts_on: Mapped[date]
    ends_on: Mapped[date]
    pledge_due_on: Mapped[date]
    review_opens_on: Mapped[date]
    review_due_on: Mapped[date]
    evaluation_opens_on: Mapped[date]
    evaluation_due_on: Mapped[date]
    commendation_on: Mapped[date]
    rules: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(sa.String(16), default="planned")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CriteriaSet(IntPK, Base):
    """四强 / 四优 / 六个一, or a unit's refinement of one of them (``refines_id``)."""

    __tablename__ = "criteria_set"
    __table_args__ = (
        sa.CheckConstraint("applies_to IN ('organization', 'member', 'carrier')", name="applies"),
    )

    code: Mapped[str] = mapped_column(sa.String(64), unique=True)
    name_zh: Mapped[str] = mapped_column(sa.String(200))
    name_en: Mapped[str] = mapped_column(sa.String(200))
    applies_to: Mapped[str] = mapped_column(sa.String(16))
    organization_id: Mapped[int | None] = mapped_column(sa.ForeignKey("organization.id"))
    refines_id: Mapped[int | None] = mapped_column(sa.ForeignKey("criteria_set.id"))


class Criterion(IntPK, Base):
    """One criterion of a set, e.g. 政治引领力强 (``political_leadership``)."""

    __tablename__ = "criterion"
    __table_args__ = (sa.UniqueConstraint("criteria_set_id", "code"),)

    criteria_set_id: Mapped[int] = mapped_column(sa.ForeignKey("criteria_set.id"), index=True)
    code: Mapped[str] = mapped_column(sa.String(64))
    name_zh: Mapped[str] = mapped_column(sa.String(200))
    name_en: Mapped[str] = mapped_column(sa.String(200))
    description_zh: Mapped[str] = mapped_column(sa.Text, default="")
    position: Mapped[int] = mapped_column(default=0)
