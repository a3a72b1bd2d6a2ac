"""Selection and commendation (评选表彰): candidates with their reasons, adjustments, the
shortlist's public notice and the decisions.

Selecting and posting a shortlist are period-wide operations (``service.commendation``), for
campaign-office admins and flows only. Adjusting and deciding are case actions through the
choke point, where recusal is enforced: nobody decides on their own unit or enterprise.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from models import Case, Commendation, Nomination
from service import commendation as selection_service
from service.accounts import Principal, Unauthenticated
from service.api import actions, problems
from service.api.deps import AppClock, CurrentPrincipal, UoW
from service.api.routes.bulk import require_operator
from service.api.routes.cases import ACTION, IdemKey, IfMatch
from service.api.schemas import PathId, PeriodCode
from service.clock import Clock
from service.commendation_view import NominationOut, NoticeOut
from service.commendation_view import awards_of as _awards
from service.errors import NotFound
from service.periods import get_period
from service.rules import CampaignRules
from service.visibility import case_filter, sees_everything
from service.workflow import inputs
from service.workflow.engine import Outcome
from service.workflow.roles import Actor

router = APIRouter(prefix="/api/v1", tags=["commendations"])


class AwardOut(BaseModel):
    id: int
    period: str
    award: str
    status: str
    pool_size: int
    quota: int
    shortlist_size: int
    selected_at: datetime
    decided_at: datetime | None
    notice: NoticeOut | None
    nominations: list[NominationOut] = Field(
        description="Ranked; for callers other than the office, auditors and flows only the "
                    "shortlist, without ranks, satisfaction or reasons.")


@router.get("/periods/{code}/commendations", response_model=list[AwardOut],
            summary="A period's selections: quotas, shortlists, ranked candidates",
            responses=problems.responses(404))
def list_commendations(code: PeriodCode, uow: UoW, principal: CurrentPrincipal) -> JSONResponse:
    """Per award: quota, shortlist size, status, notice and the candidates.

    The campaign office, auditors and flows see every candidate ranked, with eligibility
    reasons (zh/en), satisfaction, shortlist place and adjustment rationale. Anyone else
    signed in sees, once a shortlist is under public notice, the shortlisted names only."""
    with uow() as session:
        full = sees_everything(session, principal)
        if not full and principal.person_id is None:
            raise Unauthenticated("sign in, or send a bearer token")
        return JSONResponse(_awards(session, get_period(session, code), full))


@router.post("/periods/{code}/commendations/select", response_model=list[AwardOut],
             summary="Run the selection for a period (campaign office, flows)",
             responses={**problems.responses(403, 404, 409), 201: {
                 "description": "A selection was made now (200: nothing new to select)",
                 "model": list[AwardOut]}})
def select_candidates(code: PeriodCode, uow: UoW, clock: AppClock,
                      principal: CurrentPrincipal) -> JSONResponse:
    """Rank every case that finished evaluation, store each award's shortlist and move the
    cases to commendation/considered. Idempotent: an award already selected is left as it is,
    and a second call answers 200 with the existing selections (201 when one was made now)."""
    with uow() as session:
        require_operator(session, principal, "run the selection")
        period = get_period(session, code, lock=True)
        made = selection_service.run_selection(
            session, period.id, CampaignRules.model_validate(period.rules or {}),
            actor=principal.actor, clock=clock)
        body = _awards(session, period, full=True)
    return JSONResponse(body, status_code=201 if made else 200)


class NoticePosted(BaseModel):
    commendation_id: int
    status: str
    notice: NoticeOut
    cases: int


@router.post("/commendations/{commendation_id}/notice", response_model=NoticePosted,
             summary="Put a shortlist under public notice (campaign office, flows)",
             responses=problems.responses(403, 404, 409))
def post_notice(commendation_id: PathId, uow: UoW, clock: AppClock,
                principal: CurrentPrincipal) -> NoticePosted:
    """Post the shortlist on the bulletin board for the notice window; every case of the
    selection moves to commendation/under_notice and may be objected to. Once only."""
    with uow() as session:
        require_operator(session, principal, "post shortlists")
        selection = session.scalars(
            sa.select(Commendation).where(Commendation.id == commendation_id)
            .with_for_update().execution_options(populate_existing=True)).first()
        if selection is None:
            raise NotFound(f"commendation {commendation_id} not found")
        rules = CampaignRules.model_validate(selection.rules or {})
        notice = selection_service.open_shortlist_notice(
            session, selection, actor=principal.actor, clock=clock,
            notice_days=rules.notice_days)
        cases = session.scalar(sa.select(sa.func.count()).select_from(Nomination)
                               .where(Nomination.commendation_id == selection.id)) or 0
        return NoticePosted(commendation_id=selection.id, status=selection.status, cases=cases,
                            notice=NoticeOut(id=notice.id, starts_at=notice.starts_at,
                                             ends_at=notice.ends_at, status=notice.status))


def _nomination_of(uow: UoW, principal: Principal, nomination_id: int) -> tuple[int, int]:
    """(case id, commendation id) of a nomination the caller may read; NotFound otherwise."""
    with uow() as session:
        row = session.execute(
            sa.select(Nomination.case_id, Nomination.commendation_id)
            .join(Case, Case.id == Nomination.case_id)
            .where(Nomination.id == nomination_id, case_filter(session, principal))).first()
    if row is None:
        raise NotFound(f"nomination {nomination_id} not found")
    return row[0], row[1]


@router.post("/nominations/{nomination_id}/adjust", summary="Move a candidate on or off the "
             "shortlist, with a rationale (campaign office)", **ACTION)
async def adjust(nomination_id: PathId, body: inputs.AdjustNomination, request: Request, uow: UoW,
                 clock: AppClock, principal: CurrentPrincipal, if_match: IfMatch = None,
                 idempotency_key: IdemKey = None) -> JSONResponse:
    """The office adjusts the computed shortlist; the rationale is recorded in the history.
    Nobody adjusts a nomination from their own unit or enterprise. If-Match refers to the
    nomination's case."""
    case_id, _ = await run_in_threadpool(_nomination_of, uow, principal, nomination_id)
    return await actions.perform(request, uow, principal, clock, case_id=case_id,
                                 action="adjust_nomination", data=body)


class DecideIn(BaseModel):
    """Commend or not; a comment (why) is recorded with the decision."""

    model_config = ConfigDict(extra="forbid")

    commend: bool
    comment: str | None = Field(default=None, max_length=4000)


def _finish_selection(commendation_id: int, actor: Actor, clock: Clock) -> actions.After:
    """Once the last case of the selection is decided, mark it decided (same transaction)."""
    def after(session: Session, _outcome: Outcome) -> None:
        selection = session.scalars(
            sa.select(Commendation).where(Commendation.id == commendation_id)
            .with_for_update().execution_options(populate_existing=True)).one()
        selection_service.finish_if_decided(session, selection, actor=actor, clock=clock)

    return after


@router.post("/nominations/{nomination_id}/decide",
             summary="Decide on a shortlisted candidate (campaign office)", **ACTION)
async def decide(nomination_id: PathId, body: DecideIn, request: Request, uow: UoW,
                 clock: AppClock, principal: CurrentPrincipal, if_match: IfMatch = None,
                 idempotency_key: IdemKey = None) -> JSONResponse:
    """After the notice window, with every objection resolved: commend (shortlisted only,
    within the quota) or not. A decider from the candidate's own unit or enterprise is
    refused (``recusal``). The selection is marked decided with its last case."""
    case_id, commendation_id = await run_in_threadpool(_nomination_of, uow, principal,
                                                       nomination_id)
    return await actions.perform(
        request, uow, principal, clock, case_id=case_id, action="decide", comment=body.comment,
        data=inputs.Decide(commend=body.commend),
        after=_finish_selection(commendation_id, principal.actor, clock))
