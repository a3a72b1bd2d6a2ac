"""The campaign office's pages: who may see them, how they render — and ``GET /office``.

- **Admins** of the campaign office see every office page and its forms.
- **Auditors** read: the landing page, the audit page and the dashboards with their
  downloads. No form that acts is shown to them, and any office form they post is a 403 page.
- Anyone else signed in gets a 403 page; nobody signed in goes to the sign-in page.

The office modules: ``office_periods`` (calendars and rules), ``office_import`` (CSV import),
``office_criteria``, ``office_evaluators``, ``office_desk`` (the commendation desk),
``office_spot_checks``, ``office_audit`` and ``office_dashboard`` (figures and downloads).
Every form posts with the session's CSRF token; a refused form comes back (422) with what was
typed and every reason, and nothing written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from models import Organization, Period, Position
from service.api.deps import UoW
from service.errors import Forbidden, Reason
from service.web import i18n
from service.web.i18n import pick_lang
from service.web.render import page
from service.web.routes.pages import deadline, local_date, local_time
from service.web.session import PRIVATE, CsrfChecked, PageRoute, PageUser, SignedIn

__all__ = ["router", "OfficeUser", "OfficeViewer", "OfficeAdmin", "OfficeForm", "office_page",
           "say", "REASON_NAMES"]

router = APIRouter(include_in_schema=False, route_class=PageRoute)

#: Names of refusal reasons the office pages meet (besides ``i18n.REASON_NAMES``).
REASON_NAMES = {
    "recusal": ("须回避：您与候选对象属同一单位或企业", "Recusal: the candidate is from your own "
                "unit or enterprise"),
    "quota_full": ("表彰名额已满", "The quota is already filled"),
    "not_shortlisted": ("只有进入推荐名单的才能予以表彰", "Only shortlisted candidates can be "
                        "commended"),
    "notice_running": ("推荐名单公示期尚未结束", "The public notice is still running"),
    "no_open_notice": ("推荐名单尚未公示", "The shortlist is not under public notice"),
    "open_objection": ("还有未处理的异议", "Objections are unresolved"),
    "already_posted": ("推荐名单已经公示", "The shortlist is already posted"),
    "unknown_person": ("没有这个人员", "No such person"),
    "round_closed": ("测评已结束，不能再调整评议人", "The round is closed"),
    "already_voted": ("已投票的评议人不能移除", "Evaluators who voted cannot be removed"),
}


@dataclass(frozen=True)
class OfficeUser:
    """A signed-in member of the campaign office: an ``admin`` or an ``auditor``."""

    user: PageUser
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def person_id(self) -> int:
        assert self.user.principal.person_id is not None
        return self.user.principal.person_id


def _role_of(request: Request, person_id: int) -> str | None:
    with request.app.state.session_factory() as session:
        roles = set(session.execute(
            sa.select(Position.role, Organization.kind)
            .join(Organization, Organization.id == Position.organization_id)
            .where(Position.person_id == person_id, Position.role.in_(("admin", "auditor")))))
    if ("admin", "campaign_office") in roles:
        return "admin"
    return "auditor" if any(role == "auditor" for role, _ in roles) else None


async def _office_user(request: Request, user: PageUser) -> OfficeUser:
    if not hasattr(request.state, "office_role"):
        assert user.principal.person_id is not None
        request.state.office_role = await run_in_threadpool(_role_of, request,
                                                            user.principal.person_id)
    if request.state.office_role is None:
        raise Forbidden("only the campaign office and auditors use the office pages")
    return OfficeUser(user, request.state.office_role)


async def require_viewer(request: Request, user: SignedIn) -> OfficeUser:
    """An office admin or an auditor (pages that only read)."""
    return await _office_user(request, user)


async def require_admin(request: Request, user: SignedIn) -> OfficeUser:
    """An office admin (pages whose purpose is to act)."""
    office = await _office_user(request, user)
    if not office.is_admin:
        raise Forbidden("auditors read; only campaign-office admins act")
    return office


async def require_admin_form(request: Request, user: CsrfChecked) -> OfficeUser:
    """An office admin's form, its CSRF token checked."""
    return await require_admin(request, user)


OfficeViewer = Annotated[OfficeUser, Depends(require_viewer)]
OfficeAdmin = Annotated[OfficeUser, Depends(require_admin)]
OfficeForm = Annotated[OfficeUser, Depends(require_admin_form)]


def say(reasons: Sequence[Reason], lang: str) -> list[tuple[str, str | None]]:
    """Reasons as (sentence in the page language, English detail or None) for the page."""
    out: list[tuple[str, str | None]] = []
    for r in reasons:
        zh = getattr(r, "message_zh", "")
        if lang == "zh" and zh:
            out.append((zh, None))
            continue
        names = REASON_NAMES.get(r.code) or i18n.REASON_NAMES.get(r.code)
        if lang == "zh":
            out.append((names[0] if names else "未能完成", r.message))
        else:
            out.append((r.message, None))
    return out


def _pct(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value * 100:.{digits}f}%"


def office_page(request: Request, template: str, office: OfficeUser, *, status: int = 200,
                headers: dict[str, str] | None = None, **context: Any) -> HTMLResponse:
    """Render an office page for this admin or auditor, in the page language."""
    lang = pick_lang(request, office.user.lang)
    return page(request, template, lang, status=status, headers={**PRIVATE, **(headers or {})},
                user=office.user, office=office, local_time=local_time, deadline=deadline,
                local_date=local_date, pct=_pct, say=lambda rs: say(rs, lang), **context)


@router.get("/office")
def office_home(request: Request, uow: UoW, office: OfficeViewer) -> Response:
    """What the office can do, and each period's pages."""
    with uow() as session:
        periods = list(session.scalars(sa.select(Period).order_by(Period.sequence)))
        session.expunge_all()
    return office_page(request, "office/home.html", office, periods=periods)
