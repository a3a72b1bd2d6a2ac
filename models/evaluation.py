"""Mass evaluation (群众评议): rounds, evaluator assignments, anonymous ballots.

Anonymity is structural: ``EvaluatorAssignment.voted_at`` records *that* someone voted;
``Ballot`` records *what* was chosen, with a random id and no voter, no time and no order that
could link the two. The unique ``(round_id, assignment_id)`` on ``BallotReceipt`` makes one ballot
per evaluator a database constraint.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, IntPK

__all__ = ["EvaluationRound", "EvaluatorAssignment", "BallotReceipt", "Ballot", "ROUND_STATUSES"]

ROUND_STATUSES = ("open", "tallied", "inconclusive")
DISCLOSURE_SCOPES = ("unit", "superior", "public")


class EvaluationRound(IntPK, Base):
    """One round of ballots on one case."""

    __tablename__ = "evaluation_round"
    __table_args__ = (
        sa.CheckConstraint(f"status IN {ROUND_STATUSES!r}", name="status"),
        sa.CheckConstraint(f"disclosure_scope IN {DISCLOSURE_SCOPES!r}", name="scope"),
    )

    case_id: Mapped[int] = mapped_column(sa.ForeignKey("case.id"), unique=True)
    scale: Mapped[str] = mapped_column(sa.String(32))
    criteria: Mapped[list[Any]] = mapped_column()
    quorum: Mapped[float]
    opened_at: Mapped[datetime]
    closes_at: Mapped[datetime]
    extended: Mapped[bool] = mapped_column(default=False)
    status: Mapped[str] = mapped_column(sa.String(16), default="open")
    disclosure_scope: Mapped[str] = mapped_column(sa.String(16), default="unit")
    tally: Mapped[dict[str, Any] | None] = mapped_column()
    closed_at: Mapped[datetime | None]
    announced_at: Mapped[datetime | None]


class EvaluatorAssignment(IntPK, Base):
    """An evaluator invited to a round; workers may have no account, only an email."""

    __tablename__ = "evaluator_assignment"
    __table_args__ = (
        sa.UniqueConstraint("round_id", "person_id"),
        sa.CheckConstraint(
            "kind IN ('member_representative', 'worker_representative')", name="kind"
        ),
    )

    round_id: Mapped[int] = mapped_column(sa.ForeignKey("evaluation_round.id"), index=True)
    person_id: Mapped[int] = mapped_column(sa.ForeignKey("person.id"))
    kind: Mapped[str] = mapped_column(sa.String(32))
    voted_at: Mapped[datetime | None]


class BallotReceipt(Base):
    """Who has voted in a round (never what): the one-ballot-per-evaluator constraint."""

    __tablename__ = "ballot_receipt"

    round_id: Mapped[int] = mapped_column(sa.ForeignKey("evaluation_round.id"), primary_key=True)
    assignment_id: Mapped[int] = mapped_column(
        sa.ForeignKey("evaluator_assignment.id"), primary_key=True
    )


class Ballot(Base):
    """What one (unknown) evaluator chose: criterion code -> scale option code."""

    __tablename__ = "ballot"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    round_id: Mapped[int] = mapped_column(sa.ForeignKey("evaluation_round.id"), index=True)
    answers: Mapped[dict[str, Any]] = mapped_column()
