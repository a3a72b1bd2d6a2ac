"""The public bulletin board (党务公开栏): no sign-in, nothing private.

It shows what the campaign puts up for public supervision: pledges under public notice (with
where to object), pledges published after their notice, evaluation results announced with a
public disclosure scope, shortlists under public notice, and the commended lists once decided.

What it never shows, by construction (each section selects its columns explicitly): drafts or
pledges not yet approved and posted, pledge item owners, results of rounds not disclosed to the
public, ballots or per-option counts, and anything about who filed an objection.
"""

from __future__ import annotations

import math
from datetime import date, datetime

import sqlalchemy as sa
from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from models import (
    Case,
    Commendation,
    Criterion,
    EvaluationRound,
    Nomination,
    Organization,
    Period,
    Person,
    Pledge,
    PledgeItem,
    PublicNotice,
)
from service.api import problems
from service.api.deps import AppClock, UoW
from service.periods import get_period
from service.rules import CampaignRules
from service.tally import disclosable

router = APIRouter(prefix="/api/v1", tags=["bulletin"])

# Pledge-stage statuses before a pledge has finished its notice.
_BEFORE_DONE = ("pending", "drafting", "submitted", "returned", "approved", "under_notice")


class BulletinSubject(BaseModel):
    """Who a case is about: a unit, or a member (with the unit they belong to)."""

    kind: str
    organization_id: int
    unit_name_zh: str
    unit_name_en: str
    member_name: str | None = None


class BulletinItem(BaseModel):
    position: int
    criterion: str | None = Field(description="Criterion code, e.g. political_leadership.")
    target: str
    measures: str
    deadline_on: date | None


class PublishedPledge(BaseModel):
    case_id: int
    period: str
    subject: BulletinSubject
    summary: str
    published_at: datetime | None
    items: list[BulletinItem]


class PledgeUnderNotice(PublishedPledge):
    notice_ends_at: datetime
    days_left: int = Field(description="Whole days until the notice ends (rounded up).")
    objection_url: str


class CriterionRate(BaseModel):
    criterion: str
    satisfaction_rate: float | None


class AnnouncedResult(BaseModel):
    case_id: int
    period: str
    subject: BulletinSubject
    announced_at: datetime
    participation: float | None
    overall_satisfaction: float | None
    criteria: list[CriterionRate]


class Candidate(BaseModel):
    case_id: int
    rank: int | None
    subject: BulletinSubject
    objection_url: str


class ShortlistUnderNotice(BaseModel):
    commendation_id: int
    period: str
    award: str
    quota: int
    notice_ends_at: datetime | None
    days_left: int | None
    candidates: list[Candidate]


class Commended(BaseModel):
    case_id: int
    rank: int | None
    subject: BulletinSubject


class CommendedList(BaseModel):
    commendation_id: int
    period: str
    award: str
    decided_at: datetime | None
    commended: list[Commended]


class Bulletin(BaseModel):
    pledges_under_notice: list[PledgeUnderNotice]
    published_pledges: list[PublishedPledge]
    announced_results: list[AnnouncedResult]
    shortlists_under_notice: list[ShortlistUnderNotice]
    commended: list[CommendedList]


def days_left(ends_at: datetime, now: datetime) -> int:
    """Whole days left until ``ends_at``, rounded up; 0 once it has passed."""
    return max(math.ceil((ends_at - now).total_seconds() / 86400), 0)


def objection_url(case_id: int) -> str:
    """Where anyone may object to a case under public notice."""
    return f"/api/v1/cases/{case_id}/objections"


@router.get("/bulletin", response_model=Bulletin, summary="The public bulletin board",
            responses=problems.responses(404))
def bulletin(uow: UoW, clock: AppClock,
             period: str | None = Query(None, max_length=32, description="Period code.")
             ) -> Bulletin:
    """Everything under public notice or published, optionally for one period."""
    now = clock.now()
    with uow() as session:
        period_id = get_period(session, period).id if period is not None else None
        codes = dict(session.execute(sa.select(Period.id, Period.code)).all())
        notices = _pledges(session, period_id, under_notice=True)
        published = _pledges(session, period_id, under_notice=False)
        results = _results(session, period_id)
        selections = list(session.scalars(_in_period(
            sa.select(Commendation).where(Commendation.status.in_(("under_notice", "decided"))),
            Commendation.period_id, period_id).order_by(Commendation.period_id,
                                                        Commendation.id)))
        nominations = _nominations(session, [c.id for c in selections])
        subjects = _subjects(session, {case.id for case, *_ in (*notices, *published)} |
                             {case.id for case, _ in results} |
                             {n.case_id for _, n in nominations})
        items = _items(session, [pledge.id for _, pledge, *_ in (*notices, *published)])
        shortlist_ends = _shortlist_ends(session, [c.id for c in selections])

        def pledge_fields(case: Case, pledge: Pledge) -> dict:
            return dict(case_id=case.id, period=codes[case.period_id],
                        subject=subjects[case.id], summary=pledge.summary,
                        published_at=pledge.published_at, items=items.get(pledge.id, []))

        minimums: dict[int, int] = {}
        return Bulletin(
            pledges_under_notice=[PledgeUnderNotice(
                **pledge_fields(case, pledge), notice_ends_at=ends_at,
                days_left=days_left(ends_at, now), objection_url=objection_url(case.id))
                for case, pledge, ends_at in notices],
            published_pledges=[PublishedPledge(**pledge_fields(case, pledge))
                               for case, pledge, _ in published],
            announced_results=[_result(case, round_, codes, subjects,
                                       _min_ballots(session, case.period_id, minimums))
                               for case, round_ in results],
            shortlists_under_notice=[
                _shortlist(c, codes, nominations, subjects, shortlist_ends.get(c.id), now)
                for c in selections if c.status == "under_notice"],
            commended=[_commended(c, codes, nominations, subjects)
                       for c in selections if c.status == "decided"],
        )


def _shortlist(c: Commendation, codes: dict[int, str], nominations: list[tuple[int, _Nomination]],
               subjects: dict[int, BulletinSubject], ends_at: datetime | None, now: datetime
               ) -> ShortlistUnderNotice:
    """A shortlist under notice: the shortlisted candidates by rank, and where to object."""
    return ShortlistUnderNotice(
        commendation_id=c.id, period=codes[c.period_id], award=c.award, quota=c.quota,
        notice_ends_at=ends_at, days_left=days_left(ends_at, now) if ends_at else None,
        candidates=[Candidate(case_id=n.case_id, rank=n.rank, subject=subjects[n.case_id],
                              objection_url=objection_url(n.case_id))
                    for sel_id, n in nominations if sel_id == c.id and n.shortlisted])


def _commended(c: Commendation, codes: dict[int, str], nominations: list[tuple[int, _Nomination]],
               subjects: dict[int, BulletinSubject]) -> CommendedList:
    """A decided selection: who was commended, by rank."""
    return CommendedList(
        commendation_id=c.id, period=codes[c.period_id], award=c.award,
        decided_at=c.decided_at,
        commended=[Commended(case_id=n.case_id, rank=n.rank, subject=subjects[n.case_id])
                   for sel_id, n in nominations
                   if sel_id == c.id and n.case_status == "commended"])


def _shortlist_ends(session: Session, selection_ids: list[int]) -> dict[int, datetime]:
    """When the open shortlist notice of each selection ends."""
    if not selection_ids:
        return {}
    return dict(session.execute(
        sa.select(PublicNotice.commendation_id, sa.func.max(PublicNotice.ends_at))
        .where(PublicNotice.subject == "shortlist", PublicNotice.status == "open",
               PublicNotice.commendation_id.in_(selection_ids))
        .group_by(PublicNotice.commendation_id)).all())


def _in_period(query: sa.Select, column: sa.ColumnElement, period_id: int | None) -> sa.Select:
    return query if period_id is None else query.where(column == period_id)


def _pledges(session: Session, period_id: int | None, *, under_notice: bool
             ) -> list[tuple[Case, Pledge, datetime | None]]:
    """Pledges under an open notice now, or published pledges whose notice has closed."""
    if under_notice:
        query = (sa.select(Case, Pledge, PublicNotice.ends_at)
                 .join(Pledge, Pledge.case_id == Case.id)
                 .join(PublicNotice, sa.and_(PublicNotice.case_id == Case.id,
                                             PublicNotice.subject == "pledge",
                                             PublicNotice.status == "open"))
                 .where(Case.stage == "pledge", Case.status == "under_notice",
                        Pledge.published_at.is_not(None)))
    else:
        closed_notice = sa.exists().where(PublicNotice.case_id == Case.id,
                                          PublicNotice.subject == "pledge",
                                          PublicNotice.status == "closed")
        query = (sa.select(Case, Pledge, sa.null())
                 .join(Pledge, Pledge.case_id == Case.id)
                 .where(Pledge.published_at.is_not(None), closed_notice,
                        sa.not_(sa.and_(Case.stage == "pledge",
                                        Case.status.in_(_BEFORE_DONE)))))
    query = _in_period(query, Case.period_id, period_id).order_by(Case.period_id, Case.id)
    return [tuple(row) for row in session.execute(query).all()]  # type: ignore[misc]


def _items(session: Session, pledge_ids: list[int]) -> dict[int, list[BulletinItem]]:
    """Public fields of the items of these pledges (never owners or fulfilment evidence)."""
    out: dict[int, list[BulletinItem]] = {}
    if not pledge_ids:
        return out
    rows = session.execute(
        sa.select(PledgeItem.pledge_id, PledgeItem.position, Criterion.code, PledgeItem.target,
                  PledgeItem.measures, PledgeItem.deadline_on)
        .outerjoin(Criterion, Criterion.id == PledgeItem.criterion_id)
        .where(PledgeItem.pledge_id.in_(pledge_ids))
        .order_by(PledgeItem.pledge_id, PledgeItem.position, PledgeItem.id))
    for pledge_id, position, code, target, measures, deadline_on in rows:
        out.setdefault(pledge_id, []).append(BulletinItem(
            position=position, criterion=code, target=target, measures=measures,
            deadline_on=deadline_on))
    return out


def _results(session: Session, period_id: int | None) -> list[tuple[Case, EvaluationRound]]:
    query = (sa.select(Case, EvaluationRound)
             .join(EvaluationRound, EvaluationRound.case_id == Case.id)
             .where(EvaluationRound.announced_at.is_not(None),
                    EvaluationRound.disclosure_scope == "public"))
    query = _in_period(query, Case.period_id, period_id).order_by(Case.period_id, Case.id)
    return [tuple(row) for row in session.execute(query).all()]  # type: ignore[misc]


def _min_ballots(session: Session, period_id: int, cache: dict[int, int]) -> int:
    if period_id not in cache:
        rules = session.get(Period, period_id).rules or {}  # type: ignore[union-attr]
        cache[period_id] = CampaignRules.model_validate(rules).min_ballots_to_disclose
    return cache[period_id]


def _result(case: Case, round_: EvaluationRound, codes: dict[int, str],
            subjects: dict[int, BulletinSubject], min_ballots: int) -> AnnouncedResult:
    """Rates only: never ballots, nor per-option counts — and not even rates for rounds too
    small to keep votes secret."""
    tally = disclosable(round_.tally, min_ballots) or {}
    return AnnouncedResult(
        case_id=case.id, period=codes[case.period_id], subject=subjects[case.id],
        announced_at=round_.announced_at, participation=tally.get("participation"),
        overall_satisfaction=tally.get("overall_satisfaction"),
        criteria=[CriterionRate(criterion=c.get("criterion"),
                                satisfaction_rate=c.get("satisfaction_rate"))
                  for c in tally.get("criteria", [])])


class _Nomination(BaseModel):
    case_id: int
    rank: int | None
    shortlisted: bool
    case_status: str


def _nominations(session: Session, selection_ids: list[int]) -> list[tuple[int, _Nomination]]:
    if not selection_ids:
        return []
    rows = session.execute(
        sa.select(Nomination.commendation_id, Nomination.case_id, Nomination.rank,
                  Nomination.shortlisted, Case.status)
        .join(Case, Case.id == Nomination.case_id)
        .where(Nomination.commendation_id.in_(selection_ids))
        .order_by(Nomination.commendation_id, Nomination.rank.is_(None), Nomination.rank,
                  Nomination.case_id))
    return [(sel_id, _Nomination(case_id=case_id, rank=rank, shortlisted=shortlisted,
                                 case_status=status))
            for sel_id, case_id, rank, shortlisted, status in rows]


def _subjects(session: Session, case_ids: set[int]) -> dict[int, BulletinSubject]:
    """Public names of the subjects of these cases (unit names; a member's name)."""
    if not case_ids:
        return {}
    rows = session.execute(
        sa.select(Case.id, Case.subject_kind, Organization.id, Organization.name_zh,
                  Organization.name_en, Person.name)
        .join(Organization, Organization.id == Case.organization_id)
        .outerjoin(Person, Person.id == Case.person_id)
        .where(Case.id.in_(sorted(case_ids))))
    return {case_id: BulletinSubject(kind=kind, organization_id=org_id, unit_name_zh=zh,
                                     unit_name_en=en,
                                     member_name=name if kind == "member" else None)
            for case_id, kind, org_id, zh, en, name in rows}
