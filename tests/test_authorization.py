"""Who may act on a case follows from the organization tree, relative to that case.

A matrix of actors (by their position relative to the case) and actions, on a unit
committee's case, a branch's case and a member's case: what the table grants is allowed, the
rest is refused with the single reason ``role`` and writes nothing. Then the separation-of-duties
corners (own pledge, evaluators by assignment only) and ``relative_roles`` itself.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from models import (
    Case,
    EvaluationRound,
    Event,
    Notification,
    Organization,
    Position,
    PublicNotice,
)
from service import directory
from service.clock import FixedClock
from service.errors import TransitionRefused
from service.seed_data import UNITS
from service.workflow import engine, table
from service.workflow.roles import Actor, relative_roles
from tests import builders as b

PUBLIC = Actor.public()
ENTERPRISE = "supply-marketing"
BRANCH = f"{ENTERPRISE}.b1"
MEMBER = f"{BRANCH}.m2"  # a plain member: no position besides ``member``

# Actors by their place in the tree; "flow" and "public" are not people.
ACTORS: dict[str, str | Actor] = {
    "unit.secretary": f"{ENTERPRISE}.secretary",
    "unit.deputy": f"{ENTERPRISE}.deputy",
    "unit.clerk": f"{ENTERPRISE}.clerk",
    "branch.secretary": f"{BRANCH}.secretary",
    "sibling.secretary": f"{ENTERPRISE}.b2.secretary",
    "other_enterprise.secretary": "telecom.secretary",
    "member": MEMBER,
    "worker_rep": f"{ENTERPRISE}.w1",  # assigned to every round in the enterprise
    "other_enterprise.worker_rep": "telecom.w1",
    "office.admin": "office.admin",
    "auditor": "auditor",
    "flow": b.FLOW,
    "public": PUBLIC,
}

# The roles each actor holds relative to each kind of case (besides ``public``, which everyone
# holds, and ``evaluator``, which only assignment to the round gives). Absent: none.
RELATION: dict[str, dict[str, set[str]]] = {
    "committee": {  # the enterprise's Party committee, under the campaign office
        "unit.secretary": {"subject"}, "unit.deputy": {"subject"}, "unit.clerk": {"subject"},
        "office.admin": {"office", "superior"}, "auditor": {"auditor"}, "flow": {"flow"},
    },
    "branch": {  # a branch under the committee: its superior is the committee, one step up
        "branch.secretary": {"subject"},
        "unit.secretary": {"superior"}, "unit.deputy": {"superior"},  # the clerk leads nothing
        "office.admin": {"office"}, "auditor": {"auditor"}, "flow": {"flow"},
    },
    "member": {  # a plain member of the branch: superiors are the branch's leaders (and the
        # leaders of the organization above it)
        "member": {"subject"}, "branch.secretary": {"superior"},
        "unit.secretary": {"superior"}, "unit.deputy": {"superior"},
        "office.admin": {"office"}, "auditor": {"auditor"}, "flow": {"flow"},
    },
}
EVALUATORS = {"worker_rep"}

# Which role each action needs, per the transition table (written out: this is the spec),
# in the order a case meets them, with the state it is tried in and its arguments.
NEEDS = {
    "submit": "subject",
    "approve": "superior",
    "return": "superior",
    "file_objection": "public",
    "record_review": "superior",
    "cast_ballot": "evaluator",
    "decide": "office",
}
SETUP: dict[str, tuple[tuple[str, str], dict[str, Any]]] = {
    "submit": (("pledge", "drafting"), {}),
    "approve": (("pledge", "submitted"), {}),
    "return": (("pledge", "submitted"), {"comment": "targets are not measurable"}),
    "file_objection": (("pledge", "under_notice"), {"data": {"body": "copied from last year"}}),
    "record_review": (("review", "open"),
                      {"data": {"achievements": "a", "problems": "p", "direction": "d"}}),
    "cast_ballot": (("evaluation", "voting"), {}),  # answers filled in from the round
    "decide": (("commendation", "under_notice"), {"data": {"commend": True}}),
}


def _case(session, kind: str) -> Case:
    if kind == "member":
        return b.member_case(session, MEMBER)
    return b.unit_case(session, ENTERPRISE if kind == "committee" else BRANCH)


def _actor(session, key: str) -> Actor:
    who = ACTORS[key]
    return who if isinstance(who, Actor) else b.actor(session, who)


def _expected(kind: str, action: str, key: str) -> str:
    roles = {"public"} | RELATION[kind].get(key, set())
    if action == "cast_ballot" and key in EVALUATORS:
        roles.add("evaluator")
    return "allowed" if NEEDS[action] in roles else "role"


def _snapshot(session, case: Case) -> tuple:
    """The case's state and version, and how many events and notifications exist (one query)."""
    count = sa.select(sa.func.count())
    return session.execute(sa.select(
        Case.stage, Case.status, Case.version,
        count.select_from(Event).scalar_subquery(),
        count.select_from(Notification).scalar_subquery(),
    ).where(Case.id == case.id)).one()._tuple()


def _attempt(session, case: Case, action: str, who: Actor, clock: FixedClock,
             kwargs: dict[str, Any], before: tuple | None = None) -> str:
    """'allowed' (applied, then rolled back), 'role' (refused for the role alone, nothing
    written), or a description of anything else."""
    before = before or _snapshot(session, case)
    savepoint = session.begin_nested()
    try:
        engine.apply(session, case_id=case.id, action=action, actor=who, clock=clock, **kwargs)
    except TransitionRefused as exc:
        codes = [r.code for r in exc.reasons]
        outcome = "role" if codes == ["role"] else f"refused {codes}"
        if session.new or session.dirty or session.deleted:
            outcome += " (and wrote something)"
        savepoint.rollback()
        if _snapshot(session, case) != before:
            outcome += " (and changed the case)"
        return outcome
    savepoint.rollback()  # allowed: undo it, so the next actor finds the same state
    return "allowed"


def _open(session) -> FixedClock:
    """The 2010 period with cases for the committee, the branch and the member."""
    p = b.period(session)
    clock = b.clock_at(p.starts_on)
    engine.open_cases(session, period=p, actor=b.FLOW, clock=clock, subjects=[
        engine.Subject("organization", b.org(session, ENTERPRISE).id),
        engine.Subject("organization", b.org(session, BRANCH).id),
        engine.Subject("member", b.org(session, BRANCH).id, b.person(session, MEMBER).id),
    ])
    return clock


def _bring(session, case: Case, action: str, clock: FixedClock) -> dict[str, Any]:
    """Drive the case to where the action applies; the keyword arguments to try it with."""
    target, kwargs = SETUP[action]
    if target == ("pledge", "drafting"):
        b.drive(session, case, target, clock)
        b.act(session, case, "edit_pledge", b.subject_of(session, case), clock,
              data={"items": b.items_for(case)})
    else:
        b.drive(session, case, target, clock)
    if action == "cast_ballot":
        criteria = session.scalar(sa.select(EvaluationRound.criteria).where(
            EvaluationRound.case_id == case.id))
        kwargs = {"data": {"answers": dict.fromkeys(criteria, "satisfied")}}
    if action == "decide":  # the shortlist notice has run its course
        clock.set(session.scalar(sa.select(sa.func.max(PublicNotice.ends_at)).where(
            PublicNotice.subject == "shortlist")))
    return kwargs


@pytest.mark.parametrize("kind", list(RELATION))
def test_who_may_act_follows_the_organization_tree(session, kind):
    """One case walks its stages; at each, every actor tries the action that belongs there."""
    clock = _open(session)
    case = _case(session, kind)
    actors = {key: _actor(session, key) for key in ACTORS}
    expected, actual = {}, {}
    for action in NEEDS:
        kwargs = _bring(session, case, action, clock)
        before = _snapshot(session, case)
        for key, who in actors.items():
            expected[action, key] = _expected(kind, action, key)
            actual[action, key] = _attempt(session, case, action, who, clock, kwargs, before)
    assert actual == expected


def test_the_matrix_covers_every_relation():
    """Every actor is tried; every case kind has a subject, a superior and unrelated people."""
    for kind, relation in RELATION.items():
        assert set(relation) <= set(ACTORS), kind
        held = set().union(*relation.values())
        assert {"subject", "superior", "office", "auditor", "flow"} <= held, kind
        assert set(ACTORS) - set(relation) - EVALUATORS, f"{kind}: nobody unrelated"
        for action in NEEDS:
            outcomes = {_expected(kind, action, key) for key in ACTORS}
            assert outcomes == ({"allowed"} if action == "file_objection"
                                else {"allowed", "role"}), (kind, action)


# --- separation of duties ------------------------------------------------------------------------

def test_a_member_who_leads_their_organization_does_not_approve_their_own_pledge(session):
    """A member is never their own superior, not even when they lead their organization and
    hold a post above it: the role check refuses (``own_case`` is the guard behind it for unit
    cases, see test_guards), and the approval goes to the level above."""
    clock = b.clock_at(b.period(session).starts_on)
    leader = b.person(session, f"{BRANCH}.secretary")
    case = _opened(session, "member", f"{BRANCH}.secretary")
    case_org = session.get(Organization, case.organization_id)
    superiors = directory.audience(session, "superior", case, case_org)
    assert {person.id for person in superiors} == {
        b.person(session, f"{ENTERPRISE}.secretary").id,
        b.person(session, f"{ENTERPRISE}.deputy").id}  # falls back to the level above
    session.add(Position(person_id=leader.id, organization_id=b.org(session, ENTERPRISE).id,
                         role="deputy"))
    session.flush()
    assert _roles(session, case, Actor(person_id=leader.id)) == {"public", "subject"}
    b.drive(session, case, ("pledge", "submitted"), clock)
    assert _attempt(session, case, "approve", Actor(person_id=leader.id), clock, {}) == "role"
    assert _attempt(session, case, "return", Actor(person_id=leader.id), clock,
                    {"comment": "x"}) == "role"
    b.act(session, case, "approve", Actor(person_id=superiors[0].id), clock)
    assert (case.stage, case.status) == ("pledge", "approved")


def test_the_evaluator_role_comes_from_assignment_to_the_round(session):
    clock = _open(session)
    case = _case(session, "committee")
    case_org = session.get(Organization, case.organization_id)
    assigned = b.actor(session, f"{ENTERPRISE}.w1")
    assert _roles(session, case, assigned) == {"public"}  # no round yet
    b.drive(session, case, ("evaluation", "voting"), clock)
    # Appointed a member representative after the round opened: not assigned, not an evaluator.
    late = b.person(session, MEMBER)
    session.add(Position(person_id=late.id, organization_id=case_org.id,
                         role="member_representative"))
    session.flush()
    criteria = session.scalar(sa.select(EvaluationRound.criteria).where(
        EvaluationRound.case_id == case.id))
    kwargs = {"data": {"answers": dict.fromkeys(criteria, "satisfied")}}
    for who in (Actor(person_id=late.id), b.actor(session, "telecom.w1"), b.office(session)):
        assert "evaluator" not in relative_roles(session, case, case_org, who)
        assert _attempt(session, case, "cast_ballot", who, clock, kwargs) == "role"
    assert "evaluator" in relative_roles(session, case, case_org, assigned)
    assert "evaluator" not in relative_roles(session, case, case_org, assigned,
                                             check_evaluator=False)
    b.act(session, case, "cast_ballot", assigned, clock, **kwargs)


# --- relative_roles ------------------------------------------------------------------------------

# The roles that let anyone act on a case: every role some transition needs, and the auditor.
# (Read-only roles that grant no action are not what these tests are about.)
ACTING = frozenset().union(*(t.roles for t in table.TRANSITIONS)) | {"auditor"}


def _roles(session, case: Case, who: str | Actor) -> set[str]:
    """The actor's roles relative to the case that bear on acting (see ``ACTING``)."""
    actor = who if isinstance(who, Actor) else b.actor(session, who)
    org = session.get(Organization, case.organization_id)
    return relative_roles(session, case, org, actor) & ACTING


def _opened(session, kind: str, code: str) -> Case:
    """The 2010 case of one unit (kind "organization") or member (by username), opened."""
    p = b.period(session)
    if kind == "organization":
        subject = engine.Subject(kind, b.org(session, code).id)
    else:
        who = b.person(session, code)
        subject = engine.Subject(kind, who.organization_id, who.id)
    engine.open_cases(session, period=p, actor=b.FLOW, clock=b.clock_at(p.starts_on),
                      subjects=[subject])
    return b.unit_case(session, code) if kind == "organization" else b.member_case(session, code)


@pytest.mark.parametrize(("unit", "who", "expected"), [
    # the committee of an enterprise
    (ENTERPRISE, f"{ENTERPRISE}.secretary", {"subject"}),
    (ENTERPRISE, f"{ENTERPRISE}.clerk", {"subject"}),
    (ENTERPRISE, "office.deputy", {"office", "superior"}),
    (ENTERPRISE, "auditor", {"auditor"}),
    (ENTERPRISE, f"{BRANCH}.secretary", set()),  # below is not above
    (ENTERPRISE, "telecom.secretary", set()),
    (ENTERPRISE, f"{BRANCH}.m1", set()),  # a member is not unit staff
    # a branch
    (BRANCH, f"{BRANCH}.secretary", {"subject"}),
    (BRANCH, f"{ENTERPRISE}.secretary", {"superior"}),
    (BRANCH, f"{ENTERPRISE}.deputy", {"superior"}),
    (BRANCH, f"{ENTERPRISE}.clerk", set()),  # unit staff, but of the unit above
    (BRANCH, f"{ENTERPRISE}.b2.secretary", set()),  # a sibling
    (BRANCH, "power-supply.secretary", set()),
    (BRANCH, f"{BRANCH}.m2", set()),
    (BRANCH, "office.admin", {"office"}),  # the office is two steps up
    # a branch under a general branch: the superior is one step up the reporting line
    ("post.g1.b1", "post.g1.b1.secretary", {"subject"}),
    ("post.g1.b1", "post.g1.secretary", {"superior"}),
    ("post.g1.b1", "post.secretary", set()),
    ("post.g1", "post.secretary", {"superior"}),
    ("post.g1.b1", "post.b1.secretary", set()),
    ("post.g1", "post.g1.b1.secretary", set()),
])
def test_relative_roles_for_a_unit_case(session, unit, who, expected):
    assert _roles(session, _opened(session, "organization", unit), who) == {"public"} | expected


@pytest.mark.parametrize(("member", "who", "expected"), [
    (MEMBER, MEMBER, {"subject"}),
    (MEMBER, f"{BRANCH}.secretary", {"superior"}),  # leader of the member's own organization
    (MEMBER, f"{ENTERPRISE}.deputy", {"superior"}),
    (MEMBER, f"{ENTERPRISE}.clerk", set()),  # staff is subject only of a unit's own case
    (MEMBER, f"{BRANCH}.m1", set()),  # a fellow member
    (MEMBER, f"{ENTERPRISE}.b2.secretary", set()),
    (MEMBER, "telecom.secretary", set()),
    (MEMBER, "office.admin", {"office"}),
    (MEMBER, "auditor", {"auditor"}),
    # a member who leads their own organization is not their own superior
    (f"{BRANCH}.secretary", f"{BRANCH}.secretary", {"subject"}),
    (f"{BRANCH}.secretary", f"{ENTERPRISE}.secretary", {"superior"}),
    (f"{ENTERPRISE}.secretary", f"{ENTERPRISE}.secretary", {"subject"}),
    (f"{ENTERPRISE}.secretary", f"{ENTERPRISE}.deputy", {"superior"}),
    (f"{ENTERPRISE}.secretary", "office.deputy", {"office", "superior"}),
    ("post.g1.b1.m3", "post.g1.b1.secretary", {"superior"}),
    ("post.g1.b1.m3", "post.g1.secretary", {"superior"}),
    ("post.g1.b1.m3", "post.secretary", set()),  # three steps up
])
def test_relative_roles_for_a_member_case(session, member, who, expected):
    assert _roles(session, _opened(session, "member", member), who) == {"public"} | expected


def test_campaign_office_admins_are_superior_of_the_eight_enterprise_committees(session):
    assert len(UNITS) == 8
    for unit in UNITS:
        case = _opened(session, "organization", unit.code)
        assert session.get(Organization, case.organization_id).kind == "committee"
        for admin in ("office.admin", "office.deputy"):
            assert _roles(session, case, admin) == {"public", "office", "superior"}, unit.code
        assert _roles(session, case, "auditor") == {"public", "auditor"}
        assert _roles(session, case, f"{unit.code}.secretary") == {"public", "subject"}
        superiors = directory.audience(session, "superior", case,
                                       session.get(Organization, case.organization_id))
        assert {p.id for p in superiors} == {b.person(session, "office.admin").id,
                                             b.person(session, "office.deputy").id}
    branch = _opened(session, "organization", BRANCH)
    assert _roles(session, branch, "office.admin") == {"public", "office"}  # not below that


def test_flows_and_the_public_hold_no_personal_role(session):
    for case in (_opened(session, "organization", ENTERPRISE),
                 _opened(session, "member", MEMBER)):
        assert _roles(session, case, b.FLOW) == {"public", "flow"}
        assert _roles(session, case, PUBLIC) == {"public"}


def test_holding_two_positions_gives_both_roles(session):
    """A branch secretary who is also a deputy of the unit above is subject *and* superior of
    the branch's case (the guards then keep them from deciding on it)."""
    case = _opened(session, "organization", BRANCH)
    session.add(Position(person_id=b.person(session, f"{BRANCH}.secretary").id,
                         organization_id=b.org(session, ENTERPRISE).id, role="deputy"))
    session.flush()
    assert _roles(session, case, f"{BRANCH}.secretary") == {"public", "subject", "superior"}


def test_positions_read_once_per_session_are_read_again_after_a_write(session):
    """``positions_of`` serves one request's checks from one query, but a position added in
    the same session (an import, then a check) counts at once: every flush forgets the memo."""
    case = _opened(session, "organization", BRANCH)
    who = f"{BRANCH}.m2"
    assert _roles(session, case, who) == {"public"}
    session.add(Position(person_id=b.person(session, who).id,
                         organization_id=b.org(session, BRANCH).id, role="clerk"))
    assert _roles(session, case, who) == {"public", "subject"}  # the autoflush forgot
    session.execute(sa.delete(Position).where(Position.person_id == b.person(session, who).id,
                                              Position.role == "clerk"))
    assert _roles(session, case, who) == {"public"}  # so does a bulk DELETE
