"""Periods (``/office/periods``): every period with its calendar, and one period's calendar and
rules edited (``/office/periods/{code}``).

A save is checked as a whole (``service.office.update_period``): the dates in order and inside
the period, no overlap with the neighbouring periods, the shortlist's notice fitting before the
commendation day, and the rules through ``CampaignRules``. A refused save shows the form again
with what was typed and every reason; a saved one is an event ``period_updated`` with the
changes.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from models import Event, Period, Person
from service import office as office_service
from service.api.deps import AppClock, UoW
from service.clock import Clock
from service.errors import PledgeflowError
from service.periods import get_period
from service.rules import SCALES, CampaignRules
from service.web.routes.office_home import OfficeAdmin, OfficeForm, OfficeUser, office_page
from service.web.routes.pages import form_values, reasons_of
from service.web.session import PageRoute

router = APIRouter(include_in_schema=False, route_class=PageRoute)

SCOPE_NAMES = {"unit": ("本单位及其上级", "The unit and its superiors"),
               "superior": ("仅上级组织", "Superiors only"),
               "public": ("在党务公开栏公开", "Public, on the bulletin board")}


def _scale_names() -> dict[str, tuple[str, str]]:
    return {code: (" / ".join(o.label_zh for o in scale.options),
                   " / ".join(o.label_en for o in scale.options))
            for code, scale in SCALES.items()}


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def form_of(period: Period) -> dict[str, str]:
    """A period's calendar and effective rules as form values."""
    rules = CampaignRules.model_validate(period.rules or {})
    values = {name: getattr(period, name).isoformat() for name in office_service.CALENDAR_FIELDS}
    for name, value in rules.model_dump().items():
        if isinstance(value, bool):
            values[name] = "on" if value else ""
        elif isinstance(value, tuple | list):
            values[name] = ", ".join(str(v) for v in value)
        else:
            values[name] = _number(value)
    return values


@router.get("/office/periods")
def periods_page(request: Request, uow: UoW, office: OfficeAdmin) -> Response:
    """Every period: status and calendar, each with a link to edit it."""
    with uow() as session:
        periods = list(session.scalars(sa.select(Period).order_by(Period.sequence)))
    return office_page(request, "office/periods.html", office, periods=periods,
                       fields=office_service.CALENDAR_FIELDS,
                       labels=office_service.CALENDAR_LABELS)


def _render(request: Request, uow: UoW, office: OfficeUser, code: str, *,
            values: dict[str, str] | None = None, reasons: list[Any] | None = None,
            saved: str | None = None, status: int = 200) -> Response:
    with uow() as session:
        period = get_period(session, code)
        history = session.execute(
            sa.select(Event, Person.name).outerjoin(Person, Person.id == Event.actor_person_id)
            .where(Event.period_id == period.id, Event.action == "period_updated")
            .order_by(Event.seq.desc()).limit(20)).all()
        return office_page(
            request, "office/period_edit.html", office, status=status, period=period,
            values=values or form_of(period), problems=reasons or [], saved=saved,
            history=history, calendar=office_service.CALENDAR_FIELDS,
            labels=office_service.CALENDAR_LABELS, rule_labels=office_service.RULE_LABELS,
            scales=_scale_names(), scopes=SCOPE_NAMES)


@router.get("/office/periods/{code}")
def period_page(code: str, request: Request, uow: UoW, office: OfficeAdmin) -> Response:
    """One period's calendar and rules, as a form."""
    saved = request.query_params.get("saved")
    return _render(request, uow, office, code, saved=saved if saved in ("1", "0") else None)


def _save(request: Request, uow: UoW, clock: Clock, office: OfficeUser, code: str,
          values: dict[str, str]) -> Response:
    try:
        with uow() as session:
            changes = office_service.update_period(
                session, code, values, actor=office.user.principal.actor, now=clock.now())
    except PledgeflowError as exc:
        return _render(request, uow, office, code, values=values, reasons=reasons_of(exc),
                       status=422)
    return RedirectResponse(f"/office/periods/{code}?saved={'1' if changes else '0'}",
                            status_code=303)


@router.post("/office/periods/{code}")
async def save_period(code: str, request: Request, uow: UoW, clock: AppClock,
                      office: OfficeForm) -> Response:
    """Save the calendar and rules, or show every reason why not (nothing saved)."""
    values = form_values(await request.form())
    return await run_in_threadpool(_save, request, uow, clock, office, code, values)
