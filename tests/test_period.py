"""Seeding, opening a period, rolling it over, and a whole simulated period, on both databases.

Everything here runs in the rolled-back ``session`` (or, for the empty-database seed, a
temporary SQLite file), so the tests may move periods and deactivate people freely.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from models import (
    Account,
    Case,
    Commendation,
    CriteriaSet,
    Criterion,
    EvaluationRound,
    Event,
    Nomination,
    Notification,
    Objection,
    Organization,
    Period,
    Person,
    Pledge,
    PledgeItem,
    Position,
)
from service import history, migrate, seed_data
from service.clock import FixedClock, end_of_day, start_of_day
from service.db import make_engine, make_session_factory, transaction
from service.errors import TransitionRefused
from service.periods import get_period, open_period, roll_over
from service.seed import seed
from service.simulation import run_period
from service.workflow.roles import UNIT_STAFF, Actor
from tests import builders as b

UNIT_KINDS = ("committee", "general_branch", "branch")
NOTHING_NEW = "nothing new (already seeded)"


# --- helpers -------------------------------------------------------------------------------


def count(session: Session, model: Any, *where: Any) -> int:
    return session.scalar(sa.select(sa.func.count()).select_from(model).where(*where)) or 0


def snapshot(session: Session) -> dict[str, Any]:
    """Row counts of everything a period operation may write, and every period's status."""
    return {
        "cases": count(session, Case), "events": count(session, Event),
        "notifications": count(session, Notification), "pledges": count(session, Pledge),
        "pledge_items": count(session, PledgeItem),
        "head": history.head(session),
        "periods": session.execute(sa.select(Period.code, Period.status)
                                   .order_by(Period.sequence)).all(),
    }


def seeded_counts(session: Session) -> dict[str, int]:
    return {m.__name__: count(session, m) for m in
            (Organization, Period, CriteriaSet, Criterion, Person, Account, Position)}


def expected_subjects(session: Session) -> set[str]:
    """Every active unit and every active Party member of an active unit, computed here
    (not with ``subjects_for``) so that the test checks the product's query."""
    units = session.scalars(sa.select(Organization.id).where(
        Organization.kind != "campaign_office", Organization.active.is_(True)))
    members = session.scalars(
        sa.select(Person.id).join(Organization, Organization.id == Person.organization_id)
        .where(Person.is_party_member.is_(True), Person.active.is_(True),
               Organization.active.is_(True), Organization.kind != "campaign_office"))
    return {f"organization:{i}" for i in units} | {f"member:{i}" for i in members}


def case_keys(session: Session, period: Period) -> list[str]:
    return list(session.scalars(sa.select(Case.subject_key).where(Case.period_id == period.id)))


def period_events(session: Session, action: str, period: Period) -> int:
    return count(session, Event, Event.action == action, Event.period_id == period.id)


def opened_notices(session: Session, period: Period) -> list[int]:
    """Recipients of the "period opened" notification of this period."""
    return list(session.scalars(sa.select(Notification.recipient_person_id).where(
        Notification.template == "period_rolled_over",
        Notification.batch_key.like(f"period_opened:{period.code}:%"))))


# --- seed ----------------------------------------------------------------------------------


def test_seed_again_creates_nothing_and_the_notice_is_there(session):
    before = seeded_counts(session)

    for demo in (True, False, True):
        report = seed(session, demo=demo)
        assert report.summary() == NOTHING_NEW
        assert not any(report.created.values())
    assert seeded_counts(session) == before

    office = session.scalars(sa.select(Organization).where(Organization.code == "office")).one()
    assert (office.kind, office.parent_id) == ("campaign_office", None)
    committees = session.scalars(sa.select(Organization.code).where(
        Organization.kind == "committee", Organization.parent_id == office.id)
        .order_by(Organization.id)).all()
    assert committees == [u.code for u in seed_data.UNITS]
    assert len(committees) == 8
    assert count(session, Organization, Organization.kind == "committee") == 8

    periods = session.scalars(sa.select(Period).order_by(Period.sequence)).all()
    assert [(p.code, p.sequence, p.starts_on, p.ends_on) for p in periods] == [
        ("2010", 1, date(2010, 6, 1), date(2010, 12, 31)),
        ("2011-h1", 2, date(2011, 1, 1), date(2011, 6, 30)),
        ("2011-2012", 3, date(2011, 7, 1), date(2012, 11, 7)),
    ]
    for period, spec in zip(periods, seed_data.PERIODS, strict=True):
        assert [getattr(period, k) for k, _ in spec.calendar()] == \
            [d for _, d in spec.calendar()]
        assert period.status == "planned"

    sizes = dict(session.execute(
        sa.select(CriteriaSet.code, sa.func.count(Criterion.id))
        .join(Criterion, Criterion.criteria_set_id == CriteriaSet.id)
        .group_by(CriteriaSet.code)).all())
    assert sizes == {"four_strengths": 4, "four_excellences": 4, "six_carriers": 6}


def test_seed_on_an_empty_database_then_again(tmp_path):
    url = f"sqlite:///{tmp_path / 'seed.db'}"
    migrate.upgrade(url)
    engine = make_engine(url)
    factory = make_session_factory(engine)
    try:
        with transaction(factory) as s:
            first = seed(s)
        assert first.created == {"organizations": 9, "periods": 3, "criteria_sets": 3,
                                 "criteria": 14}
        with transaction(factory) as s:
            assert seed(s).summary() == NOTHING_NEW
            demo = seed(s, demo=True)
            assert demo.created.get("people", 0) > 0
            assert "periods" not in demo.created and "criteria" not in demo.created
        with transaction(factory) as s:
            counts = seeded_counts(s)
            assert seed(s, demo=True).summary() == NOTHING_NEW
            assert seeded_counts(s) == counts
    finally:
        engine.dispose()


# --- open_period ---------------------------------------------------------------------------


def test_open_period_gives_every_active_unit_and_party_member_a_case(session):
    # Make "active" matter: one branch (with its members) and one member elsewhere go inactive.
    branch = session.scalars(
        sa.select(Organization).where(Organization.kind == "branch", sa.exists().where(
            Person.organization_id == Organization.id, Person.is_party_member.is_(True)))
        .order_by(Organization.id)).first()
    branch.active = False
    retired = session.scalars(sa.select(Person).where(
        Person.is_party_member.is_(True), Person.organization_id != branch.id,
        Person.organization_id.in_(sa.select(Organization.id).where(
            Organization.kind.in_(UNIT_KINDS)))).order_by(Person.id.desc())).first()
    retired.active = False
    session.flush()
    period = b.period(session)
    clock = b.clock_at(period.starts_on)
    before = snapshot(session)
    expected = expected_subjects(session)

    opened = open_period(session, period, actor=b.FLOW, clock=clock)

    keys = case_keys(session, period)
    assert sorted(keys) == sorted(expected) and opened == len(expected)
    assert f"organization:{branch.id}" not in keys and f"member:{retired.id}" not in keys
    branch_members = session.scalars(sa.select(Person.id).where(
        Person.organization_id == branch.id)).all()
    assert branch_members and not {f"member:{p}" for p in branch_members} & set(keys)
    committees = session.scalars(sa.select(Organization.id).where(
        Organization.kind == "committee")).all()
    assert {f"organization:{c}" for c in committees} <= set(keys)
    # Not the campaign office (nor its staff), not workers.
    office = b.org(session, "office")
    office_staff = session.scalars(sa.select(Person.id).where(
        Person.organization_id == office.id)).all()
    workers = session.scalars(sa.select(Person.id).where(
        Person.is_party_member.is_(False))).all()
    assert office_staff and workers
    assert f"organization:{office.id}" not in keys
    assert not {f"member:{p}" for p in (*office_staff, *workers)} & set(keys)
    member_cases = session.execute(sa.select(Case.person_id, Case.organization_id).where(
        Case.period_id == period.id, Case.subject_kind == "member")).all()
    homes = dict(session.execute(sa.select(Person.id, Person.organization_id)).all())
    assert all(homes[pid] == oid for pid, oid in member_cases)
    states = session.execute(sa.select(Case.stage, Case.status, Case.version).where(
        Case.period_id == period.id).distinct()).all()
    assert states == [("pledge", "pending", 1)]
    assert period.status == "open"
    assert period_events(session, "open_period", period) == 1
    assert period_events(session, "open_case", period) == len(expected)
    assert opened_notices(session, period)
    assert history.verify(session) is None
    after_open = snapshot(session)
    assert after_open["cases"] == before["cases"] + len(expected)

    # Idempotent: again, nothing.
    assert open_period(session, period, actor=b.FLOW, clock=clock) == 0
    assert snapshot(session) == after_open

    # ... and it completes what is missing: the member comes back, gets a case, nobody else.
    retired.active = True
    session.flush()
    assert open_period(session, period, actor=b.FLOW, clock=clock) == 1
    assert f"member:{retired.id}" in case_keys(session, period)
    assert count(session, Case) == after_open["cases"] + 1
    assert period_events(session, "open_period", period) == 1
    assert history.verify(session) is None


# --- roll_over -----------------------------------------------------------------------------


def test_roll_over_refuses_before_the_period_ends(session):
    period = b.period(session)
    clock = b.clock_at(period.starts_on)
    b.opened_period(session, clock)
    b.drive(session, b.unit_case(session, "telecom"), ("pledge", "submitted"), clock)
    before = snapshot(session)

    for instant in (start_of_day(period.starts_on), start_of_day(period.ends_on),
                    end_of_day(period.ends_on) - timedelta(microseconds=1)):
        with pytest.raises(TransitionRefused) as refused:
            roll_over(session, "2010", actor=b.FLOW, clock=FixedClock(instant))
        assert [r.code for r in refused.value.reasons] == ["period_not_ended"]
        session.flush()
        assert snapshot(session) == before
    assert get_period(session, "2010").status == "open"
    assert get_period(session, "2011-h1").status == "planned"


def test_roll_over_lapses_closes_opens_carries_over_and_is_idempotent(session):
    old, new = b.period(session, "2010"), b.period(session, "2011-h1")
    clock = b.clock_at(old.starts_on)
    b.opened_period(session, clock)
    # A: a draft with pending items.  D: a member's submitted pledge.
    drafting = b.drive(session, b.unit_case(session, "supply-marketing"), ("pledge", "drafting"),
                       clock)
    b.act(session, drafting, "edit_pledge", b.subject_of(session, drafting), clock,
          data={"summary": "s", "items": b.items_for(drafting, 3)})
    member = session.scalars(sa.select(Case).where(
        Case.period_id == old.id, Case.subject_kind == "member").order_by(Case.id)).first()
    b.drive(session, member, ("pledge", "submitted"), clock)
    # B: reviewed; one item kept (stays behind), one in progress (carried over).
    reviewed = b.drive(session, b.unit_case(session, "telecom"), ("review", "acknowledged"),
                       clock)
    kept_item, going_item = b.pledge_items(session, reviewed)
    for item, status in ((kept_item, "kept"), (going_item, "in_progress")):
        b.act(session, reviewed, "record_fulfilment", b.subject_of(session, reviewed), clock,
              data={"item_id": item.id, "status": status, "evidence": "minutes"})
    # C: finished the period (closed), every item kept: it neither lapses nor carries over.
    finished = b.drive(session, b.unit_case(session, "post"), ("closed", "not_commended"), clock)

    unfinished = set(session.scalars(sa.select(Case.id).where(
        Case.period_id == old.id, Case.stage != "closed")))
    assert finished.id not in unfinished and {drafting.id, member.id, reviewed.id} <= unfinished
    unkept = set(session.scalars(
        sa.select(PledgeItem.id).join(Pledge).join(Case, Case.id == Pledge.case_id)
        .where(Case.period_id == old.id, PledgeItem.fulfilment.in_(("pending", "in_progress")))))
    assert going_item.id in unkept and kept_item.id not in unkept and len(unkept) == 3 + 2 + 1
    old_events = dict(session.execute(sa.select(Event.seq, Event.hash)).all())
    old_statuses = dict(session.execute(sa.select(Case.id, Case.status).where(
        Case.period_id == old.id)).all())
    expected = expected_subjects(session)

    # The period ends at midnight after its last day (campaign time): exactly then it may roll.
    at_end = FixedClock(end_of_day(old.ends_on))
    flow = Actor(flow="rollover")
    report = roll_over(session, "2010", actor=flow, clock=at_end)

    assert (report.closed_period, report.lapsed, report.opened_period, report.cases_opened) == \
        ("2010", len(unfinished), "2011-h1", len(expected))
    session.refresh(old)
    session.refresh(new)
    assert (old.status, new.status) == ("closed", "open")
    # Unfinished cases lapsed; the finished one kept its outcome.
    rows = session.execute(sa.select(Case.id, Case.stage, Case.status).where(
        Case.period_id == old.id)).all()
    for case_id, stage, status in rows:
        assert stage == "closed"
        assert status == ("lapsed" if case_id in unfinished else old_statuses[case_id])
    assert old_statuses[finished.id] == "not_commended"
    # History kept: every earlier event is still there, unchanged; one lapse event per case.
    still = dict(session.execute(sa.select(Event.seq, Event.hash).where(
        Event.seq.in_(list(old_events)))).all())
    assert still == old_events
    lapses = session.execute(sa.select(Event.case_id, Event.to_status, Event.actor_flow)
                             .where(Event.action == "lapse")).all()
    assert sorted(c for c, _, _ in lapses) == sorted(unfinished)
    assert {(t, f) for _, t, f in lapses} == {("closed.lapsed", "rollover")}
    assert period_events(session, "close_period", old) == 1
    assert period_events(session, "open_period", new) == 1
    assert count(session, Pledge, Pledge.case_id == drafting.id) == 1  # the old pledge remains
    # The next period: a case for every subject, in its initial state.
    assert sorted(case_keys(session, new)) == sorted(expected)
    assert period_events(session, "open_case", new) == len(expected)
    # Unkept items carried over into the new drafts, linked to what they continue.
    carried = session.execute(
        sa.select(PledgeItem, Case).join(Pledge, Pledge.id == PledgeItem.pledge_id)
        .join(Case, Case.id == Pledge.case_id)
        .where(PledgeItem.carried_over_from_id.is_not(None))).all()
    assert sorted(i.carried_over_from_id for i, _ in carried) == sorted(unkept)
    for item, case in carried:
        source = session.get(PledgeItem, item.carried_over_from_id)
        source_case = session.scalar(sa.select(Case).join(Pledge).where(
            Pledge.id == source.pledge_id))
        assert case.period_id == new.id and case.subject_key == source_case.subject_key
        assert (case.stage, case.status) == ("pledge", "pending")
        assert (item.target, item.criterion_id, item.fulfilment) == \
            (source.target, source.criterion_id, "pending")
    assert count(session, PledgeItem, PledgeItem.pledge_id.in_(
        sa.select(Pledge.id).join(Case).where(Case.period_id == new.id))) == len(unkept)
    payloads = dict(session.execute(sa.select(Event.case_id, Event.payload).where(
        Event.action == "open_case", Event.period_id == new.id)).all())
    carried_counts = {p.get("carried_items") for p in payloads.values()}
    assert carried_counts == {None, 1, 2, 3}
    # Everyone concerned is told, once: unit staff, and members with a case in the new period.
    staff = set(session.scalars(sa.select(Position.person_id).where(
        Position.role.in_(tuple(UNIT_STAFF)))))
    members = set(session.scalars(sa.select(Case.person_id).where(
        Case.period_id == new.id, Case.person_id.is_not(None))))
    reachable = set(session.scalars(sa.select(Person.id).where(
        Person.active.is_(True), Person.email.is_not(None), Person.id.in_(staff | members))))
    told = opened_notices(session, new)
    assert len(told) == len(set(told)) and set(told) == reachable and reachable
    assert history.verify(session) is None

    # Again: nothing left to do, nothing written.
    after = snapshot(session)
    report = roll_over(session, "2010", actor=flow, clock=FixedClock(at_end.now()
                                                                      + timedelta(days=3)))
    assert (report.closed_period, report.lapsed, report.opened_period, report.cases_opened) == \
        (None, 0, None, 0)
    session.flush()
    assert snapshot(session) == after

    # The carried-over draft opens for drafting with its items (no second, empty pledge).
    clock = FixedClock(start_of_day(new.starts_on))
    next_case = b.unit_case(session, "supply-marketing", "2011-h1")
    b.act(session, next_case, "open_pledge", b.FLOW, clock)
    assert (next_case.stage, next_case.status) == ("pledge", "drafting")
    assert count(session, Pledge, Pledge.case_id == next_case.id) == 1
    assert [i.target for i in b.pledge_items(session, next_case)] == \
        [i["target"] for i in b.items_for(drafting, 3)]


# --- a whole period -----------------------------------------------------------------------


def test_a_whole_period_runs_to_the_end_and_rolls_over(session):
    summary = run_period(session, "2010", clock=FixedClock(), roll_over=True)

    assert summary.audit == "OK"
    assert history.verify(session) is None
    old, new = get_period(session, "2010"), get_period(session, "2011-h1")
    assert (old.status, new.status) == ("closed", "open")
    # Every case of 2010 ended, and the summary says how.
    states = dict(session.execute(sa.select(Case.status, sa.func.count()).where(
        Case.period_id == old.id).group_by(Case.status)).all())
    stages = session.scalars(sa.select(sa.distinct(Case.stage)).where(
        Case.period_id == old.id)).all()
    assert stages == ["closed"]
    assert {k: v for k, v in summary.by_state.items()} == \
        {f"closed/{status}": n for status, n in states.items()}
    assert states.get("commended", 0) > 0 and states.get("not_commended", 0) > 0
    # Commendations: decided, within quota, only from the shortlist.
    selections = session.scalars(sa.select(Commendation).where(
        Commendation.period_id == old.id)).all()
    assert {s.award for s in selections} == {"advanced_organization", "outstanding_member"}
    total_commended = 0
    for selection in selections:
        rows = session.execute(sa.select(Nomination.shortlisted, Case.status)
                               .join(Case, Case.id == Nomination.case_id)
                               .where(Nomination.commendation_id == selection.id)).all()
        commended = [shortlisted for shortlisted, status in rows if status == "commended"]
        shortlisted = sum(1 for s, _ in rows if s)
        assert selection.status == "decided"
        assert 0 < len(commended) <= selection.quota, selection.award
        assert shortlisted >= len(commended)
        assert all(commended), "a case was commended from outside the shortlist"
        assert len(summary.commended[selection.award]) == len(commended)
        total_commended += len(commended)
    assert total_commended == states["commended"]
    # The public objected once, and it was upheld; some rounds fell below quorum.
    assert count(session, Objection, Objection.status == "upheld") >= 1
    assert count(session, Objection, Objection.status == "open") == 0
    assert count(session, EvaluationRound, EvaluationRound.status == "inconclusive") >= 1
    assert count(session, EvaluationRound, EvaluationRound.status == "tallied") >= 1
    assert count(session, Event, Event.action == "uphold_objection") >= 1
    # The rollover: 2010 closed, 2011-h1 opened with a case for every subject.
    assert summary.rollover.startswith("2010 closed") and "2011-h1 opened" in summary.rollover
    assert sorted(case_keys(session, new)) == sorted(expected_subjects(session))
    assert period_events(session, "close_period", old) == 1
    assert period_events(session, "open_period", new) == 1
    assert summary.events == history.head(session)[0] == count(session, Event)
    assert summary.notifications == count(session, Notification)
    assert opened_notices(session, new)
