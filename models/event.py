"""The append-only, hash-chained history of every transition and decision.

Each event's ``hash`` is SHA-256 over the canonical JSON of its fields and the previous
event's hash (``service.history``). ``seq`` and ``prev_hash`` are unique, so the chain cannot
fork even if two writers raced past the head lock. ``ChainHead`` is the single row that
serialises appends.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base

__all__ = ["Event", "ChainHead", "GENESIS_HASH"]

GENESIS_HASH = "0" * 64


class Event(Base):
    """One transition or decision: who (person or flow), what, when, why."""

    __tablename__ = "event"
    __table_args__ = (
        sa.CheckConstraint(
            "(actor_person_id IS NULL) OR (actor_flow IS NULL)", name="one_actor"
        ),
        sa.Index("ix_event_period_seq", "period_id", "seq"),
        # A case's timeline in order (also every case_id lookup): migration 0006.
        sa.Index("ix_event_case_seq", "case_id", "seq"),
    )

    seq: Mapped[int] = mapped_column(sa.BigInteger().with_variant(sa.Integer, "sqlite"),
                                     primary_key=True, autoincrement=False)
    case_id: Mapped[int | None] = mapped_column(sa.ForeignKey("case.id"))
    period_id: Mapped[int | None] = mapped_column(sa.ForeignKey("period.id"))
    stage: Mapped[str | None] = mapped_column(sa.String(16))
    from_status: Mapped[str | None] = mapped_column(sa.String(32))
    to_status: Mapped[str | None] = mapped_column(sa.String(32))
    action: Mapped[str] = mapped_column(sa.String(40))
    actor_person_id: Mapped[int | None] = mapped_column(sa.ForeignKey("person.id"))
    actor_flow: Mapped[str | None] = mapped_column(sa.String(64))
    occurred_at: Mapped[datetime]
    comment: Mapped[str | None] = mapped_column(sa.Text)
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    prev_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    hash: Mapped[str] = mapped_column(sa.String(64), unique=True)


class ChainHead(Base):
    """The one row holding the newest event; locked by every append."""

    __tablename__ = "chain_head"
    __table_args__ = (sa.CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(primary_key=True, default=1, autoincrement=False)
    seq: Mapped[int] = mapped_column(sa.BigInteger().with_variant(sa.Integer, "sqlite"))
    hash: Mapped[str] = mapped_column(sa.String(64))
