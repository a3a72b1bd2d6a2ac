"""The read side of selection and commendation, shared by the JSON API and the office desk.

``awards_of`` answers, per award of a period: quota, shortlist size, status, the shortlist's
public notice and the candidates. ``full`` (the campaign office, auditors and flows) gives every
candidate ranked with eligibility reasons (zh/en), satisfaction, shortlist place and adjustment
rationale; otherwise only shortlists already posted, and only the shortlisted names.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.orm import Session

from models import Case, Commendation, Nomination, Organization, Period, Person, PublicNotice

__all__ = ["ShortlistEntry", "ReasonOut", "NominationOut", "NoticeOut", "notice_of",
           "nominations_of", "awards_of"]


class ShortlistEntry(BaseModel):
    """A candidate as anyone signed in sees it once the shortlist is under notice."""

    nomination_id: int
    case_id: int
    subject_kind: str
    organization_id: int
    person_id: int | None
    name: str
    shortlisted: bool


class ReasonOut(BaseModel):
    code: str
    en: str
    zh: str


class NominationOut(ShortlistEntry):
    """A candidate with everything the office weighs (office, auditors and flows only)."""

    stage: str
    status: str
    eligible: bool
    rank: int | None
    satisfaction: float | None
    reasons: list[ReasonOut]
    rationale: str | None


class NoticeOut(BaseModel):
    id: int
    starts_at: datetime
    ends_at: datetime
    status: str


def notice_of(session: Session, commendation_id: int) -> NoticeOut | None:
    """The newest public notice of a selection's shortlist, if it was ever posted."""
    row = session.scalars(sa.select(PublicNotice).where(
        PublicNotice.commendation_id == commendation_id)
        .order_by(PublicNotice.starts_at.desc(), PublicNotice.id.desc())).first()
    return None if row is None else NoticeOut(id=row.id, starts_at=row.starts_at,
                                              ends_at=row.ends_at, status=row.status)


def nominations_of(session: Session, commendation_id: int, full: bool) -> list[dict[str, Any]]:
    """The candidates of one selection, best-ranked first (JSON-ready dicts)."""
    rows = session.execute(
        sa.select(Nomination, Case, Organization.name_zh, Person.name)
        .join(Case, Case.id == Nomination.case_id)
        .join(Organization, Organization.id == Case.organization_id)
        .outerjoin(Person, Person.id == Case.person_id)
        .where(Nomination.commendation_id == commendation_id)
        .order_by(Nomination.rank.is_(None), Nomination.rank, Nomination.case_id)).all()
    out = []
    for n, case, org_name, person_name in rows:
        entry = dict(nomination_id=n.id, case_id=case.id, subject_kind=case.subject_kind,
                     organization_id=case.organization_id, person_id=case.person_id,
                     name=person_name or org_name, shortlisted=n.shortlisted)
        if full:
            out.append(NominationOut(
                **entry, stage=case.stage, status=case.status, eligible=n.eligible,
                rank=n.rank, satisfaction=n.satisfaction, rationale=n.adjustment_rationale,
                reasons=[ReasonOut(**r) for r in n.reasons or []]).model_dump(mode="json"))
        elif n.shortlisted:
            out.append(ShortlistEntry(**entry).model_dump(mode="json"))
    return out


def awards_of(session: Session, period: Period, full: bool) -> list[dict[str, Any]]:
    """Every award's selection in a period, by award code (JSON-ready dicts)."""
    query = sa.select(Commendation).where(Commendation.period_id == period.id)
    if not full:
        query = query.where(Commendation.status != "selected")
    awards = []
    for c in session.scalars(query.order_by(Commendation.award)):
        notice = notice_of(session, c.id)
        awards.append({
            "id": c.id, "period": period.code, "award": c.award, "status": c.status,
            "pool_size": c.pool_size, "quota": c.quota, "shortlist_size": c.shortlist_size,
            "selected_at": c.selected_at.isoformat(),
            "decided_at": c.decided_at.isoformat() if c.decided_at else None,
            "notice": notice.model_dump(mode="json") if notice else None,
            "nominations": nominations_of(session, c.id, full)})
    return awards
