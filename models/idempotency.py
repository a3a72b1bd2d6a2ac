"""Idempotency keys of POST actions: a replay returns the first response."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base

__all__ = ["IdempotencyRecord"]


class IdempotencyRecord(Base):
    """One (caller, key): the request it came with and, once done, the response it got."""

    __tablename__ = "idempotency_record"
    __table_args__ = (
        sa.CheckConstraint("state IN ('running', 'done')", name="state"),
    )

    principal: Mapped[str] = mapped_column(sa.String(80), primary_key=True)
    key: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    request_hash: Mapped[str] = mapped_column(sa.String(64))
    state: Mapped[str] = mapped_column(sa.String(16))
    status_code: Mapped[int | None]
    response: Mapped[dict[str, Any] | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(index=True)
