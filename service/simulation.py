"""A whole campaign period played through the engine with a simulated clock.

People act as the notice expects — units and members pledge, superiors approve (and sometimes
return), a member of the public objects, leaders review, representatives vote (some rounds fall
below quorum), the office selects and decides — while the calendar moves. Every act goes through
``engine.apply``; nothing is written around it. Used by ``pledgeflow simulate`` (the main job
until the service exists) and by the end-to-end tests on SQLite and PostgreSQL.

Behaviour varies by case id, deterministically, so runs are repeatable.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from models import (
    Case,
    Commendation,
    CriteriaSet,
    Criterion,
    EvaluationRound,
    EvaluatorAssignment,
    Nomination,
    Notification,
    Objection,
    Organization,
    Person,
    Pledge,
    PledgeItem,
)
from service import commendation, directory, history
from service.clock import FixedClock, end_of_day
from service.errors import TransitionRefused
from service.periods import get_period, open_period, roll_over
from service.rules import CampaignRules
from service.workflow import engine
from service.workflow.roles import Actor

__all__ = ["run_period", "PeriodSummary"]

FLOW = Actor(flow="simulation")


@dataclass
class PeriodSummary:
    """What happened in a simulated period, for people to read."""

    period: str
    by_state: Counter[str] = field(default_factory=Counter)
    commended: dict[str, list[str]] = field(default_factory=dict)
    events: int = 0
    notifications: int = 0
    audit: str = ""
    rollover: str = ""

    def render(self) -> str:
        lines = [f"period {self.period}:"]
        lines += [f"  {state:<28} {n:>5}" for state, n in sorted(self.by_state.items())]
        for award, names in self.commended.items():
            lines.append(f"  {award} ({len(names)}): {', '.join(names) or '-'}")
        lines += [f"  events: {self.events}; notifications queued: {self.notifications}",
                  f"  audit verify: {self.audit}"]
        if self.rollover:
            lines.append(f"  rollover: {self.rollover}")
        return "\n".join(lines)


def _pick(case_id: int, salt: str, modulo: int) -> int:
    """A deterministic 'random' number for this case and purpose."""
    return int(hashlib.sha256(f"{case_id}:{salt}".encode()).hexdigest()[:8], 16) % modulo


class _Campaign:
    """The people and helpers of one simulated period."""

    def __init__(self, session: Session, period_code: str, clock: FixedClock) -> None:
        self.session, self.clock = session, clock
        self.period = get_period(session, period_code)
        self.rules = CampaignRules.model_validate(self.period.rules or {})
        office = directory.audience(session, "office", *self._any_case_pair())
        if not office:
            raise ValueError("no campaign office admin: run `pledgeflow seed --demo` first")
        self.office = Actor(person_id=office[0].id)

    def _any_case_pair(self) -> tuple[Case, Organization]:
        org = self.session.scalars(sa.select(Organization).limit(1)).one()
        return Case(subject_kind="organization", organization_id=org.id), org

    def cases(self, stage: str | None = None, status: str | None = None) -> list[Case]:
        query = sa.select(Case).where(Case.period_id == self.period.id).order_by(Case.id)
        if stage:
            query = query.where(Case.stage == stage)
        if status:
            query = query.where(Case.status == status)
        return list(self.session.scalars(query))

    def people(self, case: Case, audience: str) -> list[directory.Addressee]:
        org = self.session.get(Organization, case.organization_id)
        round_id = self.session.scalar(
            sa.select(EvaluationRound.id).where(EvaluationRound.case_id == case.id))
        return directory.audience(self.session, audience, case, org, round_id=round_id)

    def act(self, case: Case, action: str, actor: Actor, **kwargs: object) -> None:
        engine.apply(self.session, case_id=case.id, action=action, actor=actor,
                     clock=self.clock, **kwargs)  # type: ignore[arg-type]

    def subject(self, case: Case) -> Actor:
        return Actor(person_id=self.people(case, "subject")[-1].id)

    def superior(self, case: Case) -> Actor:
        return Actor(person_id=self.people(case, "superior")[0].id)

    def to(self, day: object) -> None:
        self.clock.set(day)  # type: ignore[arg-type]


def run_period(session: Session, period_code: str, *, clock: FixedClock,
               roll_over: bool = True) -> PeriodSummary:
    """Play one period from opening to commendation (and roll over); return what happened."""
    c = _Campaign(session, period_code, clock)
    c.to(c.period.starts_on)
    open_period(session, c.period, actor=FLOW, clock=clock)
    _pledge(c)
    _review(c)
    _evaluate(c)
    _commend(c)
    return _summarise(c, roll_over)


def _items_for(c: _Campaign, case: Case) -> list[dict[str, object]]:
    set_code = "four_strengths" if case.subject_kind == "organization" else "four_excellences"
    codes = c.session.scalars(sa.select(Criterion.code).join(CriteriaSet).where(
        CriteriaSet.code == set_code).order_by(Criterion.position)).all()
    deadline = c.period.evaluation_opens_on - timedelta(days=7)
    return [{"criterion": code, "target": f"围绕{code}的年度目标 {case.id}-{n}",
             "measures": "制定措施，按月推进，党务公开栏公布进度", "deadline_on": deadline}
            for n, code in enumerate(codes[: 2 + _pick(case.id, "items", 3)])]


def _pledge(c: _Campaign) -> None:
    for case in c.cases("pledge", "pending"):
        c.act(case, "open_pledge", FLOW)
    c.clock.advance(days=3)
    for case in c.cases("pledge", "drafting"):
        subject = c.subject(case)
        c.act(case, "edit_pledge", subject, data={"summary": "创先争优公开承诺",
                                                  "items": _items_for(c, case)})
        c.act(case, "submit", subject)
    c.clock.advance(days=2)
    for case in c.cases("pledge", "submitted"):
        if _pick(case.id, "return", 7) == 3:  # some pledges are vague and go back once
            c.act(case, "return", c.superior(case), comment="承诺目标不够具体，请细化可考核指标")
            c.act(case, "submit", c.subject(case))
        c.act(case, "approve", c.superior(case))
        c.act(case, "publish", FLOW)
    objected = c.cases("pledge", "under_notice")[0]  # one objection from the public is upheld
    c.act(objected, "file_objection", Actor.public(),
          data={"body": "承诺内容与实际不符", "filed_by_name": "一名职工"})
    objection_id = c.session.scalar(sa.select(Objection.id).where(Objection.case_id == objected.id))
    c.act(objected, "uphold_objection", c.office, comment="异议属实，退回修改",
          data={"objection_id": objection_id})
    c.act(objected, "submit", c.subject(objected))
    c.act(objected, "approve", c.superior(objected))
    c.act(objected, "publish", FLOW)
    c.clock.advance(days=c.rules.notice_days + 1)
    for case in c.cases("pledge", "under_notice"):
        c.act(case, "close_notice", FLOW)


def _review(c: _Campaign) -> None:
    c.to(c.period.review_opens_on)
    for case in c.cases("pledge", "done"):
        c.act(case, "open_review", FLOW)
    c.clock.advance(days=5)
    review = {"achievements": "承诺事项推进有力", "problems": "个别事项进度偏慢",
              "direction": "加强督查，按期兑现承诺"}
    for case in c.cases("review", "open"):
        c.act(case, "record_review", c.superior(case), data=review)
        if _pick(case.id, "ack", 4):  # most acknowledge; a few are late and never do
            c.act(case, "acknowledge_review", c.subject(case),
                  data={"rectification_plan": "建立整改台账，月底前完成"})
    for case in c.cases("review"):
        pledge_id = c.session.scalar(sa.select(Pledge.id).where(Pledge.case_id == case.id))
        items = c.session.scalars(sa.select(PledgeItem.id).where(PledgeItem.pledge_id == pledge_id)
                                  .order_by(PledgeItem.position)).all()
        for n, item_id in enumerate(items):
            kept = not (n == 0 and _pick(case.id, "kept", 6) == 5)
            c.act(case, "record_fulfilment", c.subject(case), data={
                "item_id": item_id, "status": "kept" if kept else "not_kept",
                "evidence": "会议纪要与验收材料",
                "note": "" if kept else "受客观因素影响，已向职工说明"})


def _evaluate(c: _Campaign) -> None:
    c.to(c.period.evaluation_opens_on)
    for case in c.cases("review"):
        c.act(case, "open_evaluation", FLOW)
    c.clock.advance(days=2)
    options = [o.code for o in c.rules.ballot_scale.options]
    weights = [0, 0, 0, 0, 0, 1, 1, 2, 3]  # mostly satisfied, some less so
    for case in c.cases("evaluation", "voting"):
        round_ = c.session.scalars(sa.select(EvaluationRound).where(
            EvaluationRound.case_id == case.id)).one()
        voters = c.session.scalars(sa.select(EvaluatorAssignment.person_id).where(
            EvaluatorAssignment.round_id == round_.id).order_by(EvaluatorAssignment.id)).all()
        if _pick(case.id, "quorum", 5) == 4:  # a round that falls below quorum
            voters = voters[:1] if len(voters) > 2 else []
        for voter in voters:
            answers = {crit: options[min(weights[_pick(case.id, f"{voter}{crit}", 9)],
                                         len(options) - 1)] for crit in round_.criteria}
            c.act(case, "cast_ballot", Actor(person_id=voter), data={"answers": answers})
    c.clock.set(end_of_day(c.period.evaluation_due_on) + timedelta(hours=1))
    for case in c.cases("evaluation", "voting"):
        try:
            c.act(case, "close_round", FLOW)
        except TransitionRefused:  # below quorum: extend once, give up after the extension
            c.act(case, "extend_round", FLOW)
    c.clock.advance(days=c.rules.round_extension_days + 1)
    for case in c.cases("evaluation", "voting"):
        c.act(case, "mark_inconclusive", FLOW)
    for case in c.cases("evaluation", "tallied"):
        c.act(case, "announce_results", FLOW)


def _commend(c: _Campaign) -> None:
    c.to(c.period.commendation_on - timedelta(days=c.rules.notice_days + 2))
    made = commendation.run_selection(c.session, c.period.id, c.rules, actor=FLOW, clock=c.clock)
    for selection_row in made.values():
        commendation.open_shortlist_notice(c.session, selection_row, actor=FLOW, clock=c.clock,
                                           notice_days=c.rules.notice_days)
    c.to(c.period.commendation_on)
    for selection_row in made.values():  # the office commends the best-ranked, up to the quota
        ranked = c.session.scalars(sa.select(Nomination.case_id).where(
            Nomination.commendation_id == selection_row.id, Nomination.shortlisted.is_(True))
            .order_by(Nomination.rank)).all()
        chosen = set(ranked[:selection_row.quota])
        for case in c.cases("commendation", "under_notice"):
            if case.id in ranked or case.id in chosen:
                c.act(case, "decide", c.office, data={"commend": case.id in chosen})
    for case in c.cases("commendation", "under_notice"):
        c.act(case, "decide", c.office, data={"commend": False})
    for selection_row in made.values():
        commendation.finish_if_decided(c.session, selection_row, actor=c.office, clock=c.clock)


def _summarise(c: _Campaign, do_roll_over: bool) -> PeriodSummary:
    s = c.session
    summary = PeriodSummary(period=c.period.code)
    for stage, status, n in s.execute(sa.select(Case.stage, Case.status, sa.func.count())
                                      .where(Case.period_id == c.period.id)
                                      .group_by(Case.stage, Case.status)):
        summary.by_state[f"{stage}/{status}"] = n
    for award, name_zh, person_name in s.execute(
            sa.select(Commendation.award, Organization.name_zh, Person.name)
            .join(Nomination, Nomination.commendation_id == Commendation.id)
            .join(Case, Case.id == Nomination.case_id)
            .join(Organization, Organization.id == Case.organization_id)
            .outerjoin(Person, Person.id == Case.person_id)
            .where(Commendation.period_id == c.period.id, Case.status == "commended")
            .order_by(Commendation.award, Nomination.rank)):
        summary.commended.setdefault(award, []).append(person_name or name_zh)
    if do_roll_over:
        c.to(c.period.ends_on + timedelta(days=1))
        report = roll_over(s, c.period.code, actor=FLOW, clock=c.clock)
        summary.rollover = (
            f"{report.closed_period} closed ({report.lapsed} lapsed); "
            f"{report.opened_period or '-'} opened with {report.cases_opened} cases")
    summary.events = history.head(s)[0]
    summary.notifications = s.scalar(sa.select(sa.func.count()).select_from(Notification)) or 0
    broken = history.verify(s)
    summary.audit = "OK" if broken is None else f"BROKEN at {broken.seq}: {broken.problem}"
    return summary

