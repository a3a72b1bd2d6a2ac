"""Spot checks (随机抽查): the campaign office draws units at random and records findings."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, IntPK

__all__ = ["SpotCheck"]


class SpotCheck(IntPK, Base):
    """One draw: which units, by whom, from which seed (so the draw can be re-checked)."""

    __tablename__ = "spot_check"

    period_id: Mapped[int] = mapped_column(sa.ForeignKey("period.id"), index=True)
    drawn_at: Mapped[datetime]
    drawn_by_id: Mapped[int] = mapped_column(sa.ForeignKey("person.id"))
    seed: Mapped[str] = mapped_column(sa.String(64))
    organization_ids: Mapped[list[Any]] = mapped_column()
    findings: Mapped[dict[str, Any]] = mapped_column(default=dict)
