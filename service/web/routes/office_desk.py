"""The commendation desk (``/office/commendations/{period_code}``).

Per award: quota, shortlist size and pool, the shortlist's public notice, and every candidate
ranked with the reasons for their place (zh/en). The office runs the selection (once per
award; it warns when cases have not finished evaluation), posts each shortlist for public
notice, adjusts the shortlist with a rationale (``adjust_nomination``) and decides each
candidate (``decide``: commend or not) — always through the choke point, where recusal,
the notice window, open objections and the quota are judged. A refusal comes back on the row
with every reason. Deciding everyone left off the shortlist is one form (each case in its own
SAVEPOINT, so a refused one undoes nothing else).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from models import Case, Commendation, Nomination, Objection, Organization, Person, Position
from service import office as office_service
from service.api.deps import AppClock, UoW
from service.clock import Clock
from service.commendation_view import awards_of
from service.errors import NotFound, PledgeflowError, Reason
from service.office_reports import AWARD_NAMES
from service.periods import get_period
from service.rules import CampaignRules
from service.selection import Candidate, recused
from service.web.routes.office_home import OfficeAdmin, OfficeForm, OfficeUser, office_page
from service.web.routes.pages import count, form_values, reasons_of
from service.web.session import PageRoute

router = APIRouter(include_in_schema=False, route_class=PageRoute)

Forms = dict[str, dict[str, Any]]


def _enterprise(path: str) -> int:
    parts = [int(p) for p in path.strip("/").split("/") if p]
    return parts[1] if len(parts) > 1 else parts[0]


def _recusal_check(session: Session, person_id: int) -> Callable[[int, str], Reason | None]:
    """For this decider: the recusal reason (or None) of a candidate's (unit id, path)."""
    org_ids = set(session.scalars(sa.select(Position.organization_id)
                                  .where(Position.person_id == person_id)))
    own = session.scalar(sa.select(Person.organization_id).where(Person.id == person_id))
    org_ids |= {own} if own else set()
    paths = dict(session.execute(sa.select(Organization.id, Organization.path).where(
        Organization.id.in_(sorted(org_ids)), Organization.kind != "campaign_office")).all()) \
        if org_ids else {}
    units, enterprises = set(paths), {_enterprise(p) for p in paths.values()
                                      if len(p.strip("/").split("/")) > 1}

    def check(unit_id: int, path: str) -> Reason | None:
        candidate = Candidate(case_id=0, subject_kind="organization", unit_id=unit_id,
                              enterprise_id=_enterprise(path), satisfaction=None,
                              pledge_items_total=0, pledge_items_kept=0)
        found = recused(units, enterprises, candidate)
        return None if found is None else office_service.Why(
            found.code, found.message_en, found.message_zh)

    return check


def _desk(uow: UoW, office: OfficeUser, code: str) -> dict[str, Any]:
    with uow() as session:
        period = get_period(session, code)
        awards = awards_of(session, period, full=True)
        ready, unfinished = office_service.ready_counts(session, period)
        case_ids = [n["case_id"] for a in awards for n in a["nominations"]]
        versions = dict(session.execute(sa.select(Case.id, Case.version)
                                        .where(Case.id.in_(case_ids or [0]))).all())
        objections = dict(session.execute(
            sa.select(Objection.case_id, sa.func.count()).where(
                Objection.case_id.in_(case_ids or [0]), Objection.status == "open")
            .group_by(Objection.case_id)).tuples().all())
        org_ids = {n["organization_id"] for a in awards for n in a["nominations"]}
        orgs = {oid: (zh, en, path) for oid, zh, en, path in session.execute(
            sa.select(Organization.id, Organization.name_zh, Organization.name_en,
                      Organization.path).where(Organization.id.in_(sorted(org_ids) or [0])))}
        check = _recusal_check(session, office.person_id)
        for award in awards:
            award["commended"] = sum(n["status"] == "commended" for n in award["nominations"])
            award["open_left"] = sum(n["stage"] == "commendation" for n in award["nominations"])
            notice = award["notice"]
            award["window"] = (datetime.fromisoformat(notice["starts_at"]),
                               datetime.fromisoformat(notice["ends_at"])) if notice else None
            award["rest"] = sum(n["stage"] == "commendation" and not n["shortlisted"]
                                for n in award["nominations"])
            for n in award["nominations"]:
                zh, en, path = orgs[n["organization_id"]]
                n["org"] = (zh, en)
                n["version"] = versions.get(n["case_id"])
                n["objections"] = objections.get(n["case_id"], 0)
                n["recusal"] = check(n["organization_id"], path)
        rules = CampaignRules.model_validate(period.rules or {})
        post_by = period.commendation_on - timedelta(days=rules.notice_days)
        return {"period": period, "awards": awards, "ready": ready, "unfinished": unfinished,
                "selected": {a["award"] for a in awards}, "post_by": post_by,
                "award_names": AWARD_NAMES, "rules": rules}


def _render(request: Request, uow: UoW, office: OfficeUser, code: str, *, status: int = 200,
            forms: Forms | None = None, done: str | None = None) -> Response:
    view = _desk(uow, office, code)
    return office_page(request, "office/desk.html", office, status=status, forms=forms or {},
                       done=done, now=request.app.state.clock.now(), **view)


DONE = {"selected", "posted", "adjusted", "decided", "rest"}


@router.get("/office/commendations/{code}")
def desk_page(code: str, request: Request, uow: UoW, office: OfficeAdmin) -> Response:
    """The desk: quotas, shortlists and ranked candidates, with what can be done now."""
    done = request.query_params.get("done")
    return _render(request, uow, office, code, done=done if done in DONE else None)


def _run(request: Request, uow: UoW, office: OfficeUser, code: str, *, form: str,
         values: dict[str, str], work: Callable[[Session], None], done: str,
         anchor: str = "", action: str | None = None) -> Response:
    """Do one piece of desk work in one transaction; the desk again (422) on refusal."""
    try:
        with uow() as session:
            work(session)
    except PledgeflowError as exc:
        return _render(request, uow, office, code, status=422,
                       forms={form: {"values": values, "reasons": reasons_of(exc)}})
    if action:
        count(request, action)  # after the commit, never before
    return RedirectResponse(f"/office/commendations/{code}?done={done}{anchor}",
                            status_code=303)


def _nomination_in(session: Session, code: str, nomination_id: int) -> Nomination:
    period = get_period(session, code)
    row = session.scalars(sa.select(Nomination).join(
        Commendation, Commendation.id == Nomination.commendation_id).where(
        Nomination.id == nomination_id, Commendation.period_id == period.id)).first()
    if row is None:
        raise NotFound(f"no nomination {nomination_id} in period {code}")
    return row


def _selection_in(session: Session, code: str, commendation_id: int) -> Commendation:
    period = get_period(session, code)
    row = session.get(Commendation, commendation_id)
    if row is None or row.period_id != period.id:
        raise NotFound(f"no selection {commendation_id} in period {code}")
    return row


@router.post("/office/commendations/{code}/select")
async def select(code: str, request: Request, uow: UoW, clock: AppClock,
                 office: OfficeForm) -> Response:
    """Run the selection: rank every case that finished evaluation, store the shortlists."""
    values = form_values(await request.form())

    def work(session: Session) -> None:
        office_service.select_candidates(
            session, code, include_unfinished=values.get("include_unfinished") == "yes",
            actor=office.user.principal.actor, clock=clock)

    return await run_in_threadpool(_run, request, uow, office, code, form="select",
                                   values=values, work=work, done="selected")


@router.post("/office/commendations/{code}/awards/{commendation_id}/notice")
async def post_notice(code: str, commendation_id: int, request: Request, uow: UoW,
                      clock: AppClock, office: OfficeForm) -> Response:
    """Post an award's shortlist for public notice."""
    values = form_values(await request.form())

    def work(session: Session) -> None:
        _selection_in(session, code, commendation_id)
        office_service.post_shortlist(session, commendation_id,
                                      actor=office.user.principal.actor, clock=clock)

    return await run_in_threadpool(_run, request, uow, office, code,
                                   form=f"notice-{commendation_id}", values=values, work=work,
                                   done="posted", anchor=f"#award-{commendation_id}")


def _version(values: dict[str, str]) -> int | None:
    version = values.get("version", "")
    return int(version) if version.isdigit() else None


@router.post("/office/commendations/{code}/nominations/{nomination_id}/adjust")
async def adjust(code: str, nomination_id: int, request: Request, uow: UoW, clock: AppClock,
                 office: OfficeForm) -> Response:
    """Move a candidate onto or off the shortlist; the rationale is required."""
    values = form_values(await request.form())

    def work(session: Session) -> None:
        _nomination_in(session, code, nomination_id)
        office_service.adjust(session, nomination_id,
                              shortlisted=values.get("shortlisted") == "yes",
                              rationale=values.get("rationale", ""),
                              actor=office.user.principal.actor, clock=clock,
                              expected_version=_version(values))

    return await run_in_threadpool(_run, request, uow, office, code,
                                   form=f"adjust-{nomination_id}", values=values, work=work,
                                   done="adjusted", anchor=f"#nom-{nomination_id}",
                                   action="adjust_nomination")


@router.post("/office/commendations/{code}/nominations/{nomination_id}/decide")
async def decide(code: str, nomination_id: int, request: Request, uow: UoW, clock: AppClock,
                 office: OfficeForm) -> Response:
    """Commend a shortlisted candidate, or not, with an optional comment."""
    values = form_values(await request.form())

    def work(session: Session) -> None:
        _nomination_in(session, code, nomination_id)
        office_service.decide(session, nomination_id, commend=values.get("commend") == "yes",
                              comment=values.get("comment", "").strip() or None,
                              actor=office.user.principal.actor, clock=clock,
                              expected_version=_version(values))

    return await run_in_threadpool(_run, request, uow, office, code,
                                   form=f"decide-{nomination_id}", values=values, work=work,
                                   done="decided", anchor=f"#nom-{nomination_id}",
                                   action="decide")


def _decide_rest(request: Request, uow: UoW, clock: Clock, office: OfficeUser, code: str,
                 commendation_id: int, values: dict[str, str]) -> Response:
    refused: list[Reason] = []
    decided = 0
    with uow() as session:
        selection = _selection_in(session, code, commendation_id)
        rest = session.scalars(sa.select(Nomination.id).join(
            Case, Case.id == Nomination.case_id).where(
            Nomination.commendation_id == selection.id, Nomination.shortlisted.is_(False),
            Case.stage == "commendation").order_by(Nomination.id)).all()
        for nomination_id in rest:
            try:
                with session.begin_nested():
                    office_service.decide(session, nomination_id, commend=False,
                                          comment=values.get("comment", "").strip() or None,
                                          actor=office.user.principal.actor, clock=clock)
                decided += 1
            except PledgeflowError as exc:
                refused += [Reason(r.code, f"nomination {nomination_id}: {r.message}")
                            if not getattr(r, "message_zh", "") else r for r in reasons_of(exc)]
    count(request, "decide", decided)
    if refused:
        return _render(request, uow, office, code, status=422, forms={
            f"rest-{commendation_id}": {"values": values, "reasons": refused,
                                        "decided": decided}})
    return RedirectResponse(f"/office/commendations/{code}?done=rest#award-{commendation_id}",
                            status_code=303)


@router.post("/office/commendations/{code}/awards/{commendation_id}/decide-rest")
async def decide_rest(code: str, commendation_id: int, request: Request, uow: UoW,
                      clock: AppClock, office: OfficeForm) -> Response:
    """Decide "not commended" for every candidate of the award left off the shortlist."""
    values = form_values(await request.form())
    return await run_in_threadpool(_decide_rest, request, uow, clock, office, code,
                                   commendation_id, values)
