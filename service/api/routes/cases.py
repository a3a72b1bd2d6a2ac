"""Cases, their timelines and their pledges — and the pledge actions.

Reads are filtered by what the caller may see (``service.visibility``); every action goes
through ``actions.perform`` and so through the workflow's choke point.
"""

from __future__ import annotations

from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.orm import Session

from models import Case, Event, FulfilmentEntry, Organization, Period, Pledge, PledgeItem
from service.api import actions, problems
from service.api.deps import AppClock, CurrentPrincipal, UoW
from service.api.schemas import (
    MAX_SEQ,
    CaseOut,
    Comment,
    EventOut,
    Page,
    PathId,
    PledgeItemOut,
    PledgeOut,
    QueryId,
    TransitionOut,
)
from service.errors import NotFound
from service.visibility import case_filter, ensure_case_visible
from service.workflow import engine, inputs
from service.workflow.inputs import MAX_ID
from service.workflow.roles import relative_roles

router = APIRouter(prefix="/api/v1", tags=["cases"])
IfMatch = Annotated[str | None, Header(alias="If-Match", description='ETag, e.g. "v3"')]
IdemKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)]
#: What an action through ``actions.perform`` may answer besides 200: not visible (404,
#: anonymous callers included), refused by the workflow — a role that may not act is one of the
#: reasons (409), stale If-Match (412), bad input (422); 403 is kept for a caller of the wrong
#: kind (a person-only route called with a flow's token).
ACTION_PROBLEMS = problems.responses(403, 404, 409, 412, 422)
#: How a route that takes a workflow action answers: the outcome, and the problems.
ACTION = {"response_model": TransitionOut, "responses": ACTION_PROBLEMS}
READ_PROBLEMS = problems.responses(404)


def case_out(session, case: Case, principal) -> CaseOut:  # type: ignore[no-untyped-def]
    out = CaseOut.model_validate(case)
    out.actions = engine.actions_for(session, case, principal.actor)
    return out


@router.get("/cases", response_model=Page[CaseOut], summary="Cases the caller may see")
def list_cases(
    uow: UoW, principal: CurrentPrincipal,
    period: str | None = Query(None, max_length=32, description="Period code, e.g. 2010"),
    stage: str | None = None, status: str | None = None,
    organization_id: QueryId = None, subject_kind: str | None = None,
    after: int = Query(0, ge=0, le=MAX_ID, description="Return cases with id greater than this."),
    limit: int = Query(50, ge=1, le=500),
) -> Page[CaseOut]:
    with uow() as session:
        query = sa.select(Case).where(case_filter(session, principal), Case.id > after)
        if period is not None:
            query = query.join(Period, Period.id == Case.period_id).where(Period.code == period)
        for column, value in ((Case.stage, stage), (Case.status, status),
                              (Case.organization_id, organization_id),
                              (Case.subject_kind, subject_kind)):
            if value is not None:
                query = query.where(column == value)
        rows = list(session.scalars(query.order_by(Case.id).limit(limit + 1)))
        more = len(rows) > limit
        rows = rows[:limit]
        return Page(items=[case_out(session, c, principal) for c in rows],
                    next_after=rows[-1].id if more else None)


@router.get("/cases/{case_id}", response_model=CaseOut, summary="One case (ETag = version)",
            responses=READ_PROBLEMS)
def get_case(case_id: PathId, uow: UoW, principal: CurrentPrincipal) -> JSONResponse:
    with uow() as session:
        case = ensure_case_visible(session, principal, case_id)
        body = case_out(session, case, principal)
        return JSONResponse(body.model_dump(mode="json"),
                            headers={"ETag": actions.etag(case.version)})


@router.get("/cases/{case_id}/events", response_model=Page[EventOut], summary="Timeline",
            responses=READ_PROBLEMS)
def case_events(case_id: PathId, uow: UoW, principal: CurrentPrincipal,
                after: int = Query(0, ge=0, le=MAX_SEQ), limit: int = Query(100, ge=1, le=1000)
                ) -> Response:
    page = events_page(case_id, uow, principal, after=after, limit=limit)
    # serialised once, by pydantic, instead of validated again as the response_model
    return Response(page.model_dump_json(), media_type="application/json")


def events_page(case_id: int, uow: UoW, principal: CurrentPrincipal, *, after: int, limit: int
                ) -> Page[EventOut]:
    """A page of a case's timeline as the caller may see it (the web case page shows it)."""
    with uow() as session:
        case = ensure_case_visible(session, principal, case_id)
        # Plain rows on the connection, not ORM events (nothing here changes them, and
        # nothing is pending to flush): the ORM's execution path costs 50 µs more.
        rows = session.connection().execute(_EVENTS_PAGE, {"case_id": case_id, "after": after,
                                                           "limit": limit + 1}).all()
        more = len(rows) > limit
        rows = rows[:limit]
        sees_voters = _sees_voters(session, case, principal)
        return Page[EventOut](items=[_event_out(e, sees_voters) for e in rows],
                              next_after=rows[-1].seq if more else None)


_EVENT_COLUMNS = tuple(getattr(Event, name) for name in EventOut.model_fields)
_EVENTS_PAGE = (sa.select(*_EVENT_COLUMNS)
                .where(Event.case_id == sa.bindparam("case_id"),
                       Event.seq > sa.bindparam("after"))
                .order_by(Event.seq).limit(sa.bindparam("limit")))  # built once: a hot read


# Events whose actor is an evaluator: who voted (and when) is kept from the subject and from
# fellow evaluators; only those who run the round see it, as on /round/evaluators.
VOTER_EVENTS = frozenset({"cast_ballot", "link_used", "link_opened", "link_issued"})
SEE_VOTERS = frozenset({"office", "auditor", "flow", "superior"})


def _sees_voters(session: Session, case: Case, principal) -> bool:  # type: ignore[no-untyped-def]
    org = session.get(Organization, case.organization_id)
    roles = relative_roles(session, case, org, principal.actor, check_evaluator=False)
    return bool(roles & SEE_VOTERS)


def _event_out(event: sa.Row, sees_voters: bool) -> EventOut:
    out = EventOut.model_validate(event._mapping)  # from a mapping: a third cheaper
    if not sees_voters and event.action in VOTER_EVENTS:
        out.actor_person_id = None
        out.payload = {k: v for k, v in out.payload.items() if k not in ("recipient_id",)}
    return out


def pledge_out(session: Session, case_id: int) -> PledgeOut:
    """A case's pledge with its items and each item's fulfilment ledger (the caller has
    checked that the case is visible); NotFound before the pledge stage opens."""
    pledge = session.scalars(sa.select(Pledge).where(Pledge.case_id == case_id)).first()
    if pledge is None:
        raise NotFound(f"case {case_id} has no pledge yet")
    items = list(session.scalars(sa.select(PledgeItem).where(
        PledgeItem.pledge_id == pledge.id).order_by(PledgeItem.position)))
    ledger = session.scalars(sa.select(FulfilmentEntry).where(
        FulfilmentEntry.pledge_item_id.in_([i.id for i in items]))
        .order_by(FulfilmentEntry.id)).all()
    out = PledgeOut.model_validate(pledge)
    out.items = [PledgeItemOut.model_validate(i) for i in items]
    for item in out.items:
        item.ledger = [e for e in ledger if e.pledge_item_id == item.id]  # type: ignore[misc]
    return out


@router.get("/cases/{case_id}/pledge", response_model=PledgeOut, summary="Pledge and ledger",
            responses=READ_PROBLEMS)
def get_pledge(case_id: PathId, uow: UoW, principal: CurrentPrincipal) -> JSONResponse:
    with uow() as session:
        case = ensure_case_visible(session, principal, case_id)
        out = pledge_out(session, case_id)
        return JSONResponse(out.model_dump(mode="json"),
                            headers={"ETag": actions.etag(case.version)})


@router.put("/cases/{case_id}/pledge", summary="Edit a draft pledge (summary and items)",
            **ACTION)
async def edit_pledge(case_id: PathId, body: inputs.EditPledge, request: Request, uow: UoW,
                      clock: AppClock, principal: CurrentPrincipal, if_match: IfMatch = None,
                      idempotency_key: IdemKey = None) -> JSONResponse:
    return await actions.perform(request, uow, principal, clock, case_id=case_id,
                                 action="edit_pledge", data=body)


def _pledge_action(action: str, summary: str):  # type: ignore[no-untyped-def]
    async def endpoint(case_id: PathId, request: Request, uow: UoW, clock: AppClock,
                       principal: CurrentPrincipal, body: Comment | None = None,
                       if_match: IfMatch = None, idempotency_key: IdemKey = None
                       ) -> JSONResponse:
        return await actions.perform(request, uow, principal, clock, case_id=case_id,
                                     action=action, comment=body.comment if body else None)

    endpoint.__name__ = f"pledge_{action}"
    router.post(f"/cases/{{case_id}}/pledge/{action}", summary=summary, **ACTION)(endpoint)


for _action, _summary in (
    ("submit", "Submit the pledge to the superior"),
    ("withdraw", "Withdraw a submitted pledge (the submitter, before a decision)"),
    ("approve", "Approve a submitted pledge (the superior)"),
    ("return", "Return a submitted pledge with a comment (the superior)"),
    ("publish", "Post an approved pledge for public notice"),
    ("close_notice", "Close the public notice when its window has passed"),
):
    _pledge_action(_action, _summary)


@router.post("/cases/{case_id}/pledge/items/{item_id}/fulfilment",
             summary="Record fulfilment of a pledge item, with evidence", **ACTION)
async def record_fulfilment(case_id: PathId, item_id: PathId, body: inputs.FulfilmentIn,
                            request: Request, uow: UoW, clock: AppClock,
                            principal: CurrentPrincipal,
                            if_match: IfMatch = None, idempotency_key: IdemKey = None
                            ) -> JSONResponse:
    data = inputs.RecordFulfilment(item_id=item_id, **body.model_dump())
    return await actions.perform(request, uow, principal, clock, case_id=case_id,
                                 action="record_fulfilment", data=data)
