"""Batch operations for flows and the campaign office: one request per batch, never per case.

``POST /bulk/actions`` applies one machine action to many cases in one transaction, each case in
its own SAVEPOINT, so one refusal undoes only that case. Opening a period and rolling it over
are period-wide services. Nothing here waits on the network while its transaction is open:
notifications leave through the outbox after commit.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models import Organization, Position
from service import periods
from service.accounts import Principal, Unauthenticated
from service.api import problems
from service.api.deps import AppClock, CurrentPrincipal, UoW
from service.api.schemas import PeriodCode
from service.clock import Clock
from service.errors import Forbidden, InvalidInput, PledgeflowError, Reason
from service.workflow import engine
from service.workflow.inputs import DbId
from service.workflow.table import TRANSITIONS

__all__ = ["router", "require_operator"]

router = APIRouter(prefix="/api/v1", tags=["bulk"])

# Period-wide selection steps: they need the selection's rows, so they run only through
# service.commendation (POST /periods/{code}/commendations/select, /commendations/{id}/notice).
SELECTION_ACTIONS = frozenset({"nominate", "open_shortlist_notice"})
MAX_BATCH = 1000


def is_office_admin(session: Session, person_id: int) -> bool:
    """An admin of the campaign office (auditors read everything but act on nothing)."""
    return session.scalar(
        sa.select(Position.id).join(Organization, Organization.id == Position.organization_id)
        .where(Position.person_id == person_id, Position.role == "admin",
               Organization.kind == "campaign_office").limit(1)) is not None


def require_operator(session: Session, principal: Principal, what: str) -> None:
    """Campaign-wide operations are for flows and campaign-office admins; deny the rest."""
    if principal.flow:
        return
    if principal.person_id is None:
        raise Unauthenticated("sign in, or send a bearer token")
    if not is_office_admin(session, principal.person_id):
        raise Forbidden(f"only campaign-office admins and flows may {what}")


class BulkActionIn(BaseModel):
    """One machine action for many cases."""

    model_config = ConfigDict(extra="forbid")

    action: str = Field(min_length=1, max_length=64, examples=["open_pledge"])
    case_ids: list[DbId] = Field(min_length=1, max_length=MAX_BATCH)
    comment: str | None = Field(default=None, max_length=4000)


class CaseResult(BaseModel):
    case_id: int
    ok: bool
    version: int | None = None
    to: dict[str, str] | None = None
    event_seq: int | None = None
    problem: str | None = None
    reasons: list[dict[str, str]] | None = None


class BulkResult(BaseModel):
    action: str
    succeeded: int
    refused: int
    results: list[CaseResult]


def check_bulk_action(action: str) -> None:
    """Only machine actions (flows may take them) that need no input can run in bulk."""
    rows = [t for t in TRANSITIONS if t.action == action]
    if not rows:
        raise InvalidInput("unknown action", [Reason("unknown_action",
                                                     f"no action {action!r} in the table")])
    reasons = []
    if any(t.input is not None for t in rows):
        reasons.append(Reason("action_needs_input",
                              f"{action!r} takes input; use its own endpoint per case"))
    if action in SELECTION_ACTIONS:
        reasons.append(Reason("selection_action", f"{action!r} is part of the period-wide "
                              "selection; use the commendation endpoints"))
    if not all("flow" in t.roles for t in rows):
        reasons.append(Reason("not_a_machine_action",
                              f"{action!r} is a person's decision, taken case by case"))
    if reasons:
        raise InvalidInput(f"{action!r} cannot run in bulk", reasons)


def _apply_one(session: Session, case_id: int, action: str, actor: Any, clock: Clock,
               comment: str | None) -> CaseResult:
    """One case in its own SAVEPOINT: a refusal rolls back this case only."""
    try:
        with session.begin_nested():
            outcome = engine.apply(session, case_id=case_id, action=action, actor=actor,
                                   clock=clock, comment=comment)
    except PledgeflowError as exc:
        reasons = [r.as_dict() for r in exc.reasons] or [
            {"code": exc.type_slug, "message": exc.message}]
        return CaseResult(case_id=case_id, ok=False, problem=exc.type_slug, reasons=reasons)
    except IntegrityError:
        return CaseResult(case_id=case_id, ok=False, problem="conflict", reasons=[{
            "code": "conflict", "message": "changed concurrently; retry this case"}])
    return CaseResult(case_id=case_id, ok=True, version=outcome.version,
                      to={"stage": outcome.to_state[0], "status": outcome.to_state[1]},
                      event_seq=outcome.event_seq)


@router.post("/bulk/actions", response_model=BulkResult, response_model_exclude_none=True,
             summary="Apply one machine action to many cases (flows, campaign office)",
             responses=problems.responses(403, 422))
def bulk_action(body: BulkActionIn, request: Request, uow: UoW, clock: AppClock,
                principal: CurrentPrincipal) -> BulkResult:
    """Apply ``action`` to up to 1000 cases in one request and one transaction.

    Each case runs through the choke point in its own SAVEPOINT and gets its own result
    (``ok`` with the new version, or the refusal's reasons); one refusal does not undo the
    others. Cases are taken in ascending id order (so concurrent batches lock rows in the same
    order) and answered in that order; repeated ids count once. Only machine actions that need
    no input are allowed (e.g. ``open_pledge``, ``publish``, ``close_notice``, ``open_review``,
    ``open_evaluation``, ``close_round``, ``announce_results``, ``lapse``); others are 422.
    Re-sending a batch is safe: what was done is refused as no longer possible."""
    actor = principal.actor
    with uow() as session:
        require_operator(session, principal, "run bulk actions")
        check_bulk_action(body.action)
        results = [_apply_one(session, case_id, body.action, actor, clock, body.comment)
                   for case_id in sorted(set(body.case_ids))]
    done = sum(r.ok for r in results)
    if done:
        request.app.state.metrics.transitions.labels(action=body.action).inc(done)
    return BulkResult(action=body.action, succeeded=done, refused=len(results) - done,
                      results=results)


class PeriodOpened(BaseModel):
    period: str
    status: str
    cases_opened: int


@router.post("/periods/{code}/open", response_model=PeriodOpened,
             summary="Open a period: a case for every unit and member (flows, office)",
             responses=problems.responses(403, 404, 409))
def open_period(code: PeriodCode, uow: UoW, clock: AppClock,
                principal: CurrentPrincipal) -> PeriodOpened:
    """Open a planned period with a case for every active unit and Party member and tell
    everyone concerned. Idempotent: subjects that already have a case are skipped."""
    with uow() as session:
        require_operator(session, principal, "open periods")
        period = periods.get_period(session, code, lock=True)
        opened = periods.open_period(session, period, actor=principal.actor, clock=clock)
        return PeriodOpened(period=period.code, status=period.status, cases_opened=opened)


class RolloverOut(BaseModel):
    closed_period: str | None
    lapsed: int
    opened_period: str | None
    cases_opened: int


@router.post("/periods/{code}/rollover", response_model=RolloverOut,
             summary="Roll an ended period over to the next (flows, office)",
             responses=problems.responses(403, 404, 409))
def roll_over(code: PeriodCode, uow: UoW, clock: AppClock,
              principal: CurrentPrincipal) -> RolloverOut:
    """Lapse what is unfinished, close the period and open the next one, carrying unfinished
    pledge items over. Idempotent: a second run reports zeros and changes nothing."""
    with uow() as session:
        require_operator(session, principal, "roll periods over")
        report = periods.roll_over(session, code, actor=principal.actor, clock=clock)
        return RolloverOut(**asdict(report))
