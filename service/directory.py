"""Who holds which role where: the people behind an audience of a case.

Used to address notifications and to find who may act (the inbox, the simulation). Roles come
from positions only; inactive people are never returned.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.orm import Session

from models import Case, EvaluatorAssignment, Organization, Person, Position
from service.db import plain_rows
from service.workflow.roles import LEADERS, UNIT_STAFF

__all__ = ["holders", "audience", "AUDIENCES", "Addressee"]

AUDIENCES = ("subject", "superior", "office", "evaluators")


class Addressee(NamedTuple):
    """A person as far as addressing them goes (rows, not ``Person`` objects: every transition
    asks, and loading ORM objects costs several times what the columns do)."""

    id: int
    email: str | None
    lang: str


_ADDRESS = (Person.id, Person.email, Person.lang)
_HOLDERS = (sa.select(*_ADDRESS).join(Position, Position.person_id == Person.id)
            .where(Position.organization_id.in_(sa.bindparam("org_ids", expanding=True)),
                   Position.role.in_(sa.bindparam("roles", expanding=True)),
                   Person.active.is_(True))
            .distinct().order_by(Person.id))  # built once: every transition's emails ask


def holders(session: Session, org_ids: Iterable[int], roles: Iterable[str]
            ) -> list[Addressee]:
    """Active people holding any of ``roles`` in any of ``org_ids``, by id."""
    org_ids = [o for o in org_ids if o is not None]
    if not org_ids:
        return []
    return [Addressee(*row) for row in plain_rows(
        session, _HOLDERS, {"org_ids": org_ids, "roles": list(roles)})]


def audience(session: Session, name: str, case: Case, case_org: Organization,
             round_id: int | None = None) -> list[Addressee]:
    """The people of an audience relative to a case.

    subject    — the member, or the unit's secretary, deputy and clerk;
    superior   — the leaders one level up (for a member: their own organization's leaders,
                 falling back to the level above when the member leads it themselves);
    office     — the campaign office's admins;
    evaluators — the people assigned to the case's evaluation round.
    """
    if name == "subject":
        if case.subject_kind == "member":
            person = session.get(Person, case.person_id)
            return [Addressee(person.id, person.email, person.lang)] \
                if person is not None and person.active else []
        return holders(session, [case_org.id], UNIT_STAFF)
    if name == "superior":
        if case.subject_kind == "member":
            own = [p for p in holders(session, [case_org.id], LEADERS) if p.id != case.person_id]
            if own:
                return own
        # The campaign office is led by its admins; it is the enterprises' superior.
        above = holders(session, [case_org.parent_id] if case_org.parent_id else [],
                        (*LEADERS, "admin"))
        return [p for p in above if p.id != case.person_id]  # never one's own superior
    if name == "office":
        office_ids = session.scalars(
            sa.select(Organization.id).where(Organization.kind == "campaign_office"))
        return holders(session, office_ids, ("admin",))
    if name == "evaluators":
        if round_id is None:
            return []
        return [Addressee(*row) for row in session.execute(
            sa.select(*_ADDRESS)
            .join(EvaluatorAssignment, EvaluatorAssignment.person_id == Person.id)
            .where(EvaluatorAssignment.round_id == round_id, Person.active.is_(True))
            .order_by(Person.id))]
    raise ValueError(f"unknown audience {name!r}; known: {AUDIENCES}")
