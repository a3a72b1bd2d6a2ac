"""What a caller may read: one case at a time (``ensure_case_visible``, judged in Python from
the caller's roles) and many at once (``case_filter``, a WHERE clause) must give the same
answer, for every person of the seed, a flow and the public, on every case."""

from __future__ import annotations

import gc

import sqlalchemy as sa

from models import Case, EvaluatorAssignment, Organization, Position
from service.accounts import Principal
from service.clock import FixedClock
from service.errors import NotFound
from service.visibility import case_filter, ensure_case_visible
from tests import builders as b

BRANCHES = ("supply-marketing.b1", "telecom.b1")


def _readable_one_by_one(session, principal: Principal, case_ids: list[int]) -> set[int]:
    readable = set()
    for case_id in case_ids:
        try:
            ensure_case_visible(session, principal, case_id)
        except NotFound:
            continue
        readable.add(case_id)
    return readable


def test_one_case_at_a_time_and_the_listing_filter_agree_for_everyone(session):
    clock = FixedClock()
    b.opened_period(session, clock)
    # A round open on one committee: its evaluators (outside its tree too) may read that case
    voting = b.drive(session, b.unit_case(session, "supply-marketing"), ("evaluation", "voting"),
                     clock)
    evaluators = set(session.scalars(sa.select(EvaluatorAssignment.person_id)))
    # Every unit case and the member cases of two branches; everyone who holds a position
    # besides plain membership, and two plain members (one per branch)
    case_ids = list(session.scalars(sa.select(Case.id).where(sa.or_(
        Case.subject_kind == "organization", Case.organization_id.in_(
            [b.org(session, code).id for code in BRANCHES]))).order_by(Case.id)))
    people = set(session.scalars(sa.select(Position.person_id).where(Position.role != "member")))
    people |= {b.person(session, f"{code}.m2").id for code in BRANCHES}
    principals = [Principal(person_id=p) for p in sorted(people)]
    principals += [Principal(flow=b.FLOW.flow), Principal()]
    seen = {}
    for principal in principals:
        listed = set(session.scalars(sa.select(Case.id).where(case_filter(session, principal))))
        assert _readable_one_by_one(session, principal, case_ids) == listed & set(case_ids), \
            principal
        seen[principal.person_id or principal.flow] = len(listed)
    # The comparison means something: some read everything, some a part, the public nothing
    assert seen[b.FLOW.flow] == session.scalar(sa.select(sa.func.count()).select_from(Case))
    assert seen[None] == 0
    assert 0 < seen[b.person(session, f"{BRANCHES[0]}.m2").id] < len(case_ids)
    for person_id in evaluators:
        assert voting.id in _readable_one_by_one(session, Principal(person_id=person_id),
                                                 [voting.id])


def test_a_visible_case_leaves_its_organization_loaded_for_the_rest_of_the_request(session):
    """What the timeline and the case view ask next (``session.get``) costs no query."""
    clock = FixedClock()
    b.opened_period(session, clock)
    case = b.unit_case(session, BRANCHES[0])
    case_id, org_id = case.id, case.organization_id
    session.expunge_all()
    ensure_case_visible(session, Principal(flow=b.FLOW.flow), case_id)
    gc.collect()  # the session holds what it loaded by weak reference only
    statements: list[str] = []
    sa.event.listen(session.get_bind(), "before_cursor_execute",
                    lambda _c, _cur, statement, *_: statements.append(statement))
    assert session.get(Organization, org_id).id == org_id
    assert statements == []
