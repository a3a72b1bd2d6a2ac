"""What every page module shares: rendering with the signed-in person, local times, refusal
reasons, acting through the choke point — and ``GET /``.

The page modules: ``pages_auth`` (sign in and out), ``pages_inbox`` (inbox and the batch
screen), ``pages_case`` (the case page and its forms), ``pages_pledge`` (the pledge editor),
``pages_bulletin`` (the public bulletin board). All of them use ``PageRoute``, so a refusal is a
page (303 to sign in, 403, 404), never problem+json.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel
from sqlalchemy.orm import Session

from models import CriteriaSet, Criterion
from service.clock import CAMPAIGN_TZ, Clock
from service.errors import PledgeflowError, Reason, StaleVersion
from service.visibility import ensure_case_visible
from service.web import i18n
from service.web.i18n import pick_lang
from service.web.render import page
from service.web.session import PRIVATE, PageRoute, PageUser, current_user
from service.workflow import engine
from service.workflow.effects import CRITERIA_BY_KIND

__all__ = ["router", "show", "reasons_of", "act", "count", "form_values", "criteria_sets",
           "local_time", "deadline"]

router = APIRouter(include_in_schema=False, route_class=PageRoute)


def local_time(value: datetime | None) -> str:
    """An instant as campaign-calendar time (Asia/Shanghai), to the minute."""
    return value.astimezone(CAMPAIGN_TZ).strftime("%Y-%m-%d %H:%M") if value else "—"


def deadline(value: datetime | None) -> str:
    """A deadline; one that falls at local midnight reads as 24:00 of the day before."""
    if value is None:
        return "—"
    local = value.astimezone(CAMPAIGN_TZ)
    if (local.hour, local.minute, local.second) == (0, 0, 0):
        return f"{(local - timedelta(days=1)):%Y-%m-%d} 24:00"
    return f"{local:%Y-%m-%d %H:%M}"


def local_date(value: date | None) -> str:
    return value.isoformat() if value else "—"


def _reason_label(code: str, lang: str) -> str | None:
    names = i18n.REASON_NAMES.get(code)
    return None if names is None else names[0 if lang == "zh" else 1]


def show(request: Request, template: str, user: PageUser | None, *, status: int = 200,
         headers: dict[str, str] | None = None, **context: Any) -> HTMLResponse:
    """Render a page for this person (or the public) in the page language."""
    lang = pick_lang(request, user.lang if user else None)
    return page(request, template, lang, status=status,
                headers={**(PRIVATE if user else {}), **(headers or {})}, user=user,
                local_time=local_time, deadline=deadline, local_date=local_date,
                reason_label=_reason_label,
                fulfilment_name=lambda k, lg: i18n.label(i18n.FULFILMENT_NAMES, k, lg),
                grade_name=lambda k, lg: i18n.label(i18n.GRADE_NAMES, k, lg), **context)


def reasons_of(exc: PledgeflowError) -> list[Reason]:
    """Every reason a refusal gives (its message alone when it lists none)."""
    if isinstance(exc, StaleVersion):
        return [Reason("stale", exc.message)]
    return list(exc.reasons) or [Reason(exc.type_slug, exc.message)]


def form_values(form: Any) -> dict[str, str]:
    """A submitted form as plain strings (files are not expected and are dropped)."""
    return {k: v for k, v in form.items() if isinstance(v, str)}


def act(session: Session, user: PageUser, clock: Clock, *, case_id: int,
        action: str, comment: str | None = None,
        data: dict[str, Any] | BaseModel | None = None,
        expected_version: int | None = None) -> engine.Outcome:
    """One action by the signed-in person on a case they may see, through the choke point."""
    ensure_case_visible(session, user.principal, case_id)
    return engine.apply(session, case_id=case_id, action=action,
                        actor=user.principal.actor, clock=clock,
                        expected_version=expected_version, comment=comment, data=data)


def count(request: Request, action: str, n: int = 1) -> None:
    """Count committed transitions in the service metrics (after the commit, never before)."""
    if n:
        request.app.state.metrics.transitions.labels(action=action).inc(n)


def criteria_sets(session: Session, subject_kind: str) -> list[dict[str, Any]]:
    """The criteria a case's pledge items may name (its criteria set and the six carriers),
    grouped by set: ``[{code, name_zh, name_en, criteria: [Criterion, …]}, …]``."""
    codes = CRITERIA_BY_KIND[subject_kind]
    rows = session.execute(
        sa.select(CriteriaSet, Criterion)
        .join(Criterion, Criterion.criteria_set_id == CriteriaSet.id)
        .where(CriteriaSet.code.in_(codes))
        .order_by(CriteriaSet.id, Criterion.position, Criterion.id)).all()
    groups: dict[str, dict[str, Any]] = {}
    for criteria_set, criterion in rows:
        group = groups.setdefault(criteria_set.code, {
            "code": criteria_set.code, "name_zh": criteria_set.name_zh,
            "name_en": criteria_set.name_en, "criteria": []})
        group["criteria"].append(criterion)
    return sorted(groups.values(), key=lambda g: codes.index(g["code"]))


@router.get("/")
async def home(request: Request) -> Response:
    """Signed in: the inbox; otherwise the public bulletin board."""
    user = await current_user(request)
    return RedirectResponse("/inbox" if user else "/bulletin", status_code=303)
