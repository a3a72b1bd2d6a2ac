"""Chasing what is late: reminders before deadlines, escalations after them, and the hand-off
of the commendation decision to the campaign office.

Set-based over whole periods: one query for the cases, one for the evaluators who have not
voted, the organization tree and every position loaded once; then one batched email per
recipient per day (``outbox.enqueue_batched``), so 200 overdue cases under one superior are
one escalation listing 200 items. Running it again the same day adds nothing; the next day
brings a new email. Nothing is sent here: rows leave through the outbox after commit.

When: a reminder on each day that is exactly ``reminder_days_before`` days (3 and 1) before the
deadline's calendar day; an escalation on every day from ``escalation_days_after`` days (3, at
least 1) after it while the case still waits — a daily digest to the superior.

Who must act, by state (the people ``service.directory.audience`` names; the inbox agrees):

    pledge/drafting, pledge/returned   subject     (submit)        escalate to the superior
    pledge/submitted                   superior    (approve)       escalate one level higher
    review/open                        superior    (review)        escalate one level higher
    review/recorded                    subject     (acknowledge)   escalate to the superior
    evaluation/voting                  evaluators who have not voted (no escalation: the
                                       flows close, extend or give up the round at its deadline)
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from models import (
    Case,
    Commendation,
    EvaluationRound,
    EvaluatorAssignment,
    Event,
    Nomination,
    Organization,
    Period,
    Person,
    Position,
    PublicNotice,
)
from notifications import outbox
from service import history
from service.clock import Clock, end_of_day, local_date
from service.rules import CampaignRules
from service.workflow.roles import LEADERS, UNIT_STAFF, Actor

__all__ = ["CHASED", "ChaseReport", "run_reminders", "hand_off_decisions", "handed_off",
           "Directory", "HAND_OFF"]

#: state → (who must act, the action links their reminder carries)
CHASED: dict[tuple[str, str], tuple[str, tuple[str, ...]]] = {
    ("pledge", "drafting"): ("subject", ("submit",)),
    ("pledge", "returned"): ("subject", ("submit",)),
    ("pledge", "submitted"): ("superior", ("approve", "return")),
    ("review", "open"): ("superior", ("record_review",)),
    ("review", "recorded"): ("subject", ("acknowledge_review",)),
    ("evaluation", "voting"): ("evaluators", ("cast_ballot",)),
}
HAND_OFF = "hand_off_decision"
_EPSILON = timedelta(microseconds=1)


@dataclass
class ChaseReport:
    """What one run queued: cases concerned, recipients, items added to the day's emails."""

    as_of: date
    reminded_cases: int = 0
    escalated_cases: int = 0
    reminder_recipients: set[int] = field(default_factory=set)
    escalation_recipients: set[int] = field(default_factory=set)
    items_added: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"as_of": self.as_of.isoformat(), "reminded_cases": self.reminded_cases,
                "escalated_cases": self.escalated_cases,
                "reminder_recipients": len(self.reminder_recipients),
                "escalation_recipients": len(self.escalation_recipients),
                "items_added": self.items_added}


class Directory:
    """``directory.audience`` for many cases at once: the tree and positions loaded once."""

    def __init__(self, session: Session) -> None:
        self.orgs = {o.id: o for o in session.scalars(sa.select(Organization))}
        self._held: dict[tuple[int, str], list[Person]] = defaultdict(list)
        for org_id, role, person in session.execute(
                sa.select(Position.organization_id, Position.role, Person)
                .join(Person, Person.id == Position.person_id)
                .where(Person.active.is_(True)).order_by(Person.id)):
            self._held[(org_id, role)].append(person)
        self.office = self.holders([o.id for o in self.orgs.values()
                                    if o.kind == "campaign_office"], ("admin",))

    def holders(self, org_ids: list[int | None], roles: tuple[str, ...] | frozenset[str]
                ) -> list[Person]:
        """Active people holding any of ``roles`` in any of ``org_ids``, by id."""
        found = {p.id: p for o in org_ids if o is not None for r in roles
                 for p in self._held.get((o, r), ())}
        return [found[k] for k in sorted(found)]

    def subject(self, case: Case, member: Person | None) -> list[Person]:
        if case.subject_kind == "member":
            return [member] if member is not None and member.active else []
        return self.holders([case.organization_id], tuple(UNIT_STAFF))

    def _superior_org(self, case: Case) -> Organization | None:
        org = self.orgs[case.organization_id]
        if case.subject_kind == "member" and [
                p for p in self.holders([org.id], tuple(LEADERS)) if p.id != case.person_id]:
            return org
        return self.orgs.get(org.parent_id) if org.parent_id else None

    def superior(self, case: Case) -> list[Person]:
        """As ``directory.audience(..., "superior", ...)``."""
        org = self.orgs[case.organization_id]
        if case.subject_kind == "member":
            own = [p for p in self.holders([org.id], tuple(LEADERS)) if p.id != case.person_id]
            if own:
                return own
        return self.holders([org.parent_id], (*LEADERS, "admin"))

    def above_superior(self, case: Case) -> list[Person]:
        """Whoever leads the superior's organization's parent; the office at the top."""
        sup = self._superior_org(case)
        parent = sup.parent_id if sup is not None else None
        return self.holders([parent], (*LEADERS, "admin")) or self.office


def _deadline_day(due_at: datetime) -> date:
    """The calendar day a deadline belongs to (a midnight deadline ends the day before)."""
    return local_date(due_at - _EPSILON)


def _item(case: Case, org: Organization, member: Person | None, period: Period,
          links: tuple[str, ...]) -> dict[str, Any]:
    return {"case_id": case.id, "stage": case.stage, "status": case.status,
            "unit_zh": org.name_zh, "unit_en": org.name_en,
            "subject_name": member.name if member is not None else org.name_zh,
            "period_zh": period.name_zh, "period_en": period.name_en,
            "due_at": case.due_at.isoformat() if case.due_at else None,
            "version": case.version, "link_actions": list(links)}


def _unvoted(session: Session, case_ids: list[int]) -> dict[int, list[Person]]:
    out: dict[int, list[Person]] = defaultdict(list)
    for start in range(0, len(case_ids), 1000):
        for case_id, person in session.execute(
                sa.select(EvaluationRound.case_id, Person)
                .join(EvaluatorAssignment, EvaluatorAssignment.round_id == EvaluationRound.id)
                .join(Person, Person.id == EvaluatorAssignment.person_id)
                .where(EvaluationRound.case_id.in_(case_ids[start:start + 1000]),
                       EvaluationRound.status == "open", EvaluatorAssignment.voted_at.is_(None),
                       Person.active.is_(True)).order_by(Person.id)):
            out[case_id].append(person)
    return out


def run_reminders(session: Session, periods: list[Period], *, today: date,
                  now: datetime) -> ChaseReport:
    """Queue the day's reminders and escalations for every chased case of ``periods``."""
    report = ChaseReport(as_of=today)
    if not periods:
        return report
    by_id = {p.id: p for p in periods}
    rules = {p.id: CampaignRules.model_validate(p.rules or {}) for p in periods}
    horizon = max(max(r.reminder_days_before, default=0) for r in rules.values())
    states = sa.or_(*[sa.and_(Case.stage == s, Case.status == t) for s, t in CHASED])
    cases = list(session.scalars(
        sa.select(Case).where(Case.period_id.in_(list(by_id)), states,
                              Case.due_at.is_not(None),
                              Case.due_at <= end_of_day(today + timedelta(days=horizon)))
        .order_by(Case.due_at, Case.id)))
    if not cases:
        return report
    who = Directory(session)
    members = {p.id: p for p in session.scalars(sa.select(Person).where(
        Person.id.in_({c.person_id for c in cases if c.person_id is not None})))}
    unvoted = _unvoted(session, [c.id for c in cases if c.stage == "evaluation"])
    queued: list[tuple[str, Person, dict[str, Any]]] = []
    for case in cases:
        assert case.due_at is not None
        rule, period = rules[case.period_id], by_id[case.period_id]
        role, links = CHASED[(case.stage, case.status)]
        member = members.get(case.person_id) if case.person_id else None
        org = who.orgs[case.organization_id]
        days_left = (_deadline_day(case.due_at) - today).days
        if days_left in rule.reminder_days_before:
            people = (who.subject(case, member) if role == "subject" else who.superior(case)
                      if role == "superior" else unvoted.get(case.id, []))
            item = _item(case, org, member, period, links)
            queued += [("reminder", p, item) for p in people]
            report.reminded_cases += bool(people)
            report.reminder_recipients |= {p.id for p in people}
        elif -days_left >= max(rule.escalation_days_after, 1) and role != "evaluators":
            # overdue: the deadline's day is over, and N more days have passed
            people = who.superior(case) if role == "subject" else who.above_superior(case)
            item = _item(case, org, member, period, ())
            queued += [("escalation", p, item) for p in people]
            report.escalated_cases += bool(people)
            report.escalation_recipients |= {p.id for p in people}
    for template, person, item in queued:
        report.items_added += outbox.enqueue_batched(session, person, template=template,
                                                     day=today, item=item, now=now)
    return report


def handed_off(session: Session, period_id: int) -> set[int]:
    """Ids of the commendations whose decision was already handed to the office."""
    payloads = session.scalars(sa.select(Event.payload).where(
        Event.period_id == period_id, Event.action == HAND_OFF))
    return {int(p["commendation_id"]) for p in payloads if p and "commendation_id" in p}


def hand_off_decisions(session: Session, period: Period, *, actor: Actor,
                       clock: Clock) -> list[dict[str, Any]]:
    """Tell the campaign office, once per award, that a shortlist's notice has ended and its
    decisions are due: one ``reminder`` email per office admin listing the cases to decide
    (batch key ``hand_off:<commendation id>``), and an event in the history. Idempotent."""
    now = clock.now()
    selections = list(session.scalars(
        sa.select(Commendation).where(Commendation.period_id == period.id)
        .order_by(Commendation.id).with_for_update().execution_options(populate_existing=True)))
    done = handed_off(session, period.id)
    who = Directory(session) if selections else None
    out = []
    for sel in selections:
        notice = session.scalars(sa.select(PublicNotice).where(
            PublicNotice.commendation_id == sel.id).order_by(PublicNotice.id.desc())).first()
        outcome = {"commendation_id": sel.id, "award": sel.award, "status": sel.status}
        if sel.id in done:
            out.append({**outcome, "result": "already_handed_off"})
            continue
        if sel.status != "under_notice" or notice is None or now < notice.ends_at:
            out.append({**outcome, "result": "not_due"})
            continue
        assert who is not None
        items = _decision_items(session, sel, period, who)
        notified = outbox.enqueue(session, who.office, template="reminder",
                                  context={"items": items}, now=now,
                                  batch_key=f"hand_off:{sel.id}") if items else 0
        history.append(session, history.EventDraft(
            action=HAND_OFF, actor=actor, occurred_at=now, period_id=period.id,
            payload={"commendation_id": sel.id, "award": sel.award, "cases": len(items),
                     "notified": notified}))
        out.append({**outcome, "result": "handed_off", "cases": len(items),
                    "notified": notified})
    return out


def _decision_items(session: Session, sel: Commendation, period: Period,
                    who: Directory) -> list[dict[str, Any]]:
    """The cases of a selection still awaiting a decision, shortlisted first by rank."""
    rows = session.execute(
        sa.select(Case, Nomination.shortlisted).join(Nomination, Nomination.case_id == Case.id)
        .where(Nomination.commendation_id == sel.id, Case.stage == "commendation",
               Case.status == "under_notice")
        .order_by(Nomination.shortlisted.desc(), Nomination.rank.is_(None), Nomination.rank,
                  Case.id)).all()
    members = {p.id: p for p in session.scalars(sa.select(Person).where(
        Person.id.in_({c.person_id for c, _ in rows if c.person_id is not None})))}
    decide_by = end_of_day(period.commendation_on)
    return [{**_item(case, who.orgs[case.organization_id], members.get(case.person_id or -1),
                     period, ()), "due_at": decide_by.isoformat(), "shortlisted": shortlisted}
            for case, shortlisted in rows]
