"""A case's pledge (公开承诺), its items, and the fulfilment ledger (践诺台账)."""

from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, IntPK, utcnow

__all__ = ["Pledge", "PledgeItem", "FulfilmentEntry", "FULFILMENT_STATUSES"]

FULFILMENT_STATUSES = ("pending", "in_progress", "kept", "not_kept")


class Pledge(IntPK, Base):
    """The pledge of one case; its life cycle is the case's status in the pledge stage."""

    __tablename__ = "pledge"

    case_id: Mapped[int] = mapped_column(sa.ForeignKey("case.id"), unique=True)
    summary: Mapped[str] = mapped_column(sa.Text, default="")
    submitted_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("person.id"))
    submitted_at: Mapped[datetime | None]
    approved_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("person.id"))
    approved_at: Mapped[datetime | None]
    published_at: Mapped[datetime | None]


class PledgeItem(IntPK, Base):
    """One checkable target: criterion or carrier, target, measures, deadline, owner."""

    __tablename__ = "pledge_item"
    __table_args__ = (
        sa.CheckConstraint(f"fulfilment IN {FULFILMENT_STATUSES!r}", name="fulfilment"),
    )

    pledge_id: Mapped[int] = mapped_column(sa.ForeignKey("pledge.id"), index=True)
    position: Mapped[int] = mapped_column(default=0)
    criterion_id: Mapped[int | None] = mapped_column(sa.ForeignKey("criterion.id"))
    target: Mapped[str] = mapped_column(sa.Text)
    measures: Mapped[str] = mapped_column(sa.Text, default="")
    deadline_on: Mapped[date | None]
    owner_id: Mapped[int | None] = mapped_column(sa.ForeignKey("person.id"))
    assessment_standard: Mapped[str] = mapped_column(sa.Text, default="")
    fulfilment: Mapped[str] = mapped_column(sa.String(16), default="pending")
    carried_over_from_id: Mapped[int | None] = mapped_column(sa.ForeignKey("pledge_item.id"))


class FulfilmentEntry(IntPK, Base):
    """A ledger line: progress on an item, with evidence; never updated, only appended."""

    __tablename__ = "fulfilment_entry"
    __table_args__ = (sa.CheckConstraint(f"status IN {FULFILMENT_STATUSES!r}", name="status"),)

    pledge_item_id: Mapped[int] = mapped_column(sa.ForeignKey("pledge_item.id"), index=True)
    status: Mapped[str] = mapped_column(sa.String(16))
    note: Mapped[str] = mapped_column(sa.Text, default="")
    evidence: Mapped[str] = mapped_column(sa.Text, default="")
    recorded_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("person.id"))
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)
