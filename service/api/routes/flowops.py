"""What the scheduled flows read and ask for: case states in bulk, a period's awards, the
office's hand-off, reminders and the outbox sweep. For flows and campaign-office admins only.

Reads are compact and paged (up to 1000 cases a page) and carry the service's own ``now``, so
a flow decides on the same clock the guards judge by. Rounds are described by counts — how
many were assigned and how many voted — never by who voted what.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from models import (
    Case,
    Commendation,
    EvaluationRound,
    EvaluatorAssignment,
    Objection,
    Period,
    PublicNotice,
)
from notifications import sweep as outbox_sweep
from service import reminders
from service.api import problems
from service.api.deps import AppClock, CurrentPrincipal, UoW
from service.api.routes.bulk import require_operator
from service.api.schemas import PathId, PeriodCode
from service.clock import local_date
from service.errors import NotFound
from service.periods import get_period
from service.workflow.inputs import MAX_ID, Day

router = APIRouter(prefix="/api/v1", tags=["flows"])


class RoundState(BaseModel):
    closes_at: datetime
    extended: bool
    assigned: int
    voted: int
    quorum: float
    status: str


class CaseState(BaseModel):
    id: int
    subject_kind: str
    stage: str
    status: str
    version: int
    due_at: datetime | None
    open_objection: bool
    round: RoundState | None = None


class CaseStatePage(BaseModel):
    now: datetime = Field(description="The service's clock: decide on it, not on your own.")
    period: str
    items: list[CaseState]
    next_after: int | None = None


class CaseStateOne(CaseState):
    now: datetime
    period: str


def _states(session: Session, cases: list[Case]) -> list[CaseState]:
    ids = [c.id for c in cases]
    rounds: dict[int, RoundState] = {}
    objections: set[int] = set()
    if ids:
        assigned = sa.func.count(EvaluatorAssignment.id)
        voted = sa.func.count(EvaluatorAssignment.voted_at)
        for row in session.execute(
                sa.select(EvaluationRound.case_id, EvaluationRound.closes_at,
                          EvaluationRound.extended, EvaluationRound.quorum,
                          EvaluationRound.status, assigned, voted)
                .outerjoin(EvaluatorAssignment,
                           EvaluatorAssignment.round_id == EvaluationRound.id)
                .where(EvaluationRound.case_id.in_(ids)).group_by(EvaluationRound.id)):
            rounds[row[0]] = RoundState(closes_at=row[1], extended=row[2], quorum=row[3],
                                        status=row[4], assigned=row[5], voted=row[6])
        objections = set(session.scalars(sa.select(Objection.case_id).where(
            Objection.case_id.in_(ids), Objection.status == "open").distinct()))
    return [CaseState(id=c.id, subject_kind=c.subject_kind, stage=c.stage, status=c.status,
                      version=c.version, due_at=c.due_at, open_objection=c.id in objections,
                      round=rounds.get(c.id)) for c in cases]


@router.get("/periods/{code}/case-states", response_model=CaseStatePage,
            summary="Every case of a period, compactly, with its round's counts (flows)",
            responses=problems.responses(403, 404))
def case_states(code: PeriodCode, uow: UoW, clock: AppClock, principal: CurrentPrincipal,
                after: int = Query(0, ge=0, le=MAX_ID,
                                   description="Cases with id greater than this."),
                limit: int = Query(500, ge=1, le=1000)) -> CaseStatePage:
    """Stage, status, version, deadline, whether an objection is open and, for cases with an
    evaluation round, its deadline, extension, assigned and voted counts and quorum."""
    with uow() as session:
        require_operator(session, principal, "read case states")
        period = get_period(session, code)
        rows = list(session.scalars(sa.select(Case).where(
            Case.period_id == period.id, Case.id > after).order_by(Case.id).limit(limit + 1)))
        more = len(rows) > limit
        rows = rows[:limit]
        return CaseStatePage(now=clock.now(), period=period.code, items=_states(session, rows),
                             next_after=rows[-1].id if more else None)


@router.get("/cases/{case_id}/state", response_model=CaseStateOne,
            summary="One case, compactly, with its round's counts (flows)",
            responses=problems.responses(403, 404))
def case_state(case_id: PathId, uow: UoW, clock: AppClock,
               principal: CurrentPrincipal) -> CaseStateOne:
    with uow() as session:
        require_operator(session, principal, "read case states")
        row = session.execute(sa.select(Case, Period.code).join(
            Period, Period.id == Case.period_id).where(Case.id == case_id)).first()
        if row is None:
            raise NotFound(f"case {case_id} not found")
        state = _states(session, [row[0]])[0]
        return CaseStateOne(**state.model_dump(), now=clock.now(), period=row[1])


class AwardState(BaseModel):
    commendation_id: int
    award: str
    status: str
    quota: int
    shortlist_size: int
    notice_ends_at: datetime | None
    handed_off: bool = Field(description="The office was told that its decisions are due.")


class AwardStates(BaseModel):
    now: datetime
    period: str
    awards: list[AwardState]


@router.get("/periods/{code}/awards", response_model=AwardStates,
            summary="A period's selections in brief: status, notice, hand-off (flows)",
            responses=problems.responses(403, 404))
def award_states(code: PeriodCode, uow: UoW, clock: AppClock,
                 principal: CurrentPrincipal) -> AwardStates:
    with uow() as session:
        require_operator(session, principal, "read award states")
        period = get_period(session, code)
        done = reminders.handed_off(session, period.id)
        notice_end = (sa.select(sa.func.max(PublicNotice.ends_at))
                      .where(PublicNotice.commendation_id == Commendation.id)
                      .correlate(Commendation).scalar_subquery())
        rows = session.execute(sa.select(Commendation, notice_end).where(
            Commendation.period_id == period.id).order_by(Commendation.id)).all()
        awards = [AwardState(commendation_id=c.id, award=c.award, status=c.status,
                             quota=c.quota, shortlist_size=c.shortlist_size,
                             notice_ends_at=_aware(ends), handed_off=c.id in done)
                  for c, ends in rows]
        return AwardStates(now=clock.now(), period=period.code, awards=awards)


def _aware(value: datetime | None) -> datetime | None:
    """An aggregate loses the column type (SQLite gives naive UTC): make it aware again."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


class HandOffResult(BaseModel):
    commendation_id: int
    award: str
    status: str
    result: str = Field(description="handed_off | already_handed_off | not_due")
    cases: int | None = None
    notified: int | None = None


@router.post("/periods/{code}/commendations/hand-off", response_model=list[HandOffResult],
             response_model_exclude_none=True,
             summary="Tell the campaign office its commendation decisions are due (flows)",
             responses=problems.responses(403, 404))
def hand_off(code: PeriodCode, uow: UoW, clock: AppClock,
             principal: CurrentPrincipal) -> list[HandOffResult]:
    """For each award whose shortlist notice has ended: one email to every campaign-office
    admin listing the cases to decide, and an event in the history. Once per award: a second
    call answers ``already_handed_off`` and writes nothing."""
    with uow() as session:
        require_operator(session, principal, "hand decisions to the office")
        period = get_period(session, code, lock=True)
        return [HandOffResult(**r) for r in reminders.hand_off_decisions(
            session, period, actor=principal.actor, clock=clock)]


AsOf = Annotated[Day | None, Query(description="The day (campaign time zone); default today.")]


class ReminderRun(BaseModel):
    as_of: date
    periods: list[str]
    reminded_cases: int
    escalated_cases: int
    reminder_recipients: int
    escalation_recipients: int
    items_added: int


@router.post("/reminders/run", response_model=ReminderRun,
             summary="Queue the day's reminders and escalations, batched per recipient (flows)",
             responses=problems.responses(403, 404))
def run_reminders(uow: UoW, clock: AppClock, principal: CurrentPrincipal,
                  as_of: AsOf = None,
                  period: str | None = Query(None, max_length=32, description="One period; "
                                             "default every open period.")) -> ReminderRun:
    """Reminders before deadlines (``reminder_days_before``) to whoever must act, escalations
    after them (``escalation_days_after``) to the superior of whoever must act: one email per
    recipient per day listing every case. Running it again the same day adds nothing."""
    now = clock.now()
    with uow() as session:
        require_operator(session, principal, "run reminders")
        periods = [get_period(session, period)] if period else list(session.scalars(
            sa.select(Period).where(Period.status == "open").order_by(Period.sequence)))
        report = reminders.run_reminders(session, periods, today=as_of or local_date(now),
                                         now=now)
        return ReminderRun(**report.as_dict(), periods=[p.code for p in periods])


class SweepOut(BaseModel):
    stuck_requeued: int
    dead_requeued: int
    pending_due: int


@router.post("/notifications/sweep", response_model=SweepOut,
             summary="Re-drive stuck (and on request dead) outbox rows (flows)",
             responses=problems.responses(403))
def sweep_notifications(uow: UoW, clock: AppClock, principal: CurrentPrincipal,
                        dead: bool = Query(False, description="Also re-drive dead rows.")
                        ) -> SweepOut:
    with uow() as session:
        require_operator(session, principal, "sweep the outbox")
        return SweepOut(**outbox_sweep.sweep(session, now=clock.now(), dead=dead).as_dict())
