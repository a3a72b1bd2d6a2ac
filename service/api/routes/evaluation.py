"""Mass evaluation (群众评议): a case's round, its evaluators, ballots and the round's actions.

Ballots are anonymous by structure (docs/invariants.md #8): nothing here answers *who chose
what*. The round shows counts; the evaluators list (who was asked, whether they voted) is for
the office, flows and the subject's superiors; the tally is shown only once announced and only
within the round's disclosure scope.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.orm import Session

from models import (
    Case,
    Criterion,
    EvaluationRound,
    EvaluatorAssignment,
    Organization,
    Period,
    Position,
)
from service.accounts import Principal
from service.api import actions, problems
from service.api.deps import AppClock, CurrentPrincipal, UoW
from service.api.routes.cases import ACTION, READ_PROBLEMS, IdemKey, IfMatch
from service.api.schemas import Comment, PathId
from service.errors import Forbidden, InvalidInput, NotFound, Reason
from service.evaluation_view import evaluators_of
from service.rules import SCALES, CampaignRules
from service.tally import disclosable
from service.visibility import ensure_case_visible
from service.workflow import inputs
from service.workflow.roles import LEADERS, UNIT_STAFF, relative_roles

router = APIRouter(prefix="/api/v1", tags=["evaluation"])

# Who may see an announced tally, by the round's disclosure scope ("public": anyone who can
# read the case). "unit_staff" is the secretary, deputy or clerk of the case's organization;
# "leader_above" a secretary or deputy of any organization above it (superiors in the broad
# sense, not only the one step up that acts on the case).
_ABOVE = frozenset({"superior", "leader_above", "office", "auditor", "flow"})
DISCLOSED_TO: dict[str, frozenset[str]] = {
    "unit": _ABOVE | {"subject", "unit_staff"},
    "superior": _ABOVE,
}
SEES_EVALUATORS = frozenset({"office", "flow", "superior"})


class ScaleOptionOut(BaseModel):
    code: str
    label_zh: str
    label_en: str
    satisfied: bool


class CriterionOut(BaseModel):
    code: str
    name_zh: str | None
    name_en: str | None


class MyPart(BaseModel):
    """The caller's own place in the round (only about themselves)."""

    assigned: bool
    voted: bool


class RoundOut(BaseModel):
    id: int
    case_id: int
    status: str
    opened_at: datetime
    closes_at: datetime
    closed_at: datetime | None
    announced_at: datetime | None
    extended: bool
    quorum: float
    scale: str
    options: list[ScaleOptionOut]
    criteria: list[CriterionOut]
    assigned: int
    voted: int
    disclosure_scope: str
    results_visible: bool
    tally: dict[str, Any] | None
    me: MyPart


class EvaluatorOut(BaseModel):
    person_id: int
    kind: str
    voted: bool


def _round_of(session: Session, case_id: int) -> EvaluationRound:
    round_ = session.scalars(sa.select(EvaluationRound)
                             .where(EvaluationRound.case_id == case_id)).first()
    if round_ is None:
        raise NotFound(f"case {case_id} has no evaluation round yet")
    return round_


def _caller_roles(session: Session, case: Case, principal: Principal) -> set[str]:
    """The caller's roles relative to the case, plus ``unit_staff`` and ``leader_above``."""
    case_org = session.get(Organization, case.organization_id)
    assert case_org is not None
    roles = relative_roles(session, case, case_org, principal.actor, check_evaluator=False)
    if principal.person_id is None:
        return roles
    positions = session.execute(
        sa.select(Position.role, Organization.id, Organization.path)
        .join(Organization, Organization.id == Position.organization_id)
        .where(Position.person_id == principal.person_id)).all()
    for role, org_id, path in positions:
        if role in UNIT_STAFF and org_id == case.organization_id:
            roles.add("unit_staff")
        if role in LEADERS and org_id != case.organization_id and \
                case_org.path.startswith(path):
            roles.add("leader_above")
    return roles


def results_visible(round_: EvaluationRound, roles: set[str]) -> bool:
    """An announced tally, for callers within the round's disclosure scope."""
    if round_.announced_at is None or round_.tally is None:
        return False
    if round_.disclosure_scope == "public":
        return True
    return bool(roles & DISCLOSED_TO.get(round_.disclosure_scope, frozenset()))


def _criteria(session: Session, codes: list[str]) -> list[CriterionOut]:
    names = {code: (zh, en) for code, zh, en in session.execute(
        sa.select(Criterion.code, Criterion.name_zh, Criterion.name_en)
        .where(Criterion.code.in_(codes)))}
    return [CriterionOut(code=c, name_zh=names.get(c, (None, None))[0],
                         name_en=names.get(c, (None, None))[1]) for c in codes]


def _round_out(session: Session, case: Case, round_: EvaluationRound,
               principal: Principal) -> RoundOut:
    assignments = session.execute(
        sa.select(EvaluatorAssignment.person_id, EvaluatorAssignment.voted_at)
        .where(EvaluatorAssignment.round_id == round_.id)).all()
    mine = [voted_at for person_id, voted_at in assignments
            if person_id is not None and person_id == principal.person_id]
    visible = results_visible(round_, _caller_roles(session, case, principal))
    scale = SCALES.get(round_.scale)
    return RoundOut(
        id=round_.id, case_id=case.id, status=round_.status, opened_at=round_.opened_at,
        closes_at=round_.closes_at, closed_at=round_.closed_at,
        announced_at=round_.announced_at, extended=round_.extended, quorum=round_.quorum,
        scale=round_.scale,
        options=[ScaleOptionOut(**o.model_dump()) for o in (scale.options if scale else ())],
        criteria=_criteria(session, list(round_.criteria)), assigned=len(assignments),
        voted=sum(v is not None for _, v in assignments),
        disclosure_scope=round_.disclosure_scope, results_visible=visible,
        tally=disclosable(round_.tally, CampaignRules.model_validate(
            session.get(Period, case.period_id).rules or {}).min_ballots_to_disclose)
        if visible else None,
        me=MyPart(assigned=bool(mine), voted=bool(mine and mine[0] is not None)))


@router.get("/cases/{case_id}/round", response_model=RoundOut,
            summary="The case's evaluation round (counts; tally once announced, within scope)",
            responses=READ_PROBLEMS)
def get_round(case_id: PathId, uow: UoW, principal: CurrentPrincipal) -> JSONResponse:
    """Status, window, quorum, scale and criteria, how many were asked and how many voted.

    Never who chose what. The tally appears only after the results were announced, and only
    for callers within the round's disclosure scope: ``unit`` (the subject, the unit's staff,
    leaders at any level above, the office, auditors, flows), ``superior`` (leaders above,
    office, auditors, flows) or ``public`` (anyone who can read the case)."""
    with uow() as session:
        case = ensure_case_visible(session, principal, case_id)
        out = _round_out(session, case, _round_of(session, case_id), principal)
        return JSONResponse(out.model_dump(mode="json"),
                            headers={"ETag": actions.etag(case.version)})


@router.get("/cases/{case_id}/round/evaluators", response_model=list[EvaluatorOut],
            summary="Who was asked to evaluate, and whether they voted",
            responses=problems.responses(403, 404))
def list_evaluators(case_id: PathId, uow: UoW, principal: CurrentPrincipal) -> list[EvaluatorOut]:
    """For the office, flows and the subject's superiors (to remind and to escalate).

    This says *who voted*, never *what*: ballots are stored apart and carry no voter. Ordered
    by person, not by time, so the order reveals nothing."""
    with uow() as session:
        case = ensure_case_visible(session, principal, case_id)
        if not _caller_roles(session, case, principal) & SEES_EVALUATORS:
            raise Forbidden("only the campaign office, flows and superiors see the evaluators")
        round_ = _round_of(session, case_id)
        return [EvaluatorOut(person_id=e.person_id, kind=e.kind, voted=e.voted)
                for e in evaluators_of(session, round_.id)]


@router.post("/cases/{case_id}/round/evaluators", summary="Add or remove evaluators (office)",
             **ACTION)
async def assign_evaluators(case_id: PathId, body: inputs.AssignEvaluators, request: Request,
                            uow: UoW, clock: AppClock, principal: CurrentPrincipal,
                            if_match: IfMatch = None, idempotency_key: IdemKey = None
                            ) -> JSONResponse:
    """While the round accepts ballots, the campaign office adds evaluators (they are invited
    by email) or removes some who have not voted (a cast ballot stays in the count)."""
    return await actions.perform(request, uow, principal, clock, case_id=case_id,
                                 action="assign_evaluators", data=body)


@router.post("/cases/{case_id}/round/ballot", summary="Cast a ballot (assigned evaluators)",
             **ACTION)
async def cast_ballot(case_id: PathId, body: inputs.CastBallot, request: Request, uow: UoW,
                      clock: AppClock, principal: CurrentPrincipal, if_match: IfMatch = None
                      ) -> JSONResponse:
    """An assigned evaluator answers every criterion with an option of the round's scale.

    One ballot per evaluator; the ballot is stored without its voter. ``Idempotency-Key`` is
    refused here: its stored request hash, kept next to the caller, would tie the caller to a
    hash of their answers. A retry is safe anyway: a second ballot is refused
    (``already_voted``)."""
    if "idempotency-key" in request.headers:
        raise InvalidInput("ballots take no Idempotency-Key", [Reason(
            "idempotency_key_not_allowed",
            "a ballot is never keyed to its caller; resend without Idempotency-Key")])
    return await actions.perform(request, uow, principal, clock, case_id=case_id,
                                 action="cast_ballot", data=body)


def _round_action(path: str, action: str, summary: str, doc: str) -> None:
    async def endpoint(case_id: PathId, request: Request, uow: UoW, clock: AppClock,
                       principal: CurrentPrincipal, body: Comment | None = None,
                       if_match: IfMatch = None, idempotency_key: IdemKey = None
                       ) -> JSONResponse:
        return await actions.perform(request, uow, principal, clock, case_id=case_id,
                                     action=action, comment=body.comment if body else None)

    endpoint.__name__ = f"round_{path}"
    endpoint.__doc__ = doc
    router.post(f"/cases/{{case_id}}/round/{path}", summary=summary, **ACTION)(endpoint)


for _path, _action, _summary, _doc in (
    ("open", "open_evaluation", "Open the evaluation round",
     "Open the round on its calendar date and invite every representative of the subject's "
     "enterprise (office or flow)."),
    ("extend", "extend_round", "Extend a round below quorum, once",
     "After the deadline, below quorum and not yet extended: extend the round once and "
     "remind the evaluators (office or flow)."),
    ("close", "close_round", "Close and tally the round",
     "When everyone voted or the deadline passed, and the quorum is reached: close the round "
     "and tally it (office or flow)."),
    ("inconclusive", "mark_inconclusive", "Give up a round below quorum",
     "After the one extension, still below quorum: mark the round inconclusive "
     "(office or flow)."),
    ("announce", "announce_results", "Announce the tallied results",
     "Announce the tally within the round's disclosure scope (office or flow)."),
):
    _round_action(_path, _action, _summary, _doc)
