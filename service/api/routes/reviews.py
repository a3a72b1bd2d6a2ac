"""Leader reviews (领导点评): record (scheduled or ad hoc), acknowledge, and read them.

Both actions go through ``actions.perform`` and so through the workflow's choke point; reads
are limited to callers who may see the case.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from models import Review
from service.accounts import Principal
from service.api import actions
from service.api.deps import AppClock, CurrentPrincipal, UoW
from service.api.routes.cases import ACTION, READ_PROBLEMS, IdemKey, IfMatch
from service.api.schemas import Out, PathId
from service.visibility import ensure_case_visible
from service.workflow import inputs

router = APIRouter(prefix="/api/v1", tags=["reviews"])


class ReviewOut(Out):
    id: int
    case_id: int
    kind: str
    reviewer_id: int | None
    achievements: str
    problems: str
    direction: str
    ratings: dict[str, Any]
    recorded_at: datetime
    rectification_plan: str | None
    acknowledged_by_id: int | None
    acknowledged_at: datetime | None


def _review_action(uow: UoW, principal: Principal, case_id: int) -> str:
    """The scheduled review while the review stage is open; an ad hoc review otherwise."""
    with uow() as session:
        case = ensure_case_visible(session, principal, case_id)
        return "record_review" if (case.stage, case.status) == ("review", "open") \
            else "record_ad_hoc_review"


@router.post("/cases/{case_id}/reviews", summary="Record a leader's review", **ACTION)
async def record_review(case_id: PathId, body: inputs.RecordReview, request: Request, uow: UoW,
                        clock: AppClock, principal: CurrentPrincipal, if_match: IfMatch = None,
                        idempotency_key: IdemKey = None) -> JSONResponse:
    """A superior records a review: achievements, problems, direction, ratings per criterion.

    While the case is at review/open this is the scheduled review (``record_review``, which
    moves the case to review/recorded); at any later point it is an ad hoc review
    (``record_ad_hoc_review``, the status stays). Nobody reviews their own case."""
    action = await run_in_threadpool(_review_action, uow, principal, case_id)
    return await actions.perform(request, uow, principal, clock, case_id=case_id,
                                 action=action, data=body)


@router.post("/cases/{case_id}/reviews/acknowledge", summary="Acknowledge the scheduled review",
             **ACTION)
async def acknowledge_review(case_id: PathId, body: inputs.AcknowledgeReview, request: Request,
                             uow: UoW, clock: AppClock, principal: CurrentPrincipal,
                             if_match: IfMatch = None, idempotency_key: IdemKey = None
                             ) -> JSONResponse:
    """The subject answers the scheduled review with a rectification plan."""
    return await actions.perform(request, uow, principal, clock, case_id=case_id,
                                 action="acknowledge_review", data=body)


@router.get("/cases/{case_id}/reviews", response_model=list[ReviewOut],
            summary="Reviews of a case", responses=READ_PROBLEMS)
def list_reviews(case_id: PathId, uow: UoW, principal: CurrentPrincipal) -> list[ReviewOut]:
    """Every review of the case, oldest first, for callers who may read the case."""
    with uow() as session:
        ensure_case_visible(session, principal, case_id)
        rows = session.scalars(sa.select(Review).where(Review.case_id == case_id)
                               .order_by(Review.recorded_at, Review.id))
        return [ReviewOut.model_validate(r) for r in rows]
