"""Objections (异议) to what is under public notice: anyone may file, the office resolves.

Filing is public (no sign-in) but still goes through the choke point, which checks that the
notice window is open. Who filed an objection is shown only to those who resolve or audit it,
never to the subject objected to.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from models import Case, Nomination, Objection, Organization, PublicNotice
from service.accounts import Principal
from service.api import actions
from service.api.deps import AppClock, CurrentPrincipal, UoW
from service.api.routes.cases import ACTION, READ_PROBLEMS, IdemKey, IfMatch
from service.api.schemas import Comment, Out, PathId
from service.errors import NotFound
from service.visibility import case_filter, ensure_case_visible
from service.workflow import inputs
from service.workflow.roles import relative_roles

router = APIRouter(prefix="/api/v1", tags=["objections"])

# Roles that see who filed an objection and how to reach them.
SEES_FILER = frozenset({"office", "auditor", "flow", "superior"})


class ObjectionOut(Out):
    id: int
    case_id: int | None
    notice_id: int
    body: str
    filed_at: datetime
    status: str
    resolution: str | None
    resolved_by_id: int | None
    resolved_at: datetime | None
    filed_by_name: str | None = None
    contact: str | None = None


def _has_open_notice(session: Session, case_id: int) -> bool:
    """Something of the case (its pledge, or the shortlist it stands on) is under notice."""
    own = sa.select(PublicNotice.id).where(PublicNotice.case_id == case_id,
                                           PublicNotice.status == "open")
    shortlist = (sa.select(PublicNotice.id)
                 .join(Nomination, Nomination.commendation_id == PublicNotice.commendation_id)
                 .where(Nomination.case_id == case_id, PublicNotice.status == "open"))
    return session.execute(own.union_all(shortlist).limit(1)).first() is not None


def _check_fileable(uow: UoW, principal: Principal, case_id: int) -> None:
    """Callers who cannot read the case learn nothing about it beyond what is on notice."""
    with uow() as session:
        visible = session.scalar(sa.select(Case.id).where(
            Case.id == case_id, case_filter(session, principal)))
        if visible is None and not _has_open_notice(session, case_id):
            raise NotFound(f"nothing of case {case_id} is under public notice")


@router.post("/cases/{case_id}/objections", summary="File an objection (no sign-in needed)",
             **ACTION)
async def file_objection(case_id: PathId, body: inputs.FileObjection, request: Request, uow: UoW,
                         clock: AppClock, principal: CurrentPrincipal,
                         idempotency_key: IdemKey = None) -> JSONResponse:
    """Object to a pledge or a shortlist while it is under public notice; the filer may stay
    anonymous (name and contact are optional)."""
    await run_in_threadpool(_check_fileable, uow, principal, case_id)
    return await actions.perform(request, uow, principal, clock, case_id=case_id,
                                 action="file_objection", data=body, public=True)


def _sees_filer(session: Session, case: Case, principal: Principal) -> bool:
    case_org = session.get(Organization, case.organization_id)
    assert case_org is not None
    roles = relative_roles(session, case, case_org, principal.actor, check_evaluator=False)
    return bool(roles & SEES_FILER)


@router.get("/cases/{case_id}/objections", response_model=list[ObjectionOut],
            summary="Objections to a case", responses=READ_PROBLEMS)
def list_objections(case_id: PathId, uow: UoW, principal: CurrentPrincipal) -> list[ObjectionOut]:
    """Every objection to the case, oldest first, for callers who may read the case.

    The filer's name and contact are shown to the office, auditors, flows and superiors
    (who resolve objections), never to the subject."""
    with uow() as session:
        case = ensure_case_visible(session, principal, case_id)
        identity = _sees_filer(session, case, principal)
        rows = session.scalars(sa.select(Objection).where(Objection.case_id == case_id)
                               .order_by(Objection.filed_at, Objection.id))
        out = [ObjectionOut.model_validate(o) for o in rows]
        if not identity:
            out = [o.model_copy(update={"filed_by_name": None, "contact": None}) for o in out]
        return out


def _case_of(uow: UoW, principal: Principal, objection_id: int) -> int:
    """The objection's case, if the caller may read it (NotFound otherwise: no probing)."""
    with uow() as session:
        case_id = session.scalar(
            sa.select(Objection.case_id).join(Case, Case.id == Objection.case_id)
            .where(Objection.id == objection_id, case_filter(session, principal)))
    if case_id is None:
        raise NotFound(f"objection {objection_id} not found")
    return case_id


def _resolution(action: str, summary: str, doc: str) -> None:
    async def endpoint(objection_id: PathId, body: Comment, request: Request, uow: UoW,
                       clock: AppClock, principal: CurrentPrincipal, if_match: IfMatch = None,
                       idempotency_key: IdemKey = None) -> JSONResponse:
        case_id = await run_in_threadpool(_case_of, uow, principal, objection_id)
        return await actions.perform(
            request, uow, principal, clock, case_id=case_id, action=f"{action}_objection",
            comment=body.comment, data=inputs.ResolveObjection(objection_id=objection_id))

    endpoint.__name__ = f"{action}_objection"
    endpoint.__doc__ = doc
    router.post(f"/objections/{{objection_id}}/{action}", summary=summary, **ACTION)(endpoint)


_resolution("uphold", "Uphold an objection (with a comment)",
            "Uphold an open objection: a pledge goes back to its unit, a candidate leaves the "
            "shortlist. The comment is required. If-Match refers to the objection's case.")
_resolution("dismiss", "Dismiss an objection (with a comment)",
            "Dismiss an open objection, saying why. If-Match refers to the objection's case.")
