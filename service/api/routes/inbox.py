"""The caller's inbox: the cases waiting on *them* now, overdue first.

Two steps, so that the inbox of a committee secretary does not judge every case of the
enterprise one by one:

1. SQL narrows to cases where the caller plausibly holds a role whose task is due in the
   case's state — derived from the transition table, not hand-listed: their own member case
   and the unit cases where they are staff (subject); unit cases directly below the
   organizations they lead, and member cases of the organizations they lead (superior — the
   same people ``service.directory.audience("superior")`` would notify); open rounds where
   they have not voted yet (evaluator); and, for campaign-office admins, the states where the
   office alone decides (office).
2. ``engine.actions_for`` — the choke point's own role check — says what they may do there.

A case is in the inbox when one of those actions is a *task*. Not tasks: actions a role may take
at any time (ad hoc reviews, fulfilment updates, withdrawing, adjusting a shortlist). Never
listed: the scheduled steps the flows take (the office may step in through ``/cases``, but
nothing waits on it), and resolving objections when no objection is open.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import NamedTuple

import sqlalchemy as sa
from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session, aliased

from models import (
    Case,
    EvaluationRound,
    EvaluatorAssignment,
    Objection,
    Organization,
    Person,
    Position,
)
from service.accounts import Principal, require_person
from service.api import problems
from service.api.deps import AppClock, CurrentPrincipal, UoW
from service.api.schemas import CaseOut
from service.visibility import case_filter
from service.workflow import engine, table
from service.workflow.roles import LEADERS, UNIT_STAFF, Actor, Standing, positions_of

router = APIRouter(prefix="/api/v1", tags=["inbox"])

#: Actions a role may take at any time; they never put a case in an inbox by themselves.
OPTIONAL = frozenset({"record_ad_hoc_review", "record_fulfilment", "withdraw",
                      "adjust_nomination"})
#: Actions that only make sense while an objection is open.
RESOLVE = frozenset({"uphold_objection", "dismiss_objection"})


def _task_states(role: str) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """(states where ``role`` has a task, states where its only task is resolving an
    objection), read off the transition table."""
    always: set[tuple[str, str]] = set()
    if_objection: set[tuple[str, str]] = set()
    for t in table.TRANSITIONS:
        if role not in t.roles or t.action in OPTIONAL or (role == "office" and "flow" in t.roles):
            continue
        for status in t.sources:
            (if_objection if t.action in RESOLVE else always).add((t.stage, status))
    return always, if_objection - always


TASK_STATES = {role: _task_states(role) for role in ("subject", "superior", "evaluator", "office")}
#: Actions only the flows and the office take (the office as a stand-in for a flow).
SCHEDULED = frozenset(t.action for t in table.TRANSITIONS
                      if "flow" in t.roles and not (t.roles - {"flow", "office"}))


class InboxItem(BaseModel):
    case: CaseOut
    organization_name_zh: str
    organization_name_en: str
    member_name: str | None = None
    actions: list[str] = Field(description="What the caller may do on this case now (the "
                                           "flows' scheduled steps are left out).")
    due_at: datetime | None
    overdue: bool


class InboxPage(BaseModel):
    items: list[InboxItem]
    total: int = Field(description="Items in the whole inbox (all pages).")
    offset: int
    limit: int


@router.get("/inbox", response_model=InboxPage,
            summary="What the caller must act on, overdue first",
            responses=problems.responses(403))
def inbox(uow: UoW, clock: AppClock, principal: CurrentPrincipal,
          limit: int = Query(50, ge=1, le=200), offset: int = Query(0, ge=0)) -> Response:
    """The caller's tasks: overdue first, then by due date (none last), then by case id."""
    page = inbox_page_for(uow, clock, principal, limit=limit, offset=offset)
    # serialised once, rather than validated again on the way out as a response_model
    return Response(page.model_dump_json(), media_type="application/json")


def inbox_page_for(uow: UoW, clock: AppClock, principal: CurrentPrincipal, *, limit: int,
                   offset: int) -> InboxPage:
    """A page of the caller's inbox (the route's work; the web inbox renders it)."""
    me = require_person(principal)  # 401 anonymous; 403 for a flow (it has no inbox)
    now = clock.now()
    with uow() as session:
        candidates = _candidates(session, principal, me)
        items = _with_tasks(session, candidates, me)
        items.sort(key=lambda it: (not _overdue(it[0].due_at, now), it[0].due_at is None,
                                   it[0].due_at or now, it[0].id))
        page = items[offset:offset + limit]
        # What CaseOut shows and the member's name, only for the page's cases, as plain rows
        # like the candidates
        cases = {c.id: c for c in session.connection().execute(_PAGE_CASES, {
            "ids": [row.id for row, _ in page]})} if page else {}
        return InboxPage(total=len(items), offset=offset, limit=limit, items=[
            _item(row, cases[row.id], actions, now) for row, actions in page])


_CASE_OUT_COLUMNS = [getattr(Case, name) for name in CaseOut.model_fields if name != "actions"]
_PAGE_CASES = (sa.select(*_CASE_OUT_COLUMNS, Person.name.label("member_name"))
               .outerjoin(Person, Person.id == Case.person_id)
               .where(Case.id.in_(sa.bindparam("ids", expanding=True))))  # built once


def _with_tasks(session: Session, candidates: list[Candidate], me: int
                ) -> list[tuple[Candidate, list[str]]]:
    """The candidates on which the caller has a task, with what they may do (step 2).

    ``actions_for`` depends on the case only through its state, subject kind, organization,
    whether it is the caller's own member case and whether the caller is assigned to its
    round; cases alike in all of these (and in having an open objection or not) share one
    call. The organization enters only through how it stands to the caller's own
    organizations (``_relation``), so the hundreds of units below one secretary share a
    handful of calls rather than one each."""
    actor = Actor(person_id=me)
    mine = positions_of(session, me)
    mine_ids = {p.organization_id for p in mine}
    tasks: dict[tuple, list[str] | None] = {}  # per group of alike cases; None: no task
    items: list[tuple[Candidate, list[str]]] = []
    for row in candidates:
        key = (row.stage, row.status, row.subject_kind,
               _relation(row.organization_id, row.parent_id, row.path, mine, mine_ids),
               row.person_id == me, row.assigned, row.open_objection)
        if key not in tasks:
            org = _Org(row.organization_id, row.parent_id, row.path)
            actions = [a for a in engine.actions_for(session, row, actor, org)
                       if a not in SCHEDULED and (a not in RESOLVE or row.open_objection)]
            tasks[key] = actions if any(a not in OPTIONAL for a in actions) else None
        if (actions := tasks[key]) is not None:
            items.append((row, actions))
    return items


def _relation(org_id: int, parent_id: int | None, path: str, mine: list[Standing],
              ids: set[int]) -> tuple:
    """How an organization stands to the caller's (``ids``: their organizations'): all that
    ``relative_roles`` reads of a case's organization (is it one of theirs, is its parent, does
    one of theirs contain it). Organizations with the same relation give the caller the same
    roles."""
    return (org_id if org_id in ids else None,
            parent_id if parent_id in ids else None,
            tuple(sorted(p.organization_id for p in mine if path.startswith(p.path))))


def _overdue(due_at: datetime | None, now: datetime) -> bool:
    return due_at is not None and due_at < now


def _item(row: Candidate, case: sa.Row, actions: list[str], now: datetime) -> InboxItem:
    out = CaseOut.model_validate(case._mapping)  # from a mapping, as the timeline's events
    out.actions = actions
    return InboxItem(case=out, organization_name_zh=row.name_zh, organization_name_en=row.name_en,
                     member_name=case.member_name,
                     actions=actions, due_at=case.due_at, overdue=_overdue(case.due_at, now))


def _in_states(states: set[tuple[str, str]]) -> sa.ColumnElement[bool]:
    if not states:
        return sa.false()
    return sa.or_(*[sa.and_(Case.stage == stage, Case.status == status)
                    for stage, status in sorted(states)])


def _role_clause(role: str, who: sa.ColumnElement[bool]) -> sa.ColumnElement[bool]:
    """Cases matched by ``who`` in a state where ``role`` has a task."""
    always, if_objection = TASK_STATES[role]
    has_objection = sa.exists().where(Objection.case_id == Case.id, Objection.status == "open")
    return sa.and_(who, sa.or_(_in_states(always),
                               sa.and_(_in_states(if_objection), has_objection)))


def _candidates(session: Session, principal: Principal, me: int) -> list[Candidate]:
    """Non-closed, visible cases where the caller plausibly has a task (step 1): the columns
    that decide tasks and order (a committee's 300 ORM objects cost more than the query), with
    where the organization sits (``parent_id``, ``path``) and its names, whether the caller is
    assigned to the case's round and whether an objection to it is open.

    The statement depends only on the caller and the positions they hold (what is read at
    execution time, such as rounds and objections, stays in subqueries), so it is built once
    per (person, positions) and kept: building it and computing its cache key cost more than
    running it. Run on the connection: plain rows, without the ORM's result machinery."""
    key = (me, tuple(positions_of(session, me)))
    statement = _STATEMENTS.get(key)
    if statement is None:
        statement = _candidates_statement(me, list(key[1]), case_filter(session, principal))
        with _STATEMENTS_LOCK:  # requests run in a thread pool
            while len(_STATEMENTS) >= _STATEMENTS_KEPT:
                _STATEMENTS.pop(next(iter(_STATEMENTS)))  # the oldest
            _STATEMENTS[key] = statement
    return [Candidate._make(row) for row in session.connection().execute(statement)]


class _Org(NamedTuple):
    """A candidate's organization, as far as its roles go (``roles.OrgFacts``)."""

    id: int
    parent_id: int | None
    path: str


class Candidate(NamedTuple):
    """A candidate row, as a tuple: reading a field of it is ten times cheaper than of an
    ``sa.Row``, and the inbox reads ten fields of each of a committee's hundreds of rows."""

    id: int
    stage: str
    status: str
    subject_kind: str
    organization_id: int
    person_id: int | None
    due_at: datetime | None
    parent_id: int | None
    path: str
    name_zh: str
    name_en: str
    assigned: bool
    open_objection: bool


#: Candidate statements by (person, positions), oldest first; one per active caller.
_STATEMENTS: dict[tuple[int, tuple[Standing, ...]], sa.Select] = {}
_STATEMENTS_KEPT = 1024
_STATEMENTS_LOCK = threading.Lock()


def _candidates_statement(me: int, positions: list[Standing],
                          visible: sa.ColumnElement[bool]) -> sa.Select:
    staff = sorted({p.organization_id for p in positions if p.role in UNIT_STAFF})
    is_office = any(p.role == "admin" and p.kind == "campaign_office" for p in positions)
    led = sorted({p.organization_id for p in positions
                  if p.role in LEADERS or (p.role == "admin" and p.kind == "campaign_office")})

    clauses = [_role_clause("subject", sa.or_(
        Case.person_id == me,
        sa.and_(Case.subject_kind == "organization", Case.organization_id.in_(staff))))]
    if led:
        clauses.append(_role_clause("superior", _superior_of(me, led)))
    unvoted = (sa.select(EvaluationRound.case_id)
               .join(EvaluatorAssignment, EvaluatorAssignment.round_id == EvaluationRound.id)
               .where(EvaluatorAssignment.person_id == me, EvaluatorAssignment.voted_at.is_(None),
                      EvaluationRound.status == "open"))
    clauses.append(_role_clause("evaluator", Case.id.in_(unvoted)))
    if is_office:
        clauses.append(_role_clause("office", sa.true()))
    assigned = (sa.select(EvaluationRound.case_id)
                .join(EvaluatorAssignment, EvaluatorAssignment.round_id == EvaluationRound.id)
                .where(EvaluatorAssignment.person_id == me))
    open_objection = sa.exists().where(Objection.case_id == Case.id, Objection.status == "open")
    statement = (sa.select(*_CANDIDATE_COLUMNS, Case.id.in_(assigned).label("assigned"),
                           open_objection.label("open_objection"))
                 .join(Organization, Organization.id == Case.organization_id)
                 .where(Case.stage != "closed", visible, sa.or_(*clauses)).order_by(Case.id))
    assert tuple(statement.selected_columns.keys()) == Candidate._fields
    return statement


_CANDIDATE_COLUMNS = (Case.id, Case.stage, Case.status, Case.subject_kind, Case.organization_id,
                      Case.person_id, Case.due_at, Organization.parent_id, Organization.path,
                      Organization.name_zh, Organization.name_en)
_OWN, _OTHER = aliased(Position), aliased(Position)  # built once: aliasing is not cheap


def _superior_of(me: int, led: list[int]) -> sa.ColumnElement[bool]:
    """Cases whose direct superior the caller is, as ``directory.audience`` defines it: units
    directly below an organization they lead; members of an organization they lead; members
    who lead their own organization alone, one level up."""
    below_led = sa.select(Organization.id).where(Organization.parent_id.in_(led))
    own, other = _OWN, _OTHER
    member_leads = sa.exists().where(own.person_id == Case.person_id,
                                     own.organization_id == Case.organization_id,
                                     own.role.in_(LEADERS))
    another_leader = sa.exists().where(other.organization_id == Case.organization_id,
                                       other.role.in_(LEADERS),
                                       other.person_id != Case.person_id)
    return sa.or_(
        sa.and_(Case.subject_kind == "organization", Case.organization_id.in_(below_led)),
        sa.and_(Case.subject_kind == "member", Case.person_id != me,
                Case.organization_id.in_(led)),
        sa.and_(Case.subject_kind == "member", Case.organization_id.in_(below_led),
                member_leads, sa.not_(another_leader)),
    )
