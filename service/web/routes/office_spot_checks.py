"""Spot checks (``/office/spot-checks/{period_code}``): draw units at random and record what
was found on each.

A draw uses a fresh seed (``secrets.token_hex``) and ``random.Random(seed).sample`` over the
period's active units sorted by id; seed, population and result go into the history, so anyone
can re-check the draw — the page does so for every draw and says whether it reproduces.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from models import Event, Organization, Person, SpotCheck
from service import spot_checks
from service.api.deps import AppClock, UoW
from service.clock import Clock
from service.errors import InvalidInput, PledgeflowError
from service.office import Why
from service.periods import get_period
from service.web.routes.office_home import OfficeAdmin, OfficeForm, OfficeUser, office_page
from service.web.routes.pages import form_values, reasons_of
from service.web.session import PageRoute

router = APIRouter(include_in_schema=False, route_class=PageRoute)


def _view(uow: UoW, code: str) -> dict[str, Any]:
    with uow() as session:
        period = get_period(session, code)
        population = spot_checks.population(session, period)
        checks = list(session.scalars(sa.select(SpotCheck).where(
            SpotCheck.period_id == period.id).order_by(SpotCheck.id.desc())))
        drawn = {e.payload.get("spot_check"): e.payload for e in session.scalars(
            sa.select(Event).where(Event.period_id == period.id,
                                   Event.action == "spot_check_drawn"))}
        org_ids = {o for c in checks for o in c.organization_ids}
        orgs = {oid: (zh, en, code_) for oid, zh, en, code_ in session.execute(
            sa.select(Organization.id, Organization.name_zh, Organization.name_en,
                      Organization.code).where(Organization.id.in_(sorted(org_ids) or [0])))}
        people = {c.drawn_by_id for c in checks} | {
            f.get("recorded_by") for c in checks for f in c.findings.values()}
        names = dict(session.execute(sa.select(Person.id, Person.name).where(
            Person.id.in_(sorted(p for p in people if p) or [0]))).all())
    rechecked = {}
    for c in checks:
        payload = drawn.get(c.id)
        rechecked[c.id] = payload is not None and spot_checks.redraw(
            payload["population"], c.seed, len(c.organization_ids)) == c.organization_ids
    return {"period": period, "population": population, "checks": checks, "orgs": orgs,
            "names": names, "rechecked": rechecked, "drawn": drawn,
            "results": spot_checks.FINDING_RESULTS}


def _render(request: Request, uow: UoW, office: OfficeUser, code: str, *, status: int = 200,
            forms: dict[str, dict[str, Any]] | None = None, done: str | None = None
            ) -> Response:
    return office_page(request, "office/spot_checks.html", office, status=status,
                       forms=forms or {}, done=done, **_view(uow, code))


@router.get("/office/spot-checks/{code}")
def spot_checks_page(code: str, request: Request, uow: UoW, office: OfficeAdmin) -> Response:
    """The period's draws, each with its units, findings and re-check; a form to draw."""
    done = request.query_params.get("done")
    return _render(request, uow, office, code,
                   done=done if done in ("drawn", "finding") else None)


def _draw(request: Request, uow: UoW, clock: Clock, office: OfficeUser, code: str,
          values: dict[str, str]) -> Response:
    try:
        n = values.get("n", "").strip()
        if not n.isdigit():
            raise InvalidInput("bad sample size", [Why(
                "bad_sample_size", "say how many units to draw", "请填写抽查单位的数量")])
        with uow() as session:
            check = spot_checks.draw(
                session, get_period(session, code), int(n),
                actor=office.user.principal.actor, now=clock.now())
            check_id = check.id
    except PledgeflowError as exc:
        return _render(request, uow, office, code, status=422,
                       forms={"draw": {"values": values, "reasons": reasons_of(exc)}})
    return RedirectResponse(f"/office/spot-checks/{code}?done=drawn#check-{check_id}",
                            status_code=303)


@router.post("/office/spot-checks/{code}/draw")
async def draw(code: str, request: Request, uow: UoW, clock: AppClock,
               office: OfficeForm) -> Response:
    """Draw N units at random, from a fresh recorded seed."""
    values = form_values(await request.form())
    return await run_in_threadpool(_draw, request, uow, clock, office, code, values)


def _finding(request: Request, uow: UoW, clock: Clock, office: OfficeUser, code: str,
             check_id: int, org_id: int, values: dict[str, str]) -> Response:
    try:
        with uow() as session:
            period = get_period(session, code)
            check = session.get(SpotCheck, check_id)
            if check is None or check.period_id != period.id:
                raise InvalidInput("no such spot check", [Why(
                    "no_such_check", "no such spot check in this period", "本时段没有这次抽查")])
            spot_checks.record_finding(
                session, check_id, org_id, result=values.get("result", ""),
                note=values.get("note", ""), actor=office.user.principal.actor,
                now=clock.now())
    except PledgeflowError as exc:
        return _render(request, uow, office, code, status=422, forms={
            f"finding-{check_id}-{org_id}": {"values": values, "reasons": reasons_of(exc)}})
    return RedirectResponse(f"/office/spot-checks/{code}?done=finding#unit-{check_id}-{org_id}",
                            status_code=303)


@router.post("/office/spot-checks/{code}/{check_id}/findings/{org_id}")
async def finding(code: str, check_id: int, org_id: int, request: Request, uow: UoW,
                  clock: AppClock, office: OfficeForm) -> Response:
    """Record what was found on one drawn unit."""
    values = form_values(await request.form())
    return await run_in_threadpool(_finding, request, uow, clock, office, code, check_id,
                                   org_id, values)
