"""Evaluators (``/office/evaluators``): the rounds now voting, and for one case
(``/office/evaluators/{case_id}``) who was asked to evaluate and whether they voted — never
what anyone chose. While the round accepts ballots the office adds people (they are invited by
email) and removes those who have not voted, through the action ``assign_evaluators``.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from models import (
    Case,
    EvaluationRound,
    EvaluatorAssignment,
    Organization,
    Period,
    Person,
    Position,
)
from service.api.deps import AppClock, UoW
from service.api.routes.evaluation import _round_of
from service.clock import Clock
from service.errors import PledgeflowError
from service.evaluation_view import evaluators_of
from service.visibility import ensure_case_visible
from service.web.routes.office_home import OfficeAdmin, OfficeForm, OfficeUser, office_page
from service.web.routes.pages import act, count, reasons_of
from service.web.session import PageRoute
from service.workflow import inputs

router = APIRouter(include_in_schema=False, route_class=PageRoute)

LIST_LIMIT = 300
KIND_NAMES = {"member_representative": ("党员代表", "Member representative"),
              "worker_representative": ("职工代表", "Worker representative")}


@router.get("/office/evaluators")
def rounds_page(request: Request, uow: UoW, office: OfficeAdmin) -> Response:
    """Cases whose evaluation round is voting now, soonest deadline first."""
    with uow() as session:
        rows = session.execute(
            sa.select(Case, EvaluationRound, Organization.name_zh, Organization.name_en,
                      Person.name, Period.code)
            .join(EvaluationRound, EvaluationRound.case_id == Case.id)
            .join(Organization, Organization.id == Case.organization_id)
            .join(Period, Period.id == Case.period_id)
            .outerjoin(Person, Person.id == Case.person_id)
            .where(Case.stage == "evaluation", Case.status == "voting")
            .order_by(EvaluationRound.closes_at, Case.id).limit(LIST_LIMIT)).all()
        counts = _counts(session, [r[1].id for r in rows])
    return office_page(request, "office/rounds.html", office, rows=rows, counts=counts,
                       limit=LIST_LIMIT)


def _counts(session: Session, round_ids: list[int]) -> dict[int, tuple[int, int]]:
    """(assigned, voted) per round."""
    if not round_ids:
        return {}
    voted = sa.func.sum(sa.case((EvaluatorAssignment.voted_at.is_not(None), 1), else_=0))
    return {rid: (int(n), int(v or 0)) for rid, n, v in session.execute(
        sa.select(EvaluatorAssignment.round_id, sa.func.count(), voted)
        .where(EvaluatorAssignment.round_id.in_(round_ids))
        .group_by(EvaluatorAssignment.round_id))}


def _view(uow: UoW, office: OfficeUser, case_id: int, now: Any) -> dict[str, Any]:
    with uow() as session:
        case = ensure_case_visible(session, office.user.principal, case_id)
        round_ = _round_of(session, case_id)
        org = session.get(Organization, case.organization_id)
        assert org is not None
        evaluators = evaluators_of(session, round_.id)
        assigned = {e.person_id for e in evaluators}
        parts = [p for p in org.path.strip("/").split("/") if p]
        enterprise = "/" + "/".join(parts[:2]) + "/"
        people = session.execute(
            sa.select(Person.id, Person.name, Organization.name_zh, Organization.name_en)
            .join(Organization, Organization.id == Person.organization_id)
            .where(Person.active.is_(True), Organization.path.startswith(enterprise))
            .order_by(Organization.path, Person.id)).all()
        reps = {pid for pid, in session.execute(sa.select(Position.person_id).where(
            Position.role.in_(tuple(KIND_NAMES)),
            Position.person_id.in_([p.id for p in people] or [0])))}
        member = session.get(Person, case.person_id) if case.person_id else None
        by_id = {p.id: p for p in people}
        missing = assigned - set(by_id)
        if missing:  # evaluators from elsewhere (added by id): show them too
            for row in session.execute(
                    sa.select(Person.id, Person.name, Organization.name_zh, Organization.name_en)
                    .join(Organization, Organization.id == Person.organization_id)
                    .where(Person.id.in_(sorted(missing)))):
                by_id[row.id] = row
        candidates = [p for p in people if p.id not in assigned and p.id != case.person_id]
        candidates.sort(key=lambda p: p.id not in reps)  # representatives first
        period = session.get(Period, case.period_id)
        accepting = (case.stage, case.status) == ("evaluation", "voting") and \
            round_.status == "open" and now < round_.closes_at
        return {"case": case, "round": round_, "org": org, "member": member, "period": period,
                "evaluators": evaluators, "people": by_id, "candidates": candidates,
                "reps": reps, "accepting": accepting, "kinds": KIND_NAMES}


def _render(request: Request, uow: UoW, office: OfficeUser, case_id: int, *, status: int = 200,
            form: dict[str, Any] | None = None, done: bool = False) -> Response:
    view = _view(uow, office, case_id, request.app.state.clock.now())
    return office_page(request, "office/evaluators.html", office, status=status,
                       form=form or {}, done=done, **view)


@router.get("/office/evaluators/{case_id}")
def evaluators_page(case_id: int, request: Request, uow: UoW, office: OfficeAdmin) -> Response:
    """Who was asked to evaluate this case and whether they voted; add or remove."""
    return _render(request, uow, office, case_id, done=request.query_params.get("done") == "1")


def _ids(values: list[Any]) -> list[int]:
    return sorted({int(v) for v in values if isinstance(v, str) and v.isdigit()})


def _assign(request: Request, uow: UoW, clock: Clock, office: OfficeUser, case_id: int,
            add: list[int], remove: list[int], version: str) -> Response:
    try:
        with uow() as session:
            act(session, office.user, clock, case_id=case_id, action="assign_evaluators",
                data=inputs.AssignEvaluators(add=add, remove=remove),
                expected_version=int(version) if version.isdigit() else None)
    except PledgeflowError as exc:
        return _render(request, uow, office, case_id, status=422, form={
            "add": add, "remove": remove, "reasons": reasons_of(exc)})
    count(request, "assign_evaluators")
    return RedirectResponse(f"/office/evaluators/{case_id}?done=1", status_code=303)


@router.post("/office/evaluators/{case_id}")
async def assign(case_id: int, request: Request, uow: UoW, clock: AppClock,
                 office: OfficeForm) -> Response:
    """Add the people ticked under "add" and remove those ticked under "remove"."""
    form = await request.form()
    version = form.get("version")
    return await run_in_threadpool(
        _assign, request, uow, clock, office, case_id, _ids(form.getlist("add")),
        _ids(form.getlist("remove")), version if isinstance(version, str) else "")
