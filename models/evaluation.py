"""Mass evaluation (群众评议): rounds, evaluator assignments, anonymous ballots.

Anonymity is structural: ``EvaluatorAssignment.voted_at`` and ``BallotReceipt`` record *that*
someone voted; ``BallotCount`` keeps only totals per criterion and option, so *what* anyone
chose is never stored on its own. The primary key ``(round_id, assignment_id)`` of
``BallotReceipt`` makes one ballot per evaluator a database constraint.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, IntPK

__all__ = ["EvaluationRound", "EvaluatorAssignment", "BallotReceipt", "BallotCount",
           "ROUND_STATUSES"]

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


class BallotCount(Base):
    """The ballot box: how many ballots of a round chose each option on each criterion.

    A vote only adds one to counters; no row per ballot exists, so no storage order, row id
    or transaction id can tie what was chosen to who chose it.
    """

    __tablename__ = "ballot_count"

    round_id: Mapped[int] = mapped_column(sa.ForeignKey("evaluation_round.id"), primary_key=True)
    criterion: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    option: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    count: Mapped[int] = mapped_column(default=0)
