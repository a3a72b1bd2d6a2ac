"""The facts a transition is judged on, loaded after the case row is locked.

Guards read a ``Context`` and never write; facts they need are loaded on first use and cached
for the rest of the transition, so a guard costs a query only when its stage needs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.orm import Session

from models import (
    Case,
    Commendation,
    CriteriaSet,
    Criterion,
    EvaluationRound,
    EvaluatorAssignment,
    Nomination,
    Objection,
    Organization,
    Period,
    Person,
    Pledge,
    PledgeItem,
    Position,
    PublicNotice,
    Review,
)
from service.rules import CampaignRules
from service.workflow.roles import Actor

__all__ = ["Context"]

_PLEDGE = sa.select(Pledge).where(Pledge.case_id == sa.bindparam("case_id"))


@dataclass
class Context:
    """One attempted transition: the locked case, who acts, with what input, at what time."""

    session: Session
    case: Case
    case_org: Organization
    period: Period
    actor: Actor
    roles: set[str]
    now: datetime
    action: str
    comment: str | None = None
    input: BaseModel | None = None
    # Effects put what the event should carry here (ids, counts — never ballot contents).
    payload: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def rules(self) -> CampaignRules:
        return CampaignRules.model_validate(self.period.rules or {})

    @cached_property
    def pledge(self) -> Pledge | None:
        return self.session.scalars(_PLEDGE, {"case_id": self.case.id}).first()

    @cached_property
    def pledge_items(self) -> list[PledgeItem]:
        if self.pledge is None:
            return []
        return list(self.session.scalars(
            sa.select(PledgeItem).where(PledgeItem.pledge_id == self.pledge.id)
            .order_by(PledgeItem.position, PledgeItem.id)
        ))

    @cached_property
    def open_notice(self) -> PublicNotice | None:
        return self.session.scalars(
            sa.select(PublicNotice).where(
                PublicNotice.case_id == self.case.id, PublicNotice.status == "open"
            )
        ).first() or self._shortlist_notice

    @cached_property
    def _shortlist_notice(self) -> PublicNotice | None:
        if self.nomination is None:
            return None
        return self.session.scalars(
            sa.select(PublicNotice).where(
                PublicNotice.commendation_id == self.nomination.commendation_id,
                PublicNotice.status == "open",
            )
        ).first()

    @cached_property
    def open_objections(self) -> list[Objection]:
        return list(self.session.scalars(
            sa.select(Objection).where(Objection.case_id == self.case.id,
                                       Objection.status == "open")
        ))

    @cached_property
    def scheduled_review(self) -> Review | None:
        return self.session.scalars(
            sa.select(Review).where(Review.case_id == self.case.id, Review.kind == "scheduled")
        ).first()

    @cached_property
    def round(self) -> EvaluationRound | None:
        return self.session.scalars(
            sa.select(EvaluationRound).where(EvaluationRound.case_id == self.case.id)
        ).first()

    @cached_property
    def assignments(self) -> list[EvaluatorAssignment]:
        if self.round is None:
            return []
        return list(self.session.scalars(
            sa.select(EvaluatorAssignment).where(EvaluatorAssignment.round_id == self.round.id)
        ))

    @cached_property
    def my_assignment(self) -> EvaluatorAssignment | None:
        return next((a for a in self.assignments if a.person_id == self.actor.person_id), None)

    @cached_property
    def nomination(self) -> Nomination | None:
        return self.session.scalars(
            sa.select(Nomination).where(Nomination.case_id == self.case.id)
        ).first()

    @cached_property
    def commendation(self) -> Commendation | None:
        if self.nomination is None:
            return None
        return self.session.get(Commendation, self.nomination.commendation_id)

    @cached_property
    def criterion_codes(self) -> set[str]:
        """Codes of the criteria this case is judged on: its kind's sets and their refinements
        for the case's unit."""
        from service.workflow.effects import CRITERIA_BY_KIND

        base = sa.select(CriteriaSet.id).where(
            CriteriaSet.code.in_(CRITERIA_BY_KIND[self.case.subject_kind]))
        sets = sa.select(CriteriaSet.id).where(sa.or_(
            CriteriaSet.id.in_(base),
            sa.and_(CriteriaSet.refines_id.in_(base),
                    CriteriaSet.organization_id == self.case.organization_id)))
        return set(self.session.scalars(
            sa.select(Criterion.code).where(Criterion.criteria_set_id.in_(sets))))

    @cached_property
    def commended_so_far(self) -> int:
        """How many cases of this case's selection are already commended."""
        if self.nomination is None:
            return 0
        # Lock the selection first: concurrent decisions on other cases of it then count each
        # other's commendations instead of both filling the last place of the quota.
        self.session.execute(sa.select(Commendation.id).where(
            Commendation.id == self.nomination.commendation_id).with_for_update())
        return self.session.scalar(
            sa.select(sa.func.count()).select_from(Nomination)
            .join(Case, Case.id == Nomination.case_id)
            .where(Nomination.commendation_id == self.nomination.commendation_id,
                   Case.status == "commended")) or 0

    @cached_property
    def actor_unit_paths(self) -> list[str]:
        """Paths of the organizations the acting person belongs to or holds a position in."""
        if self.actor.person_id is None:
            return []
        person = self.session.get(Person, self.actor.person_id)
        org_ids = set(self.session.scalars(
            sa.select(Position.organization_id).where(Position.person_id == self.actor.person_id)
        ))
        if person is not None:
            org_ids.add(person.organization_id)
        return list(self.session.scalars(
            sa.select(Organization.path).where(Organization.id.in_(org_ids),
                                               Organization.kind != "campaign_office")
        ))
