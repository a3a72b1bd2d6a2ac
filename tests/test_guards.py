"""Every guard of the workflow, one at a time, on a real case driven through the engine.

Each test walks a case to the state where a guard applies, makes exactly that guard fail and
checks the refusal: the reason code, and that nothing was written (status, version, history and
outbox unchanged). Where it means something, the same action then succeeds once the condition
holds. ``test_every_guard_has_a_test`` fails when a guard is added without a test here.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from models import (
    Case,
    Commendation,
    EvaluationRound,
    EvaluatorAssignment,
    Event,
    Nomination,
    Notification,
    Objection,
    Period,
    Position,
    PublicNotice,
)
from service import commendation
from service.clock import FixedClock, end_of_day, start_of_day
from service.errors import Reason, TransitionRefused
from service.rules import CampaignRules
from service.workflow import engine, table
from service.workflow import guards as g
from service.workflow.context import Context
from service.workflow.roles import Actor
from tests import builders as b

UNIT = "supply-marketing"
BRANCH = "supply-marketing.b1"
UNITS = (UNIT, BRANCH, "telecom")
PUBLIC = Actor.public()
SECOND = timedelta(seconds=1)
REVIEW = {"achievements": "a", "problems": "p", "direction": "d"}
OBJECTION = {"body": "the targets are copied from last year"}

# guard name -> the tests that make it fail (filled by @covers, checked by the meta-test)
COVERED: dict[str, list[str]] = {}


def covers(*guards: g.Guard) -> Callable:
    def mark(test: Callable) -> Callable:
        for guard in guards:
            COVERED.setdefault(guard.__name__, []).append(test.__name__)
        return test
    return mark


# --- helpers -----------------------------------------------------------------------------------

@pytest.fixture
def clock(session) -> FixedClock:
    """The 2010 period open with cases for the units used here, the clock on its first day.

    Only these cases (not the whole period's) keep the suite fast; selection ranks what is
    there, so a lone candidate is shortlisted and two share a quota of one."""
    p = b.period(session)
    c = b.clock_at(p.starts_on)
    engine.open_cases(session, period=p, actor=b.FLOW, clock=c, subjects=[
        engine.Subject("organization", b.org(session, code).id) for code in UNITS])
    return c


def _snapshot(session, case: Case) -> tuple:
    """The case's state, version and deadline, and how many events and notifications exist."""
    count = sa.select(sa.func.count())
    return session.execute(sa.select(
        Case.stage, Case.status, Case.version, Case.due_at,
        count.select_from(Event).scalar_subquery(),
        count.select_from(Notification).scalar_subquery(),
    ).where(Case.id == case.id)).one()._tuple()


def refusal(session, case: Case, action: str, who: Actor, clock: FixedClock,
            **kwargs) -> list[Reason]:
    """Attempt an action that must be refused; check nothing was written; return the reasons."""
    before = _snapshot(session, case)
    with pytest.raises(TransitionRefused) as info:
        engine.apply(session, case_id=case.id, action=action, actor=who, clock=clock, **kwargs)
    assert not (session.new or session.dirty or session.deleted), "a guard wrote something"
    assert _snapshot(session, case) == before
    assert all(r.message for r in info.value.reasons)
    return info.value.reasons


def refused(session, case: Case, action: str, who: Actor, clock: FixedClock,
            **kwargs) -> list[str]:
    """The reason codes of a refusal (see ``refusal``)."""
    return [r.code for r in refusal(session, case, action, who, clock, **kwargs)]


def state(case: Case) -> tuple[str, str]:
    return case.stage, case.status


def period_of(session, case: Case) -> Period:
    p = session.get(Period, case.period_id)
    assert p is not None
    return p


def round_of(session, case: Case) -> EvaluationRound:
    return session.scalars(sa.select(EvaluationRound).where(
        EvaluationRound.case_id == case.id).execution_options(populate_existing=True)).one()


def voters(session, case: Case) -> list[Actor]:
    """The evaluators of the case's round, in assignment order."""
    ids = session.scalars(sa.select(EvaluatorAssignment.person_id).where(
        EvaluatorAssignment.round_id == round_of(session, case).id)
        .order_by(EvaluatorAssignment.id)).all()
    return [Actor(person_id=i) for i in ids]


def ballot(session, case: Case, option: str = "satisfied") -> dict:
    return {"answers": {c: option for c in round_of(session, case).criteria}}


def below_quorum_count(session, case: Case) -> int:
    """The most ballots that still leave the round below quorum."""
    r = round_of(session, case)
    n = len(voters(session, case))
    return max(k for k in range(n + 1) if k / n < r.quorum)


def pledge_notice(session, case: Case) -> PublicNotice:
    return session.scalars(sa.select(PublicNotice).where(
        PublicNotice.case_id == case.id, PublicNotice.status == "open")).one()


def file_objection(session, case: Case, clock: FixedClock) -> int:
    return b.act(session, case, "file_objection", PUBLIC, clock, data=OBJECTION
                 ).payload["objection_id"]


def give_position(session, username: str, org_code: str, role: str) -> None:
    session.add(Position(person_id=b.person(session, username).id,
                         organization_id=b.org(session, org_code).id, role=role))
    session.flush()


def shortlist_notice_ends(session, case: Case) -> datetime:
    commendation_id = session.scalar(sa.select(Nomination.commendation_id).where(
        Nomination.case_id == case.id))
    return session.scalars(sa.select(PublicNotice.ends_at).where(
        PublicNotice.commendation_id == commendation_id, PublicNotice.status == "open")).one()


def nomination_of(session, case: Case) -> Nomination:
    return session.scalars(sa.select(Nomination).where(Nomination.case_id == case.id)).one()


# --- the meta-test -----------------------------------------------------------------------------

def public_guards() -> dict[str, g.Guard]:
    """Every public function of the guards module that takes a Context."""
    found = {}
    for name, obj in vars(g).items():
        if name.startswith("_") or not inspect.isfunction(obj) or obj.__module__ != g.__name__:
            continue
        params = list(inspect.signature(obj).parameters.values())
        if params and typing.get_type_hints(obj).get(params[0].name) is Context:
            found[name] = obj
    return found


def test_every_guard_has_a_test():
    guards = public_guards()
    assert {"quorum_reached", "not_own_pledge", "within_quota"} <= set(guards)  # sanity
    in_table = {guard.__name__ for t in table.TRANSITIONS for guard in t.guards}
    assert in_table <= set(guards), "the table uses guards the enumeration does not see"
    untested = sorted(set(guards) - set(COVERED))
    assert untested == [], f"guards without a test in {__name__}: {untested}"
    assert sorted(set(COVERED) - set(guards)) == [], "tests claim guards that do not exist"
    module = globals()
    assert all(name in module for names in COVERED.values() for name in names)


# --- time, from the period's calendar -------------------------------------------------------

@covers(g.period_started)
def test_a_stage_does_not_open_before_the_period_starts(session, clock):
    case = b.unit_case(session, UNIT)
    starts = start_of_day(period_of(session, case).starts_on)
    clock.set(starts - SECOND)
    assert refused(session, case, "open_pledge", b.FLOW, clock) == ["period_not_started"]
    clock.set(starts)
    b.act(session, case, "open_pledge", b.FLOW, clock)
    assert state(case) == ("pledge", "drafting")


@covers(g.period_ended)
def test_a_case_does_not_lapse_while_its_period_runs(session, clock):
    case = b.drive(session, b.unit_case(session, UNIT), ("pledge", "drafting"), clock)
    ends = end_of_day(period_of(session, case).ends_on)
    clock.set(ends - SECOND)
    assert refused(session, case, "lapse", b.FLOW, clock) == ["period_not_ended"]
    clock.set(ends)
    b.act(session, case, "lapse", b.FLOW, clock)
    assert state(case) == ("closed", "lapsed")


@covers(g.review_date_reached)
def test_the_review_does_not_open_before_its_calendar_date(session, clock):
    case = b.drive(session, b.unit_case(session, UNIT), ("pledge", "done"), clock)
    opens = start_of_day(period_of(session, case).review_opens_on)
    clock.set(opens - SECOND)
    assert refused(session, case, "open_review", b.FLOW, clock) == ["review_not_due"]
    clock.set(opens)
    b.act(session, case, "open_review", b.FLOW, clock)
    assert state(case) == ("review", "open")


@covers(g.evaluation_date_reached)
def test_the_evaluation_does_not_open_before_its_calendar_date(session, clock):
    case = b.drive(session, b.unit_case(session, UNIT), ("review", "recorded"), clock)
    opens = start_of_day(period_of(session, case).evaluation_opens_on)
    clock.set(opens - SECOND)
    assert refused(session, case, "open_evaluation", b.FLOW, clock) == ["evaluation_not_due"]
    clock.set(opens)
    b.act(session, case, "open_evaluation", b.FLOW, clock)
    assert state(case) == ("evaluation", "voting")


@covers(g.notice_window_ended)
def test_a_pledge_notice_runs_its_full_window(session, clock):
    case = b.drive(session, b.unit_case(session, UNIT), ("pledge", "under_notice"), clock)
    ends = pledge_notice(session, case).ends_at
    clock.set(ends - SECOND)
    assert refused(session, case, "close_notice", b.FLOW, clock) == ["notice_running"]
    clock.set(ends)
    b.act(session, case, "close_notice", b.FLOW, clock)
    assert state(case) == ("pledge", "done")


@covers(g.notice_open)
def test_objections_are_taken_only_while_the_notice_is_open(session, clock):
    case = b.drive(session, b.unit_case(session, UNIT), ("pledge", "under_notice"), clock)
    ends = pledge_notice(session, case).ends_at
    clock.set(ends - SECOND)
    objection_id = file_objection(session, case, clock)
    assert session.get(Objection, objection_id).status == "open"
    clock.set(ends)
    assert refused(session, case, "file_objection", PUBLIC, clock,
                   data=OBJECTION) == ["notice_closed"]


@covers(g.round_deadline_passed)
def test_a_round_is_extended_only_after_its_deadline(session, clock):
    case = b.drive(session, b.unit_case(session, UNIT), ("evaluation", "voting"), clock)
    closes = round_of(session, case).closes_at
    clock.set(closes - SECOND)
    assert refused(session, case, "extend_round", b.FLOW, clock) == ["round_running"]
    clock.set(closes)
    b.act(session, case, "extend_round", b.FLOW, clock)
    assert round_of(session, case).extended


@covers(g.round_accepting_ballots)
def test_ballots_are_taken_only_inside_the_round_window(session, clock):
    case = b.drive(session, b.unit_case(session, UNIT), ("evaluation", "voting"), clock)
    first, second = voters(session, case)[:2]
    closes = round_of(session, case).closes_at
    clock.set(closes - SECOND)
    b.act(session, case, "cast_ballot", first, clock, data=ballot(session, case))
    clock.set(closes)
    assert refused(session, case, "cast_ballot", second, clock,
                   data=ballot(session, case)) == ["round_closed"]


# --- who ---------------------------------------------------------------------------------------

def _subject_also_superior(session) -> Actor:
    """The branch secretary (subject of the branch's case) also becomes a deputy of the unit
    above it, so they hold the superior role for the branch's case too."""
    give_position(session, f"{BRANCH}.secretary", UNIT, "deputy")
    return b.actor(session, f"{BRANCH}.secretary")


def _submitter_moved_up(session) -> Actor:
    """The branch secretary who submitted leaves the branch and becomes a deputy above it:
    no longer subject, now superior, still the submitter."""
    who = b.person(session, f"{BRANCH}.secretary")
    session.execute(sa.delete(Position).where(
        Position.person_id == who.id, Position.organization_id == b.org(session, BRANCH).id))
    give_position(session, f"{BRANCH}.secretary", UNIT, "deputy")
    return Actor(person_id=who.id)


OWN_CASE_ACTIONS = {
    # action: (state, kwargs); ``return`` is in test_a_refused_return_lists_every_failing_guard
    "approve": (("pledge", "submitted"), {}),
    "record_review": (("review", "open"), {"data": REVIEW}),
}


@covers(g.not_own_pledge)
@pytest.mark.parametrize("who", [_subject_also_superior, _submitter_moved_up],
                         ids=["subject_also_superior", "submitter_moved_up"])
@pytest.mark.parametrize("action", list(OWN_CASE_ACTIONS))
def test_nobody_decides_on_their_own_pledge(session, clock, action, who):
    target, kwargs = OWN_CASE_ACTIONS[action]
    case = b.drive(session, b.unit_case(session, BRANCH), target, clock)
    assert b.pledge_items(session, case)  # a real pledge, submitted by the branch secretary
    conflicted = who(session)
    assert refused(session, case, action, conflicted, clock, **kwargs) == ["own_case"]
    version = case.version
    b.act(session, case, action, b.actor(session, f"{UNIT}.secretary"), clock, **kwargs)
    assert case.version == version + 1


@covers(g.not_own_pledge)
@pytest.mark.parametrize("action", ["uphold_objection", "dismiss_objection"])
def test_nobody_resolves_an_objection_to_their_own_pledge(session, clock, action):
    case = b.drive(session, b.unit_case(session, BRANCH), ("pledge", "under_notice"), clock)
    objection_id = file_objection(session, case, clock)
    conflicted = _subject_also_superior(session)
    kwargs = {"comment": "looked into it", "data": {"objection_id": objection_id}}
    assert refused(session, case, action, conflicted, clock, **kwargs) == ["own_case"]
    b.act(session, case, action, b.actor(session, f"{UNIT}.secretary"), clock, **kwargs)
    assert session.get(Objection, objection_id).status != "open"


@covers(g.actor_is_submitter)
def test_only_the_submitter_withdraws_a_pledge(session, clock):
    case = b.drive(session, b.unit_case(session, UNIT), ("pledge", "submitted"), clock)
    submitter = b.subject_of(session, case)
    other = next(b.actor(session, f"{UNIT}.{role}") for role in ("secretary", "deputy", "clerk")
                 if b.actor(session, f"{UNIT}.{role}") != submitter)
    assert refused(session, case, "withdraw", other, clock) == ["not_submitter"]
    b.act(session, case, "withdraw", submitter, clock)
    assert state(case) == ("pledge", "drafting")


@covers(g.not_own_unit)
def test_an_office_admin_recuses_from_their_own_unit_or_enterprise(session, clock):
    case = b.drive(session, b.unit_case(session, UNIT), ("commendation", "under_notice"), clock)
    clock.set(shortlist_notice_ends(session, case))
    deputy = b.actor(session, "office.deputy")
    for org_code, scope in ((UNIT, "unit"), (BRANCH, "enterprise")):
        session.execute(sa.delete(Position).where(Position.person_id == deputy.person_id,
                                                  Position.role == "member"))
        give_position(session, "office.deputy", org_code, "member")
        reasons = refusal(session, case, "decide", deputy, clock, data={"commend": True})
        assert [r.code for r in reasons] == ["recusal"]
        assert f"own {scope}" in reasons[0].message
    b.act(session, case, "decide", b.office(session), clock, data={"commend": True})
    assert state(case) == ("closed", "commended")


@covers(g.not_voted_yet)
def test_one_ballot_per_evaluator(session, clock):
    case = b.drive(session, b.unit_case(session, UNIT), ("evaluation", "voting"), clock)
    voter = voters(session, case)[0]
    b.act(session, case, "cast_ballot", voter, clock, data=ballot(session, case))
    assert refused(session, case, "cast_ballot", voter, clock,
                   data=ballot(session, case, "dissatisfied")) == ["already_voted"]


# --- content -----------------------------------------------------------------------------------

@covers(g.comment_given)
def test_a_return_says_why(session, clock):
    case = b.drive(session, b.unit_case(session, UNIT), ("pledge", "submitted"), clock)
    superior = b.superior_of(session, case)
    for comment in (None, "", "   "):
        assert refused(session, case, "return", superior, clock,
                       comment=comment) == ["comment_required"]
    b.act(session, case, "return", superior, clock, comment="targets are not measurable")
    assert state(case) == ("pledge", "returned")


@covers(g.pledge_has_items)
def test_an_empty_pledge_cannot_be_submitted(session, clock):
    case = b.drive(session, b.unit_case(session, UNIT), ("pledge", "pending"), clock)
    b.act(session, case, "open_pledge", b.FLOW, clock)
    subject = b.subject_of(session, case)
    assert refused(session, case, "submit", subject, clock) == ["no_items"]
    b.act(session, case, "edit_pledge", subject, clock, data={"items": b.items_for(case)})
    b.act(session, case, "submit", subject, clock)
    assert state(case) == ("pledge", "submitted")


@covers(g.pledge_items_complete)
def test_every_item_needs_target_measures_and_deadline(session, clock):
    case = b.unit_case(session, UNIT)
    b.act(session, case, "open_pledge", b.FLOW, clock)
    subject = b.subject_of(session, case)
    items = b.items_for(case, 3)
    vague = [items[0], {**items[1], "measures": "  "}, {**items[2], "deadline_on": None}]
    b.act(session, case, "edit_pledge", subject, clock, data={"items": vague})
    reasons = refusal(session, case, "submit", subject, clock)
    assert [r.code for r in reasons] == ["items_incomplete"]
    assert "items 2, 3 " in reasons[0].message
    b.act(session, case, "edit_pledge", subject, clock, data={"items": items})
    b.act(session, case, "submit", subject, clock)
    assert state(case) == ("pledge", "submitted")


@covers(g.no_open_objection)
def test_a_notice_does_not_close_over_an_open_objection(session, clock):
    case = b.drive(session, b.unit_case(session, UNIT), ("pledge", "under_notice"), clock)
    objection_id = file_objection(session, case, clock)
    clock.set(pledge_notice(session, case).ends_at)
    assert refused(session, case, "close_notice", b.FLOW, clock) == ["open_objection"]
    b.act(session, case, "dismiss_objection", b.office(session), clock,
          comment="the targets are new", data={"objection_id": objection_id})
    b.act(session, case, "close_notice", b.FLOW, clock)
    assert state(case) == ("pledge", "done")


@covers(g.objection_is_open)
def test_only_an_open_objection_of_this_case_is_resolved(session, clock):
    case = b.drive(session, b.unit_case(session, UNIT), ("pledge", "under_notice"), clock)
    first = file_objection(session, case, clock)
    second = file_objection(session, case, clock)
    office = b.office(session)
    b.act(session, case, "dismiss_objection", office, clock, comment="unfounded",
          data={"objection_id": first})
    for objection_id in (first, second + 1000):  # already resolved; not an objection at all
        assert refused(session, case, "uphold_objection", office, clock, comment="founded",
                       data={"objection_id": objection_id}) == ["no_such_objection"]
    b.act(session, case, "uphold_objection", office, clock, comment="founded",
          data={"objection_id": second})
    assert state(case) == ("pledge", "returned")


@covers(g.fulfilment_item_of_case)
def test_a_ledger_line_is_about_an_item_of_this_case(session, clock):
    other = b.unit_case(session, "telecom")
    b.act(session, other, "open_pledge", b.FLOW, clock)
    b.act(session, other, "edit_pledge", b.subject_of(session, other), clock,
          data={"items": b.items_for(other, 1)})
    foreign = b.pledge_items(session, other)[0]
    case = b.drive(session, b.unit_case(session, UNIT), ("pledge", "approved"), clock)
    subject = b.subject_of(session, case)
    assert refused(session, case, "record_fulfilment", subject, clock,
                   data={"item_id": foreign.id, "status": "kept"}) == ["no_such_item"]
    own = b.pledge_items(session, case)[0]
    b.act(session, case, "record_fulfilment", subject, clock,
          data={"item_id": own.id, "status": "kept"})
    session.refresh(own)
    session.refresh(foreign)
    assert (own.fulfilment, foreign.fulfilment) == ("kept", "pending")


@covers(g.review_ratings_valid)
def test_review_ratings_are_on_the_grade_scale(session, clock):
    case = b.drive(session, b.unit_case(session, UNIT), ("review", "open"), clock)
    superior = b.superior_of(session, case)
    bad = {**REVIEW, "ratings": {"political_leadership": "superb", "development_drive": "good"}}
    good = {**REVIEW, "ratings": {"political_leadership": "excellent",
                                  "development_drive": "good"}}
    for action in ("record_review", "record_ad_hoc_review"):  # scheduled, then ad hoc
        reasons = refusal(session, case, action, superior, clock, data=bad)
        assert [r.code for r in reasons] == ["bad_rating"]
        assert "political_leadership=superb" in reasons[0].message
        assert "development_drive" not in reasons[0].message
        assert b.act(session, case, action, superior, clock, data=good).payload["review_id"]


@covers(g.ballot_valid)
def test_a_ballot_answers_criteria_of_the_round_on_its_scale(session, clock):
    case = b.drive(session, b.unit_case(session, UNIT), ("evaluation", "voting"), clock)
    voter = voters(session, case)[0]
    for answers in ({"political_leadership": "ecstatic"}, {"no_such_criterion": "satisfied"}):
        assert refused(session, case, "cast_ballot", voter, clock,
                       data={"answers": answers}) == ["bad_ballot"]
    b.act(session, case, "cast_ballot", voter, clock, data=ballot(session, case))
    assert refused(session, case, "cast_ballot", voter, clock,
                   data=ballot(session, case)) == ["already_voted"]


@covers(g.quorum_reached)
def test_a_round_below_quorum_is_not_tallied(session, clock):
    case = b.drive(session, b.unit_case(session, UNIT), ("evaluation", "voting"), clock)
    b.vote_all(session, case, clock, limit=below_quorum_count(session, case))
    clock.set(round_of(session, case).closes_at)
    assert refused(session, case, "close_round", b.FLOW, clock) == ["below_quorum"]
    b.act(session, case, "extend_round", b.FLOW, clock)
    b.vote_all(session, case, clock)
    b.act(session, case, "close_round", b.FLOW, clock)
    assert state(case) == ("evaluation", "tallied")


@covers(g.below_quorum)
def test_a_round_with_quorum_is_neither_extended_nor_given_up(session, clock):
    case = b.drive(session, b.unit_case(session, UNIT), ("evaluation", "voting"), clock)
    b.vote_all(session, case, clock, limit=below_quorum_count(session, case) + 1)
    clock.set(round_of(session, case).closes_at)
    assert refused(session, case, "extend_round", b.FLOW, clock) == ["quorum_reached"]
    b.act(session, case, "close_round", b.FLOW, clock)
    assert state(case) == ("evaluation", "tallied")


@covers(g.all_voted_or_deadline)
def test_a_round_closes_early_only_when_everyone_voted(session, clock):
    case = b.drive(session, b.unit_case(session, UNIT), ("evaluation", "voting"), clock)
    everyone = len(voters(session, case))
    b.vote_all(session, case, clock, limit=everyone - 1)  # quorum, but one may still vote
    assert refused(session, case, "close_round", b.FLOW, clock) == ["round_running"]
    b.vote_all(session, case, clock)
    b.act(session, case, "close_round", b.FLOW, clock)
    assert state(case) == ("evaluation", "tallied")
    assert round_of(session, case).tally["participation"] == 1


@covers(g.removed_have_not_voted)
def test_an_evaluator_who_voted_stays_assigned(session, clock):
    case = b.drive(session, b.unit_case(session, UNIT), ("evaluation", "voting"), clock)
    voted, waiting = voters(session, case)[:2]
    b.act(session, case, "cast_ballot", voted, clock, data=ballot(session, case))
    office = b.office(session)
    reasons = refusal(session, case, "assign_evaluators", office, clock,
                      data={"remove": [waiting.person_id, voted.person_id]})
    assert [r.code for r in reasons] == ["already_voted"]
    assert str(voted.person_id) in reasons[0].message
    assert str(waiting.person_id) not in reasons[0].message
    b.act(session, case, "assign_evaluators", office, clock,
          data={"remove": [waiting.person_id]})
    assert waiting not in voters(session, case) and voted in voters(session, case)


@covers(g.not_extended)
def test_a_round_is_extended_once(session, clock):
    case = b.drive(session, b.unit_case(session, UNIT), ("evaluation", "voting"), clock)
    clock.set(round_of(session, case).closes_at)
    b.act(session, case, "extend_round", b.FLOW, clock)
    clock.set(round_of(session, case).closes_at)
    assert refused(session, case, "extend_round", b.FLOW, clock) == ["already_extended"]


@covers(g.already_extended)
def test_a_round_is_given_up_only_after_its_extension(session, clock):
    case = b.drive(session, b.unit_case(session, UNIT), ("evaluation", "voting"), clock)
    clock.set(round_of(session, case).closes_at)
    assert refused(session, case, "mark_inconclusive", b.FLOW, clock) == ["not_extended"]
    b.act(session, case, "extend_round", b.FLOW, clock)
    clock.set(round_of(session, case).closes_at)
    b.act(session, case, "mark_inconclusive", b.FLOW, clock)
    assert state(case) == ("evaluation", "inconclusive")


@covers(g.selection_stored)
def test_a_case_is_nominated_only_through_a_stored_selection(session, clock):
    case = b.drive(session, b.unit_case(session, UNIT), ("evaluation", "announced"), clock)
    assert refused(session, case, "nominate", b.FLOW, clock) == ["not_selected"]
    p = period_of(session, case)
    commendation.run_selection(session, p.id, CampaignRules.model_validate(p.rules or {}),
                               actor=b.FLOW, clock=clock)
    session.refresh(case)
    assert state(case) == ("commendation", "considered")
    assert nomination_of(session, case).shortlisted


@covers(g.shortlist_posted)
def test_a_candidate_waits_on_notice_only_once_the_shortlist_is_posted(session, clock):
    case = b.drive(session, b.unit_case(session, UNIT), ("commendation", "considered"), clock)
    selection = session.get(Commendation, nomination_of(session, case).commendation_id)
    assert selection.status == "selected"
    assert refused(session, case, "open_shortlist_notice", b.FLOW,
                   clock) == ["shortlist_not_posted"]
    commendation.open_shortlist_notice(session, selection, actor=b.FLOW, clock=clock,
                                       notice_days=7)
    session.refresh(case)
    assert state(case) == ("commendation", "under_notice")


@covers(g.commend_only_shortlisted)
def test_only_a_shortlisted_candidate_is_commended(session, clock):
    case = b.drive(session, b.unit_case(session, UNIT), ("commendation", "under_notice"), clock)
    office = b.office(session)
    b.act(session, case, "adjust_nomination", office, clock,
          data={"shortlisted": False, "rationale": "disciplinary case pending"})
    clock.set(shortlist_notice_ends(session, case))
    assert refused(session, case, "decide", office, clock,
                   data={"commend": True}) == ["not_shortlisted"]
    b.act(session, case, "decide", office, clock, data={"commend": False})
    assert state(case) == ("closed", "not_commended")


@covers(g.within_quota)
def test_commendations_never_exceed_the_quota(session, clock):
    first = b.drive(session, b.unit_case(session, UNIT), ("evaluation", "announced"), clock)
    second = b.drive(session, b.unit_case(session, "telecom"), ("evaluation", "announced"), clock)
    b.drive(session, first, ("commendation", "under_notice"), clock)
    session.refresh(second)
    assert state(second) == ("commendation", "under_notice")
    commendation = session.get(Commendation, nomination_of(session, first).commendation_id)
    assert (commendation.quota, commendation.shortlist_size) == (1, 2)
    assert nomination_of(session, second).shortlisted
    clock.set(shortlist_notice_ends(session, first))
    office = b.office(session)
    b.act(session, first, "decide", office, clock, data={"commend": True})
    assert refused(session, second, "decide", office, clock,
                   data={"commend": True}) == ["quota_full"]
    b.act(session, second, "decide", office, clock, data={"commend": False})
    assert state(second) == ("closed", "not_commended")


# --- a refusal reports every reason at once --------------------------------------------------

def test_a_refused_decision_lists_every_failing_guard(session, clock):
    case = b.drive(session, b.unit_case(session, UNIT), ("commendation", "under_notice"), clock)
    office = b.office(session)
    b.act(session, case, "file_objection", PUBLIC, clock, data=OBJECTION)
    b.act(session, case, "adjust_nomination", office, clock,
          data={"shortlisted": False, "rationale": "disciplinary case pending"})
    give_position(session, "office.deputy", BRANCH, "member")
    assert refused(session, case, "decide", b.actor(session, "office.deputy"), clock,
                   data={"commend": True}) == [
        "recusal", "notice_running", "open_objection", "not_shortlisted"]


def test_a_refused_return_lists_every_failing_guard(session, clock):
    case = b.drive(session, b.unit_case(session, BRANCH), ("pledge", "submitted"), clock)
    conflicted = _subject_also_superior(session)
    assert refused(session, case, "return", conflicted, clock) == ["own_case", "comment_required"]


def test_a_refused_round_action_lists_every_failing_guard(session, clock):
    case = b.drive(session, b.unit_case(session, UNIT), ("evaluation", "voting"), clock)
    b.vote_all(session, case, clock)
    assert refused(session, case, "mark_inconclusive", b.FLOW, clock) == [
        "round_running", "quorum_reached", "not_extended"]

