"""Who the actor is *relative to a case*, derived from positions in the organization tree.

Roles are never stored per case; they follow from the reporting line:

- ``subject``   — a member for their own case; the secretary, deputy or clerk of the unit for a
                  unit's case (they draft and submit, answer reviews).
- ``superior``  — a secretary or deputy one step up the reporting line: of the unit's parent
                  organization; for a member's case, of the member's own organization (or of
                  its parent). Approves, returns, reviews. The campaign office's admins lead
                  the office, which is the superior of the eight enterprise committees.
- ``overseer``  — reads only: a leader anywhere above (or of) the case's unit, or a clerk of the
                  unit for its members' cases; the case is visible to them, nothing more.
- ``office``    — an admin of the campaign office: opens stages, decides commendations.
- ``auditor``   — reads history; acts on nothing.
- ``evaluator`` — assigned to the case's evaluation round.
- ``flow``      — a scheduled flow acting through the service token.
- ``public``    — anyone, signed in or not (objections to what is under public notice).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import ORMExecuteState, Session

from models import Case, EvaluationRound, EvaluatorAssignment, Organization, Position
from service.db import plain_rows

__all__ = ["Actor", "ROLES", "READERS", "relative_roles", "is_assigned_evaluator", "may_read",
           "UNIT_STAFF", "LEADERS", "Standing", "positions_of", "CaseFacts", "OrgFacts"]

ROLES = ("subject", "superior", "overseer", "office", "auditor", "evaluator", "flow", "public")
# Who may read a case at all; anyone else is told it does not exist (no probing by id).
READERS = frozenset({"subject", "superior", "overseer", "office", "auditor", "evaluator", "flow"})
UNIT_STAFF = frozenset({"secretary", "deputy", "clerk"})
LEADERS = frozenset({"secretary", "deputy"})


@dataclass(frozen=True)
class Actor:
    """Who acts: a person, a named flow (through the service token), or the anonymous public."""

    person_id: int | None = None
    flow: str | None = None

    def __post_init__(self) -> None:
        if self.person_id is not None and self.flow is not None:
            raise ValueError("an actor is a person or a flow, not both")

    @classmethod
    def public(cls) -> Actor:
        return cls()

    @property
    def label(self) -> str:
        if self.flow:
            return f"flow:{self.flow}"
        return f"person:{self.person_id}" if self.person_id else "public"


class CaseFacts(Protocol):
    """What roles are judged on of a case: a ``Case``, or a row with these columns."""

    @property
    def id(self) -> int: ...
    @property
    def subject_kind(self) -> str: ...
    @property
    def organization_id(self) -> int: ...
    @property
    def person_id(self) -> int | None: ...
    @property
    def stage(self) -> str: ...
    @property
    def status(self) -> str: ...


class OrgFacts(Protocol):
    """What roles are judged on of a case's organization: an ``Organization``, or a row."""

    @property
    def id(self) -> int: ...
    @property
    def parent_id(self) -> int | None: ...
    @property
    def path(self) -> str: ...


class Standing(NamedTuple):
    """One position a person holds: the role and the organization it is held in."""

    role: str
    organization_id: int
    path: str
    kind: str


_MEMO = "pledgeflow.positions"
_POSITIONS = (sa.select(Position.role, Organization.id, Organization.path, Organization.kind)
              .join(Organization, Organization.id == Position.organization_id)
              .where(Position.person_id == sa.bindparam("person_id")).order_by(Position.id))


def positions_of(session: Session, person_id: int) -> list[Standing]:
    """Every position the person holds, read once per session between writes: one request
    asks for them from authorization, visibility and the roles check alike. Any write (a
    flush, or an INSERT, UPDATE or DELETE run through the session) and the end of the
    transaction forget what was read."""
    memo: dict[int, list[Standing]] = session.info.setdefault(_MEMO, {})
    if person_id not in memo:
        memo[person_id] = [Standing(*row) for row in plain_rows(
            session, _POSITIONS, {"person_id": person_id})]
    return memo[person_id]


@event.listens_for(Session, "after_flush")
@event.listens_for(Session, "after_commit")
@event.listens_for(Session, "after_soft_rollback")
def _forget_positions(session: Session, *_: object) -> None:
    session.info.pop(_MEMO, None)


@event.listens_for(Session, "do_orm_execute")
def _forget_positions_on_dml(state: ORMExecuteState) -> None:
    if state.is_insert or state.is_update or state.is_delete:
        state.session.info.pop(_MEMO, None)


def relative_roles(session: Session, case: CaseFacts, case_org: OrgFacts, actor: Actor, *,
                   check_evaluator: bool = True) -> set[str]:
    """Every role the actor holds relative to this case (always includes ``public``).

    ``check_evaluator=False`` skips the round lookup when the caller knows the evaluator role
    cannot matter (it is then never reported)."""
    roles = {"public"}
    if actor.flow:
        return roles | {"flow"}
    if actor.person_id is None:
        return roles
    rows = positions_of(session, actor.person_id)
    is_member_case = case.subject_kind == "member"
    for role, org_id, path, kind in rows:
        if kind == "campaign_office" and role == "admin":
            roles.add("office")
        if role == "auditor":
            roles.add("auditor")
        if not is_member_case and org_id == case.organization_id and role in UNIT_STAFF:
            roles.add("subject")
        leads = role in LEADERS or (kind == "campaign_office" and role == "admin")
        if leads and _is_superior(org_id, path, case, case_org, actor):
            roles.add("superior")
        if (role in LEADERS and case_org.path.startswith(path)) or (
                role in UNIT_STAFF and org_id == case.organization_id):
            roles.add("overseer")
    if is_member_case and case.person_id == actor.person_id:
        roles.add("subject")
    if check_evaluator and _is_assigned_evaluator(session, case.id, actor.person_id):
        roles.add("evaluator")
    return roles


def _is_superior(org_id: int, org_path: str, case: CaseFacts, case_org: OrgFacts,
                 actor: Actor) -> bool:
    """A leader one step up the reporting line (隶属关系): of the unit's parent organization;
    for a member, of their own organization or of its parent (never the member themself)."""
    if case.subject_kind == "member":
        if case.person_id == actor.person_id:
            return False
        return org_id in (case_org.id, case_org.parent_id)
    return org_id == case_org.parent_id


def may_read(session: Session, case: Case, actor: Actor, roles: set[str]) -> bool:
    """Whether an actor holding ``roles`` on the case may read it: a reader's role, or being
    asked to evaluate it (``roles`` need not have been judged with the evaluator check)."""
    if roles & READERS:
        return True
    return actor.person_id is not None and is_assigned_evaluator(session, case.id, actor.person_id)


def is_assigned_evaluator(session: Session, case_id: int, person_id: int) -> bool:
    """Whether the person is assigned to the case's evaluation round."""
    return _is_assigned_evaluator(session, case_id, person_id)


def _is_assigned_evaluator(session: Session, case_id: int, person_id: int) -> bool:
    return session.execute(
        sa.select(EvaluatorAssignment.id)
        .join(EvaluationRound, EvaluationRound.id == EvaluatorAssignment.round_id)
        .where(EvaluationRound.case_id == case_id, EvaluatorAssignment.person_id == person_id)
    ).first() is not None
