"""The case page (``/cases/{id}``): stage, status and deadline; the timeline; the pledge with its
items and fulfilment ledger; reviews; the evaluation round and its announced results; open
objections — and forms for exactly the actions this person may take now
(``engine.actions_for``). The forms post to ``pages_forms``; a refused form comes back here with
what was typed and every reason.

Reads reuse the JSON API's queries (timeline, reviews, objections, pledge, round), so the page
shows what the API would show this person, and nothing more. A case the person may not see is a
404 page, as if it did not exist.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from models import Organization, Period, Person
from service.api.deps import UoW
from service.api.routes.bulk import SELECTION_ACTIONS
from service.api.routes.cases import case_out, events_page, pledge_out
from service.api.routes.evaluation import _round_of, _round_out
from service.api.routes.objections import list_objections
from service.api.routes.reviews import list_reviews
from service.errors import NotFound
from service.rules import SCALES
from service.visibility import ensure_case_visible
from service.web.routes.pages import criteria_sets, show
from service.web.session import PageRoute, PageUser, SignedIn
from service.workflow import table
from service.workflow.effects import ROUND_CRITERIA
from service.workflow.guards import REVIEW_GRADES

__all__ = ["router", "case_view", "render_case", "simple_actions"]

router = APIRouter(include_in_schema=False, route_class=PageRoute)

#: Actions with a form of their own on the page (everything else is a plain button).
OWN_FORMS = frozenset({"edit_pledge", "record_fulfilment", "record_review",
                       "record_ad_hoc_review", "acknowledge_review", "cast_ballot",
                       "uphold_objection", "dismiss_objection", "approve", "return"})
#: Timeline entries about email links: operational, and a ballot link's use would say who voted.
HIDDEN_EVENTS = frozenset({"link_issued", "link_opened", "link_used"})


def simple_actions(case_stage: str, case_status: str, actions: list[str]) -> list[str]:
    """The allowed actions that take nothing but an optional comment (a button each)."""
    plain = {t.action for t in table.actions_from(case_stage, case_status) if t.input is None}
    return [a for a in actions if a in plain and a not in OWN_FORMS
            and a not in SELECTION_ACTIONS]


def _details(uow: UoW, user: PageUser, case_id: int) -> dict[str, Any]:
    """Everything the page shows, read in one transaction."""
    with uow() as session:
        case = ensure_case_visible(session, user.principal, case_id)
        out = case_out(session, case, user.principal)
        org = session.get(Organization, case.organization_id)
        period = session.get(Period, case.period_id)
        try:
            pledge = pledge_out(session, case_id)
        except NotFound:
            pledge = None
        try:
            round_ = _round_out(session, case, _round_of(session, case_id), user.principal)
        except NotFound:
            round_ = None
        sets = criteria_sets(session, case.subject_kind)
        member = session.get(Person, case.person_id) if case.person_id else None
        return {"case": out, "org": (org.name_zh, org.name_en), "member": member.name
                if member else None, "period": (period.name_zh, period.name_en),
                "pledge": pledge, "round": round_, "criteria_sets": sets,
                "scale": SCALES.get(round_.scale) if round_ else None}


def _names(uow: UoW, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    with uow() as session:
        return dict(session.execute(sa.select(Person.id, Person.name)
                                    .where(Person.id.in_(sorted(ids)))).all())


def case_view(uow: UoW, user: PageUser, case_id: int) -> dict[str, Any]:
    """The page's context for this person (NotFound when they may not see the case)."""
    principal = user.principal
    events = [e for e in events_page(case_id, uow, principal, after=0, limit=1000).items
              if e.action not in HIDDEN_EVENTS]
    reviews = list_reviews(case_id, uow, principal)
    objections = list_objections(case_id, uow, principal)
    view = _details(uow, user, case_id)
    pledge = view["pledge"]
    people = {e.actor_person_id for e in events if e.action != "cast_ballot"}
    people |= {r.reviewer_id for r in reviews} | {r.acknowledged_by_id for r in reviews}
    if pledge is not None:
        people |= {pledge.submitted_by_id, pledge.approved_by_id}
        people |= {i.owner_id for i in pledge.items}
        people |= {entry.recorded_by_id for i in pledge.items for entry in i.ledger}
    case = view["case"]
    by_id = {c.id: c for group in view["criteria_sets"] for c in group["criteria"]}
    rating_set = next((g for g in view["criteria_sets"]
                       if g["code"] == ROUND_CRITERIA[case.subject_kind]), None)
    actions = case.actions
    return {**view, "events": events, "reviews": reviews, "objections": objections,
            "names": _names(uow, {p for p in people if p is not None}),
            "criterion_of": by_id, "rating_criteria": rating_set["criteria"] if rating_set else [],
            "grades": REVIEW_GRADES, "actions": actions,
            "plain_actions": simple_actions(case.stage, case.status, actions),
            "review_action": next((a for a in ("record_review", "record_ad_hoc_review")
                                   if a in actions), None),
            "open_objections": [o for o in objections if o.status == "open"]}


def render_case(request: Request, uow: UoW, user: PageUser, case_id: int, *,
                forms: dict[str, dict[str, Any]] | None = None, done: str | None = None,
                status: int = 200) -> HTMLResponse:
    """The case page; ``forms`` brings back a refused form's typed values and reasons."""
    view = case_view(uow, user, case_id)
    return show(request, "case.html", user, status=status, forms=forms or {}, done=done,
                now=request.app.state.clock.now(), **view)


@router.get("/cases/{case_id}")
async def case_page(case_id: int, request: Request, uow: UoW,
                    user: SignedIn) -> Response:
    """The case as this person may see it, with the actions they may take now."""
    done = request.query_params.get("done")
    done = done if done in {t.action for t in table.TRANSITIONS} else None
    return await run_in_threadpool(render_case, request, uow, user, case_id, done=done)
