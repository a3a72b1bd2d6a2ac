"""What a caller may *read*: the read-side twin of the roles in ``workflow/roles.py``.

Deny by default. The campaign office, auditors and flows see every case; a person sees their
own member case, the cases of units where they are staff, everything below the organizations
they lead, and the cases they were asked to evaluate. Anything else answers 404 — as if it did
not exist — so ids cannot be probed.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from models import Case, EvaluationRound, EvaluatorAssignment, Organization
from service.accounts import Principal
from service.errors import NotFound
from service.workflow.roles import (
    LEADERS,
    UNIT_STAFF,
    may_read,
    positions_of,
    relative_roles,
)

__all__ = ["case_filter", "ensure_case_visible", "sees_everything"]


def sees_everything(session: Session, principal: Principal) -> bool:
    """Flows, campaign-office admins and auditors read every case."""
    if principal.flow:
        return True
    if principal.person_id is None:
        return False
    return any(p.role == "auditor" or (p.role == "admin" and p.kind == "campaign_office")
               for p in positions_of(session, principal.person_id))


def case_filter(session: Session, principal: Principal) -> sa.ColumnElement[bool]:
    """A WHERE clause selecting the cases this caller may read."""
    if sees_everything(session, principal):
        return sa.true()
    if principal.person_id is None:
        return sa.false()
    me = principal.person_id
    positions = positions_of(session, me)
    staff_orgs = [p.organization_id for p in positions if p.role in UNIT_STAFF]
    led_paths = [p.path for p in positions if p.role in LEADERS]
    evaluated = (sa.select(EvaluationRound.case_id)
                 .join(EvaluatorAssignment, EvaluatorAssignment.round_id == EvaluationRound.id)
                 .where(EvaluatorAssignment.person_id == me))
    below_led = sa.select(Organization.id).where(
        sa.or_(*[Organization.path.startswith(p) for p in led_paths])) if led_paths else None
    clauses = [Case.person_id == me, Case.id.in_(evaluated)]
    if staff_orgs:
        clauses.append(Case.organization_id.in_(staff_orgs))
    if below_led is not None:
        clauses.append(Case.organization_id.in_(below_led))
    return sa.or_(*clauses)


_KEPT = "pledgeflow.kept_organizations"
_CASE_AND_ORG = (sa.select(Case, Organization)
                 .join(Organization, Organization.id == Case.organization_id)
                 .where(Case.id == sa.bindparam("case_id")))


def ensure_case_visible(session: Session, principal: Principal, case_id: int) -> Case:
    """The case, if this caller may read it; NotFound otherwise (never 403: no probing).

    One case is judged in Python, from the roles the caller holds relative to it — the rule
    ``case_filter`` states in SQL for many cases (a test holds the two to the same answers).
    That saves building the filter's statement, and leaves the case's organization in the
    session for what the request asks next (``session.get(Organization, …)`` without SQL)."""
    row = session.execute(_CASE_AND_ORG, {"case_id": case_id}).first()
    if row is None:
        raise NotFound(f"case {case_id} not found")
    case, org = row
    # The session holds what it loaded by weak reference only: without a strong one the
    # organization would be collected on return, and the next get() would load it again.
    session.info.setdefault(_KEPT, {})[org.id] = org
    actor = principal.actor
    if not may_read(session, case, actor,
                    relative_roles(session, case, org, actor, check_evaluator=False)):
        raise NotFound(f"case {case_id} not found")
    return case
