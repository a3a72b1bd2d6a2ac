"""The read side of a round's evaluators, shared by the JSON API and the office pages.

``evaluators_of`` says *who was asked and whether they voted* — never what anyone chose:
ballots live apart in the ballot box and carry no voter (docs/invariants.md #8). Rows come
ordered by person, not by time, so the order reveals nothing either.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from models import EvaluatorAssignment

__all__ = ["Evaluator", "evaluators_of"]


@dataclass(frozen=True)
class Evaluator:
    """One assigned evaluator: who, as which kind of representative, and whether they voted."""

    person_id: int
    kind: str
    voted: bool


def evaluators_of(session: Session, round_id: int) -> list[Evaluator]:
    """The round's evaluators by person id (who voted, never what)."""
    rows = session.execute(
        sa.select(EvaluatorAssignment.person_id, EvaluatorAssignment.kind,
                  EvaluatorAssignment.voted_at)
        .where(EvaluatorAssignment.round_id == round_id)
        .order_by(EvaluatorAssignment.person_id)).all()
    return [Evaluator(pid, kind, voted_at is not None) for pid, kind, voted_at in rows]
