"""Action-link pages: ``GET /a/{token}`` confirms, ``POST /a/{token}`` acts.

GET (and HEAD) never act, however often a mail scanner opens the link: they show what the link
does, for whom, and the case's current state; the first opening is noted in the history. POST
acts through the choke point as the link's recipient, bound to the case version the email was
about, and uses the link up. Used, expired, superseded or out-of-date links get a page saying
what happened and when. Pages carry ``Referrer-Policy: no-referrer`` so the token never leaks.
The POST form has no CSRF field: the token in its URL is the capability (see ``web.session``).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from models import Criterion, EvaluationRound, Organization, Period, Person
from notifications import links
from service import history
from service.api.deps import AppClock, UoW
from service.errors import PledgeflowError
from service.rules import SCALES
from service.web.i18n import pick_lang
from service.web.render import page
from service.workflow import engine
from service.workflow.roles import Actor

router = APIRouter(include_in_schema=False)
NO_LEAKS = {"Referrer-Policy": "no-referrer", "Cache-Control": "no-store",
            "X-Robots-Tag": "noindex"}
FIELDS: dict[str, tuple[str, ...]] = {
    "return": ("comment",), "record_review": ("achievements", "problems", "direction"),
    "acknowledge_review": ("rectification_plan",), "approve": ("comment",),
}


def _facts(session, state: links.LinkState) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    case = state.case
    if case is None:
        return {}
    org = session.get(Organization, case.organization_id)
    member = session.get(Person, case.person_id) if case.person_id else None
    period = session.get(Period, case.period_id)
    facts: dict[str, Any] = {"unit_zh": org.name_zh, "unit_en": org.name_en,
                             "member": member.name if member else None,
                             "period_zh": period.name_zh, "period_en": period.name_en,
                             "stage": case.stage, "status": case.status, "ballot": None}
    if state.link is not None and state.link.action == "cast_ballot":
        round_ = session.scalars(sa.select(EvaluationRound).where(
            EvaluationRound.case_id == case.id)).first()
        if round_ is not None:
            names = dict(session.execute(sa.select(Criterion.code, Criterion.name_zh)
                                         .where(Criterion.code.in_(round_.criteria))).all())
            names_en = dict(session.execute(sa.select(Criterion.code, Criterion.name_en)
                                            .where(Criterion.code.in_(round_.criteria))).all())
            facts["ballot"] = {"criteria": [(c, names.get(c, c), names_en.get(c, c))
                                            for c in round_.criteria],
                               "options": SCALES[round_.scale].options}
    return facts


def _show(request: Request, uow: UoW, clock: AppClock, token: str) -> HTMLResponse:
    with uow() as session:
        now = clock.now()
        state = links.resolve(session, token, now, lock=True)
        if state.link is not None and state.link.opened_at is None:
            state.link.opened_at = now
            history.append(session, history.EventDraft(
                action="link_opened", actor=Actor(flow="notifications"), occurred_at=now,
                case_id=state.link.case_id, period_id=state.case.period_id if state.case else None,
                payload={"link_id": state.link.id}))
        lang = pick_lang(request, state.recipient.lang if state.recipient else None)
        return page(request, "link.html", lang, state=state, facts=_facts(session, state),
                    fields=FIELDS.get(state.link.action, ()) if state.link else (),
                    values={}, reasons=[], done=None, headers=NO_LEAKS,
                    status=200 if state.usable else 404 if state.link is None else 410)


@router.api_route("/a/{token}", methods=["GET", "HEAD"])
async def confirm(token: str, request: Request, uow: UoW, clock: AppClock) -> HTMLResponse:
    """The confirmation page; changes nothing about the case."""
    return await run_in_threadpool(_show, request, uow, clock, token)


@router.post("/a/{token}")
async def act(token: str, request: Request, uow: UoW, clock: AppClock) -> HTMLResponse:
    """Act as the link's recipient, through the choke point; the link is then used up."""
    form = await request.form()
    values = {k: str(v) for k, v in form.items()}
    return await run_in_threadpool(_act, request, uow, clock, token, values)


def _data_for(action: str, values: dict[str, str]) -> dict[str, Any] | None:
    if action == "cast_ballot":
        return {"answers": {k.removeprefix("answer."): v for k, v in values.items()
                            if k.startswith("answer.") and v}}
    if action == "record_review":
        return {k: values.get(k, "") for k in FIELDS[action]}
    if action == "acknowledge_review":
        return {"rectification_plan": values.get("rectification_plan", "")}
    return None


def _act(request: Request, uow: UoW, clock: AppClock, token: str,
         values: dict[str, str]) -> HTMLResponse:
    reasons: list[str] = []
    try:
        with uow() as session:
            now = clock.now()
            state = links.resolve(session, token, now, lock=True)
            lang = pick_lang(request, state.recipient.lang if state.recipient else None)
            if not state.usable:
                return page(request, "link.html", lang, state=state, facts=_facts(session, state),
                            fields=(), values={}, reasons=[], done=None, headers=NO_LEAKS,
                            status=404 if state.link is None else 410)
            link = state.link
            outcome = engine.apply(
                session, case_id=link.case_id, action=link.action,
                actor=Actor(person_id=link.recipient_person_id), clock=clock,
                expected_version=None if link.action == "cast_ballot" else link.case_version,
                comment=values.get("comment") or None, data=_data_for(link.action, values))
            link.used_at = now
            history.append(session, history.EventDraft(
                action="link_used", actor=Actor(person_id=link.recipient_person_id),
                occurred_at=now, case_id=link.case_id, period_id=state.case.period_id,
                payload={"link_id": link.id, "event_seq": outcome.event_seq}))
            session.refresh(state.case)
            return page(request, "link.html", lang, state=state, facts=_facts(session, state),
                        fields=(), values={}, reasons=[], done=outcome, headers=NO_LEAKS)
    except PledgeflowError as exc:
        reasons = [r.message for r in exc.reasons] or [exc.message]
    with uow() as session:  # the attempt rolled back; show the form again with what was typed
        state = links.resolve(session, token, clock.now())
        lang = pick_lang(request, state.recipient.lang if state.recipient else None)
        return page(request, "link.html", lang, state=state, facts=_facts(session, state),
                    fields=FIELDS.get(state.link.action, ()) if state.link else (),
                    values=values, reasons=reasons, done=None, headers=NO_LEAKS, status=422)
