"""Plain builder functions for tests: find seeded things, act as people, and walk a case to any
state — always through ``engine.apply``, never around it."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from models import (
    Account,
    Case,
    Commendation,
    EvaluationRound,
    EvaluatorAssignment,
    Event,
    Notification,
    Organization,
    Period,
    Person,
    Pledge,
    PledgeItem,
)
from service import commendation, directory
from service.clock import FixedClock, end_of_day, start_of_day
from service.periods import get_period, open_period
from service.rules import CampaignRules
from service.workflow import engine
from service.workflow.roles import Actor

FLOW = Actor(flow="test")
State = tuple[str, str]

# The happy path, in order; ``drive`` walks it up to the state asked for.
HAPPY_PATH: tuple[State, ...] = (
    ("pledge", "pending"), ("pledge", "drafting"), ("pledge", "submitted"),
    ("pledge", "approved"), ("pledge", "under_notice"), ("pledge", "done"),
    ("review", "open"), ("review", "recorded"), ("review", "acknowledged"),
    ("evaluation", "voting"), ("evaluation", "tallied"), ("evaluation", "announced"),
    ("commendation", "considered"), ("commendation", "under_notice"), ("closed", "commended"),
)
# Side states: (state on the happy path to start from, how to get there).
SIDE_STATES: dict[State, State] = {
    ("pledge", "returned"): ("pledge", "submitted"),
    ("evaluation", "inconclusive"): ("evaluation", "voting"),
    ("closed", "not_commended"): ("commendation", "under_notice"),
    ("closed", "lapsed"): ("pledge", "drafting"),
}
ALL_STATES = (*HAPPY_PATH, *SIDE_STATES)


def clock_at(day: date | datetime) -> FixedClock:
    """A clock standing at the start of a campaign day (or at an instant)."""
    return FixedClock(day if isinstance(day, datetime) else start_of_day(day))


def person(session: Session, username: str) -> Person:
    return session.scalars(sa.select(Person).join(Account, Account.person_id == Person.id)
                           .where(Account.username == username)).one()


def actor(session: Session, username: str) -> Actor:
    return Actor(person_id=person(session, username).id)


def org(session: Session, code: str) -> Organization:
    return session.scalars(sa.select(Organization).where(Organization.code == code)).one()


def period(session: Session, code: str = "2010") -> Period:
    return get_period(session, code)


def opened_period(session: Session, clock: FixedClock, code: str = "2010") -> Period:
    """The period, opened (cases for everyone), with the clock at its first day."""
    p = period(session, code)
    clock.set(max(clock.now(), start_of_day(p.starts_on)))
    open_period(session, p, actor=FLOW, clock=clock)
    return p


def unit_case(session: Session, unit_code: str, period_code: str = "2010") -> Case:
    return session.scalars(sa.select(Case).join(Period, Period.id == Case.period_id).where(
        Period.code == period_code, Case.subject_key == f"organization:{org(session, unit_code).id}"
    )).one()


def member_case(session: Session, username: str, period_code: str = "2010") -> Case:
    return session.scalars(sa.select(Case).join(Period, Period.id == Case.period_id).where(
        Period.code == period_code, Case.subject_key == f"member:{person(session, username).id}"
    )).one()


def people(session: Session, case: Case, audience: str) -> list[directory.Addressee]:
    round_id = session.scalar(sa.select(EvaluationRound.id).where(
        EvaluationRound.case_id == case.id))
    return directory.audience(session, audience, case,
                              session.get(Organization, case.organization_id), round_id=round_id)


def subject_of(session: Session, case: Case) -> Actor:
    return Actor(person_id=people(session, case, "subject")[0].id)


def superior_of(session: Session, case: Case) -> Actor:
    return Actor(person_id=people(session, case, "superior")[0].id)


def office(session: Session) -> Actor:
    return actor(session, "office.admin")


def act(session: Session, case: Case, action: str, who: Actor, clock: FixedClock,
        **kwargs: Any) -> engine.Outcome:
    """Apply an action and refresh the case object."""
    outcome = engine.apply(session, case_id=case.id, action=action, actor=who, clock=clock,
                           **kwargs)
    session.refresh(case)
    return outcome


def items_for(case: Case, n: int = 2, deadline: date = date(2010, 11, 1)) -> list[dict]:
    codes = ("political_leadership", "development_drive", "reform_innovation") \
        if case.subject_kind == "organization" else \
        ("political_quality", "job_skill", "work_performance")
    return [{"criterion": codes[i], "target": f"target {i}", "measures": f"measures {i}",
             "deadline_on": deadline} for i in range(n)]


def event_count(session: Session) -> int:
    return session.scalar(sa.select(sa.func.count()).select_from(Event)) or 0


def notification_count(session: Session) -> int:
    return session.scalar(sa.select(sa.func.count()).select_from(Notification)) or 0


def _later(clock: FixedClock, when: datetime) -> None:
    clock.set(max(clock.now(), when))


def _step(session: Session, case: Case, clock: FixedClock, p: Period) -> None:
    """Take the one happy-path step out of the case's current state."""
    rules = CampaignRules.model_validate(p.rules or {})
    state = (case.stage, case.status)
    if state == ("pledge", "pending"):
        _later(clock, start_of_day(p.starts_on))
        act(session, case, "open_pledge", FLOW, clock)
    elif state == ("pledge", "drafting"):
        act(session, case, "edit_pledge", subject_of(session, case), clock,
            data={"summary": "s", "items": items_for(case)})
        act(session, case, "submit", subject_of(session, case), clock)
    elif state == ("pledge", "submitted"):
        act(session, case, "approve", superior_of(session, case), clock)
    elif state == ("pledge", "approved"):
        act(session, case, "publish", FLOW, clock)
    elif state == ("pledge", "under_notice"):
        clock.advance(days=rules.notice_days, hours=1)
        act(session, case, "close_notice", FLOW, clock)
    elif state == ("pledge", "done"):
        _later(clock, start_of_day(p.review_opens_on))
        act(session, case, "open_review", FLOW, clock)
    elif state == ("review", "open"):
        act(session, case, "record_review", superior_of(session, case), clock,
            data={"achievements": "a", "problems": "p", "direction": "d"})
    elif state == ("review", "recorded"):
        act(session, case, "acknowledge_review", subject_of(session, case), clock,
            data={"rectification_plan": "plan"})
    elif state == ("review", "acknowledged"):
        for item in pledge_items(session, case):
            act(session, case, "record_fulfilment", subject_of(session, case), clock,
                data={"item_id": item.id, "status": "kept", "evidence": "minutes"})
        _later(clock, start_of_day(p.evaluation_opens_on))
        act(session, case, "open_evaluation", FLOW, clock)
    elif state == ("evaluation", "voting"):
        vote_all(session, case, clock)
        act(session, case, "close_round", FLOW, clock)
    elif state == ("evaluation", "tallied"):
        act(session, case, "announce_results", FLOW, clock)
    elif state == ("evaluation", "announced"):
        commendation.run_selection(session, p.id, rules, actor=FLOW, clock=clock)
        session.refresh(case)
    elif state == ("commendation", "considered"):
        selection_id = session.scalar(sa.text(
            "select commendation_id from nomination where case_id = :c"), {"c": case.id})
        commendation.open_shortlist_notice(
            session, session.get(Commendation, selection_id), actor=FLOW, clock=clock,
            notice_days=rules.notice_days)
        session.refresh(case)
    elif state == ("commendation", "under_notice"):
        clock.advance(days=rules.notice_days, hours=1)
        act(session, case, "decide", office(session), clock, data={"commend": True})
    else:
        raise AssertionError(f"no happy-path step from {state}")


def vote_all(session: Session, case: Case, clock: FixedClock, option: str = "satisfied",
             limit: int | None = None) -> int:
    """Every (or the first ``limit``) assigned evaluator votes ``option`` on every criterion."""
    round_ = session.scalars(sa.select(EvaluationRound).where(
        EvaluationRound.case_id == case.id)).one()
    voters = session.scalars(sa.select(EvaluatorAssignment.person_id).where(
        EvaluatorAssignment.round_id == round_.id, EvaluatorAssignment.voted_at.is_(None))
        .order_by(EvaluatorAssignment.id)).all()
    for voter in voters[:limit]:
        act(session, case, "cast_ballot", Actor(person_id=voter), clock,
            data={"answers": {c: option for c in round_.criteria}})
    return len(voters[:limit])


def drive(session: Session, case: Case, target: State, clock: FixedClock) -> Case:
    """Walk a case through the engine until it is in ``target`` (any state of the table)."""
    p = session.get(Period, case.period_id)
    assert p is not None
    if target in SIDE_STATES:
        drive(session, case, SIDE_STATES[target], clock)
        if target == ("pledge", "returned"):
            act(session, case, "return", superior_of(session, case), clock, comment="vague")
        elif target == ("evaluation", "inconclusive"):
            vote_all(session, case, clock, limit=1)
            _later(clock, end_of_day(p.evaluation_due_on) + timedelta(hours=1))
            act(session, case, "extend_round", FLOW, clock)
            clock.advance(days=30)
            act(session, case, "mark_inconclusive", FLOW, clock)
        elif target == ("closed", "not_commended"):
            clock.advance(days=30)
            act(session, case, "decide", office(session), clock, data={"commend": False})
        elif target == ("closed", "lapsed"):
            _later(clock, end_of_day(p.ends_on))
            act(session, case, "lapse", FLOW, clock)
        return case
    index = HAPPY_PATH.index(target)
    for _ in range(len(HAPPY_PATH)):
        if (case.stage, case.status) == target:
            return case
        if (case.stage, case.status) not in HAPPY_PATH[:index]:
            raise AssertionError(f"case is at {(case.stage, case.status)}, past {target}")
        _step(session, case, clock, p)
    raise AssertionError(f"could not reach {target}")


def pledge_items(session: Session, case: Case) -> list[PledgeItem]:
    pledge_id = session.scalar(sa.select(Pledge.id).where(Pledge.case_id == case.id))
    return list(session.scalars(sa.select(PledgeItem).where(PledgeItem.pledge_id == pledge_id)
                                .order_by(PledgeItem.position)))
