"""The case page's forms: decisions and other plain actions, fulfilment updates with evidence,
reviews, acknowledgements with a rectification plan, ballots, and resolving objections.

Every form carries the session's CSRF token and goes through the choke point as the signed-in
person. Success redirects back to the case page (POST/redirect/GET); a refusal shows the case
page again, HTTP 422, with what was typed and every reason — nothing written.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from service.api.deps import AppClock, UoW
from service.clock import Clock
from service.errors import InvalidInput, PledgeflowError, Reason
from service.visibility import ensure_case_visible
from service.web.routes.pages import act, count, form_values, reasons_of
from service.web.routes.pages_case import render_case, simple_actions
from service.web.session import CsrfChecked, PageRoute, PageUser
from service.workflow import engine, inputs
from service.workflow.roles import Actor

router = APIRouter(include_in_schema=False, route_class=PageRoute)

#: Chooses the action inside the transaction (from the case's state) and returns it.
Chooser = Callable[[Session], str]


def _refuse(code: str, message: str) -> InvalidInput:
    return InvalidInput(message, [Reason(code, message)])


def _run(request: Request, uow: UoW, clock: Clock, user: PageUser, case_id: int, *,
         form: str, values: dict[str, str], anchor: str, choose: Chooser | str,
         comment: str | None = None, data: Any = None, version: str = "") -> Response:
    """Apply one action; redirect to the case on success, or show the form again (422)."""
    try:
        with uow() as session:
            action = choose if isinstance(choose, str) else choose(session)
            act(session, user, clock, case_id=case_id, action=action, comment=comment,
                data=data, expected_version=int(version) if version.isdigit() else None)
    except PledgeflowError as exc:
        forms = {form: {"values": values, "reasons": reasons_of(exc)}}
        return render_case(request, uow, user, case_id, forms=forms, status=422)
    count(request, action)
    return RedirectResponse(f"/cases/{case_id}?done={action}#{anchor}", status_code=303)


def _case_actions(session: Session, user: PageUser, case_id: int) -> tuple[str, str, list[str]]:
    case = ensure_case_visible(session, user.principal, case_id)
    actor = Actor(person_id=user.principal.person_id)
    return case.stage, case.status, engine.actions_for(session, case, actor)


@router.post("/cases/{case_id}/act")
async def plain_action(case_id: int, request: Request, uow: UoW, clock: AppClock,
                       user: CsrfChecked) -> Response:
    """Approve, return (with a comment), withdraw, publish, submit … — the buttons."""
    values = form_values(await request.form())
    wanted = values.get("action", "")
    form = "decide" if wanted in ("approve", "return") else "act"

    def choose(session: Session) -> str:
        stage, status, actions = _case_actions(session, user, case_id)
        if wanted not in ("approve", "return", *simple_actions(stage, status, actions)):
            raise _refuse("not_allowed_in_state",
                          f"{wanted!r} is not something you can do here now")
        return wanted

    return await run_in_threadpool(
        _run, request, uow, clock, user, case_id, form=form, values=values, anchor="actions",
        choose=choose, comment=values.get("comment", "").strip() or None,
        version=values.get("version", ""))


@router.post("/cases/{case_id}/items/{item_id}/fulfilment")
async def fulfilment(case_id: int, item_id: int, request: Request, uow: UoW, clock: AppClock,
                     user: CsrfChecked) -> Response:
    """A ledger line on one item: status, evidence and a note."""
    values = form_values(await request.form())
    data = {"item_id": item_id, "status": values.get("status", ""),
            "evidence": values.get("evidence", ""), "note": values.get("note", "")}
    return await run_in_threadpool(
        _run, request, uow, clock, user, case_id, form=f"fulfilment-{item_id}", values=values,
        anchor=f"item-{item_id}", choose="record_fulfilment", data=data)


@router.post("/cases/{case_id}/review")
async def review(case_id: int, request: Request, uow: UoW, clock: AppClock,
                 user: CsrfChecked) -> Response:
    """The scheduled review while the review stage is open; an ad hoc review otherwise."""
    values = form_values(await request.form())
    data = {"achievements": values.get("achievements", ""),
            "problems": values.get("problems", ""), "direction": values.get("direction", ""),
            "ratings": {k.removeprefix("rating."): v for k, v in values.items()
                        if k.startswith("rating.") and v}}

    def choose(session: Session) -> str:
        stage, status, _ = _case_actions(session, user, case_id)
        return "record_review" if (stage, status) == ("review", "open") \
            else "record_ad_hoc_review"

    return await run_in_threadpool(
        _run, request, uow, clock, user, case_id, form="review", values=values,
        anchor="reviews", choose=choose, data=data)


@router.post("/cases/{case_id}/acknowledge")
async def acknowledge(case_id: int, request: Request, uow: UoW, clock: AppClock,
                      user: CsrfChecked) -> Response:
    """The subject acknowledges the scheduled review with a rectification plan."""
    values = form_values(await request.form())
    data = {"rectification_plan": values.get("rectification_plan", "")}
    return await run_in_threadpool(
        _run, request, uow, clock, user, case_id, form="acknowledge", values=values,
        anchor="reviews", choose="acknowledge_review", data=data)


@router.post("/cases/{case_id}/ballot")
async def ballot(case_id: int, request: Request, uow: UoW, clock: AppClock,
                 user: CsrfChecked) -> Response:
    """An assigned evaluator's anonymous ballot."""
    values = form_values(await request.form())
    answers = {k.removeprefix("answer."): v for k, v in values.items()
               if k.startswith("answer.") and v}
    return await run_in_threadpool(
        _run, request, uow, clock, user, case_id, form="ballot", values=values,
        anchor="evaluation", choose="cast_ballot", data={"answers": answers})


@router.post("/cases/{case_id}/objections/{objection_id}")
async def resolve_objection(case_id: int, objection_id: int, request: Request, uow: UoW,
                            clock: AppClock, user: CsrfChecked
                            ) -> Response:
    """Uphold or dismiss an open objection, saying why."""
    values = form_values(await request.form())
    decision = values.get("decision", "")

    def choose(session: Session) -> str:
        if decision not in ("uphold", "dismiss"):
            raise _refuse("invalid_field", "choose to uphold or to dismiss the objection")
        return f"{decision}_objection"

    return await run_in_threadpool(
        _run, request, uow, clock, user, case_id, form=f"objection-{objection_id}",
        values=values, anchor="objections", choose=choose,
        comment=values.get("comment", "").strip() or None,
        data=inputs.ResolveObjection(objection_id=objection_id))


def _back_to_case(request: Request) -> Response:
    """A form's address opened with GET (e.g. the language switch on a refused form): the
    case page, in the language asked for."""
    case_id = request.path_params["case_id"]
    lang = request.query_params.get("lang")
    query = f"?lang={lang}" if lang in ("zh", "en") else ""
    return RedirectResponse(f"/cases/{case_id}{query}", status_code=303)


for _path in ("act", "items/{item_id}/fulfilment", "review", "acknowledge", "ballot",
              "objections/{objection_id}"):
    router.add_api_route(f"/cases/{{case_id}}/{_path}", _back_to_case, methods=["GET"])
