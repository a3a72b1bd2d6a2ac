"""The public bulletin board (党务公开栏) at ``/bulletin``: no sign-in, nothing private.

It renders the JSON bulletin's own query (``service.api.routes.bulletin``), which selects only
public columns: pledges under public notice (with the days left and an objection form each),
published pledges by unit, results announced with a public disclosure scope, shortlists under
notice and the commended lists. Objections are filed as the public (anonymous unless the filer
gives a name), through the choke point, with a double-submit CSRF token.
"""

from __future__ import annotations

from itertools import groupby
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from models import Criterion
from service.accounts import Principal
from service.api.deps import AppClock, UoW
from service.api.routes.bulletin import Bulletin
from service.api.routes.bulletin import bulletin as bulletin_query
from service.api.routes.objections import _check_fileable
from service.clock import Clock
from service.errors import PledgeflowError
from service.web.routes.pages import count, form_values, reasons_of, show
from service.web.session import (
    PageRoute,
    check_form_csrf,
    current_user,
    form_csrf_token,
    remember_form_csrf,
)
from service.workflow import engine
from service.workflow.roles import Actor

router = APIRouter(include_in_schema=False, route_class=PageRoute)

AWARD_NAMES = {
    "advanced_organization": ("先进基层党组织", "Advanced grassroots Party organisation"),
    "outstanding_member": ("优秀共产党员", "Outstanding Party member"),
    "outstanding_party_worker": ("优秀党务工作者", "Outstanding Party-affairs worker"),
}


def _board(uow: UoW, clock: Clock) -> tuple[Bulletin, dict[str, tuple[str, str]]]:
    board = bulletin_query(uow=uow, clock=clock, period=None)
    with uow() as session:  # criteria are public (GET /api/v1/criteria-sets)
        names = {code: (zh, en) for code, zh, en in session.execute(
            sa.select(Criterion.code, Criterion.name_zh, Criterion.name_en))}
    return board, names


def _by_unit(pledges: list[Any]) -> list[tuple[tuple[str, str], list[Any]]]:
    """Pledges grouped by organization, the unit's own pledge before its members'."""
    ordered = sorted(pledges, key=lambda p: (p.subject.organization_id,
                                             p.subject.kind != "organization", p.case_id))
    return [((group[0].subject.unit_name_zh, group[0].subject.unit_name_en), group)
            for group in (list(g) for _, g in groupby(
                ordered, key=lambda p: p.subject.organization_id))]


async def _page(request: Request, uow: UoW, clock: Clock, *, status: int = 200,
                forms: dict[int, dict[str, Any]] | None = None) -> Response:
    board, names = await run_in_threadpool(_board, uow, clock)
    user = await current_user(request)
    token = form_csrf_token(request)
    response = show(request, "bulletin.html", user, status=status, board=board,
                    criterion_names=names, under_notice=_by_unit(board.pledges_under_notice),
                    published=_by_unit(board.published_pledges), award_names=AWARD_NAMES,
                    forms=forms or {}, form_token=token,
                    filed=request.query_params.get("filed") == "1")
    remember_form_csrf(request, response, token)
    return response


@router.get("/bulletin")
async def bulletin_page(request: Request, uow: UoW, clock: AppClock) -> Response:
    """Everything under public notice or published."""
    return await _page(request, uow, clock)


def _file(uow: UoW, clock: Clock, case_id: int, data: dict[str, str]) -> None:
    _check_fileable(uow, Principal(), case_id)  # 404 unless something of it is on notice
    with uow() as session:
        engine.apply(session, case_id=case_id, action="file_objection", actor=Actor.public(),
                     clock=clock, data=data)


@router.get("/bulletin/objections/{case_id}")
async def objection_form(case_id: int, request: Request) -> Response:
    """The objection form's address opened with GET: the board, at that case."""
    lang = request.query_params.get("lang")
    query = f"?lang={lang}" if lang in ("zh", "en") else ""
    return RedirectResponse(f"/bulletin{query}#case-{case_id}", status_code=303)


@router.post("/bulletin/objections/{case_id}")
async def file_objection(case_id: int, request: Request, uow: UoW, clock: AppClock
                         ) -> Response:
    """File an objection to what of this case is under notice, as the public."""
    await check_form_csrf(request)
    values = form_values(await request.form())
    data = {"body": values.get("body", ""), "filed_by_name": values.get("filed_by_name", ""),
            "contact": values.get("contact", "")}
    try:
        await run_in_threadpool(_file, uow, clock, case_id, data)
    except PledgeflowError as exc:
        if exc.status == 404:
            raise
        return await _page(request, uow, clock, status=422,
                           forms={case_id: {"values": values, "reasons": reasons_of(exc)}})
    count(request, "file_objection")
    return RedirectResponse(f"/bulletin?filed=1#case-{case_id}", status_code=303)
