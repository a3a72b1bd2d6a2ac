"""Criteria and scales (``/office/criteria``): the notice's criteria sets (四强, 四优, 六个一) and
units' refinements of them, and the ballot scales in use.

A refinement is a new set for one unit with ``refines_id`` pointing at the set it refines: the
base set's criteria, or the lines typed (``code | 中文名称 | English name | 说明``). More
criteria may be added to a refinement later; the notice's own sets are not edited here.
"""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from models import Organization
from service import office as office_service
from service.api.deps import AppClock, UoW
from service.api.routes.directory import list_criteria_sets
from service.clock import Clock
from service.errors import InvalidInput, PledgeflowError
from service.office import Why
from service.periods import UNIT_KINDS
from service.rules import SCALES
from service.web.routes.office_home import OfficeAdmin, OfficeForm, OfficeUser, office_page
from service.web.routes.pages import form_values, reasons_of
from service.web.session import PageRoute

router = APIRouter(include_in_schema=False, route_class=PageRoute)

APPLIES_NAMES = {"organization": ("基层党组织", "Organizations"), "member": ("党员", "Members"),
                 "carrier": ("活动载体", "Carriers")}
_SEPARATOR = re.compile(r"\s*[|｜\t]\s*")


def parse_lines(text: str) -> tuple[list[tuple[str, str, str, str]], list[Why]]:
    """``code | 中文名称 | English name | 说明`` per line (blank lines skipped)."""
    out, reasons = [], []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = _SEPARATOR.split(line.strip())
        if len(parts) < 3:
            reasons.append(Why("bad_line", f"line {n}: write code | Chinese name | English name",
                               f"第{n}行格式不对：应为 编码 | 中文名称 | 英文名称"))
            continue
        out.append((parts[0], parts[1], parts[2], " ".join(parts[3:])))
    return out, reasons


def _render(request: Request, uow: UoW, office: OfficeUser, *, status: int = 200,
            forms: dict[str, dict[str, Any]] | None = None, done: str | None = None) -> Response:
    sets = list_criteria_sets(uow, applies_to=None)
    with uow() as session:
        units = session.execute(
            sa.select(Organization.id, Organization.code, Organization.name_zh,
                      Organization.name_en, Organization.path)
            .where(Organization.kind.in_(UNIT_KINDS), Organization.active.is_(True))
            .order_by(Organization.path)).all()
    by_id = {s.id: s for s in sets}
    orgs = {u.id: u for u in units}
    return office_page(request, "office/criteria.html", office, status=status, sets=sets,
                       by_id=by_id, units=units, orgs=orgs, scales=SCALES,
                       applies=APPLIES_NAMES, forms=forms or {}, done=done)


@router.get("/office/criteria")
def criteria_page(request: Request, uow: UoW, office: OfficeAdmin) -> Response:
    """Criteria sets with their criteria, refinements by unit, and the scales."""
    done = request.query_params.get("done")
    return _render(request, uow, office, done=done if done in ("set", "criterion") else None)


def _int(value: str) -> int:
    return int(value) if value.strip().isdigit() else 0


def _add_set(request: Request, uow: UoW, clock: Clock, office: OfficeUser,
             values: dict[str, str]) -> Response:
    criteria, reasons = parse_lines(values.get("criteria", ""))
    try:
        if reasons:
            raise InvalidInput("bad criteria lines", list(reasons))
        with uow() as session:
            refined = office_service.add_refined_set(
                session, base_id=_int(values.get("base_id", "")),
                organization_id=_int(values.get("organization_id", "")),
                name_zh=values.get("name_zh", ""), name_en=values.get("name_en", ""),
                criteria=criteria, actor=office.user.principal.actor, now=clock.now())
            set_id = refined.id
    except PledgeflowError as exc:
        return _render(request, uow, office, status=422, forms={
            "refine": {"values": values, "reasons": reasons_of(exc)}})
    return RedirectResponse(f"/office/criteria?done=set#set-{set_id}", status_code=303)


@router.post("/office/criteria/refinements")
async def add_refinement(request: Request, uow: UoW, clock: AppClock,
                         office: OfficeForm) -> Response:
    """Add a unit's refinement of a criteria set."""
    values = form_values(await request.form())
    return await run_in_threadpool(_add_set, request, uow, clock, office, values)


def _add_criterion(request: Request, uow: UoW, clock: Clock, office: OfficeUser, set_id: int,
                   values: dict[str, str]) -> Response:
    try:
        with uow() as session:
            office_service.add_criterion(
                session, set_id=set_id, code=values.get("code", "").strip(),
                name_zh=values.get("name_zh", "").strip(),
                name_en=values.get("name_en", "").strip(),
                description_zh=values.get("description_zh", "").strip(),
                actor=office.user.principal.actor, now=clock.now())
    except PledgeflowError as exc:
        return _render(request, uow, office, status=422, forms={
            f"criterion-{set_id}": {"values": values, "reasons": reasons_of(exc)}})
    return RedirectResponse(f"/office/criteria?done=criterion#set-{set_id}", status_code=303)


@router.post("/office/criteria/sets/{set_id}/criteria")
async def add_criterion(set_id: int, request: Request, uow: UoW, clock: AppClock,
                        office: OfficeForm) -> Response:
    """Add a criterion to a unit's refinement."""
    values = form_values(await request.form())
    return await run_in_threadpool(_add_criterion, request, uow, clock, office, set_id, values)
