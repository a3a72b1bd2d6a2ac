"""The demo's script: ``Demo`` steps the shared clock through one period's calendar, has the
people act through the API between the steps, and lets the real flows drive the stages."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from service.demo.people import People
from service.demo.report import PeriodReport


def _pick(case_id: int, salt: str, modulo: int) -> int:
    """A deterministic 'random' number for this case and purpose."""
    return int(hashlib.sha256(f"{case_id}:{salt}".encode()).hexdigest()[:8], 16) % modulo


# --- the campaign -------------------------------------------------------------------------------

@dataclass
class CaseInfo:
    case_id: int
    kind: str
    subject: int | None
    superior: int | None
    criteria: list[str]


class Demo:
    def __init__(self, factory: Any, clock: Any, people: People, office: int,
                 flows: dict[str, Callable[..., Any]], log: Callable[[str], None]) -> None:
        self.factory, self.clock, self.people, self.office = factory, clock, people, office
        self.flows, self.log = flows, log
        self.report: PeriodReport = PeriodReport("")
        self._mark = time.perf_counter()
        self.timings: list[tuple[str, float]] = []

    # -- helpers --------------------------------------------------------------------------------

    def at(self, day: date, hour: int = 0, minute: int = 0) -> None:
        from service.clock import CAMPAIGN_TZ

        now = time.perf_counter()
        self.timings.append((self.clock.now().isoformat(), now - self._mark))
        self._mark = now
        self.clock.set(datetime(day.year, day.month, day.day, hour, minute, tzinfo=CAMPAIGN_TZ))

    def flow(self, name: str, **kwargs: Any) -> dict[str, Any]:
        self.report.flow_runs[name] += 1
        result = self.flows[name](**kwargs)
        if name == "drive_period":
            self.report.flow_done.update(result.get("done", {}))
            for step in result.get("period_steps", []):
                self.report.flow_done[step["action"]] += 1
        return result

    def drive(self, code: str) -> dict[str, Any]:
        return self.flow("drive_period", period_code=code)

    def remind(self, code: str, day: date) -> None:
        self.at(day, 8, 30)
        self.flow("send_reminders", period_code=code)

    def cases(self, code: str, stage: str | None = None, status: str | None = None
              ) -> list[int]:
        from models import Case, Period

        query = (sa.select(Case.id).join(Period, Period.id == Case.period_id)
                 .where(Period.code == code).order_by(Case.id))
        if stage:
            query = query.where(Case.stage == stage)
        if status:
            query = query.where(Case.status == status)
        with self.factory() as s:
            return list(s.scalars(query))

    def case_infos(self, code: str) -> dict[int, CaseInfo]:
        """Who acts for each case (read from the directory: the demo's script, not an act)."""
        from models import Case, CriteriaSet, Criterion, Organization, Period
        from service import directory

        infos: dict[int, CaseInfo] = {}
        with self.factory() as s:
            sets = {code_: list(s.scalars(sa.select(Criterion.code).join(CriteriaSet).where(
                CriteriaSet.code == code_).order_by(Criterion.position)))
                for code_ in ("four_strengths", "four_excellences")}
            rows = s.scalars(sa.select(Case).join(Period, Period.id == Case.period_id)
                             .where(Period.code == code).order_by(Case.id)).all()
            for case in rows:
                org = s.get(Organization, case.organization_id)
                subjects = [p.id for p in directory.audience(s, "subject", case, org)
                            if self.people.can(p.id)]
                superiors = [p.id for p in directory.audience(s, "superior", case, org)
                             if self.people.can(p.id)]
                kind = case.subject_kind
                infos[case.id] = CaseInfo(
                    case.id, kind, subjects[0] if subjects else None,
                    superiors[0] if superiors else None,
                    sets["four_strengths" if kind == "organization" else "four_excellences"])
        return infos

    # -- one period -----------------------------------------------------------------------------

    def run_period(self, period: dict[str, Any], first: bool) -> PeriodReport:
        started = time.perf_counter()
        code = period["code"]
        self.report = report = PeriodReport(code)
        cal = {k: date.fromisoformat(v) for k, v in period["calendar"].items()}
        rules = period["rules"]
        notice_days = int(rules.get("notice_days", 7))
        p = self.people

        if first:  # the office opens the first period; rollovers open the others
            self.at(cal["starts_on"], 0, 5)
            p.call("POST", f"/api/v1/periods/{code}/open", self.office)
        infos = self.case_infos(code)
        ids = sorted(infos)
        late = {i for i in ids if _pick(i, "late", 8) == 0}
        returned = {i for i in ids if _pick(i, "return", 7) == 3}
        report.late, report.returned = len(late), len(returned)

        # 1. The pledge stage opens at the period's start (flow).
        self.at(cal["starts_on"], 1)
        self.drive(code)

        # 2. Most units and members draft and submit within days; superiors approve, some
        #    pledges go back once for being vague; the flow posts the approved ones.
        self.at(cal["starts_on"] + timedelta(days=3), 10)
        deadline_items = cal["evaluation_opens_on"] - timedelta(days=7)

        def draft_and_submit(case_id: int) -> None:
            info = infos[case_id]
            if info.subject is None:
                return
            n = 2 + _pick(case_id, "items", 3)
            items = [{"criterion": c, "target": f"围绕{c}的年度目标 {case_id}-{k}",
                      "measures": "制定措施，按月推进，党务公开栏公布进度",
                      "deadline_on": deadline_items.isoformat()}
                     for k, c in enumerate(info.criteria[:n])]
            p.call("PUT", f"/api/v1/cases/{case_id}/pledge", info.subject,
                   json={"summary": "创先争优公开承诺", "items": items})
            p.call("POST", f"/api/v1/cases/{case_id}/pledge/submit", info.subject)

        def review_pledge(case_id: int) -> None:
            info = infos[case_id]
            if info.superior is None:
                return
            if case_id in returned:
                p.call("POST", f"/api/v1/cases/{case_id}/pledge/return", info.superior,
                       json={"comment": "承诺目标不够具体，请细化可考核指标"})
                p.call("POST", f"/api/v1/cases/{case_id}/pledge/submit", info.subject)
            p.call("POST", f"/api/v1/cases/{case_id}/pledge/approve", info.superior)

        on_time = [i for i in ids if i not in late]
        p.each(on_time, draft_and_submit)
        self.at(cal["starts_on"] + timedelta(days=5), 10)
        p.each(self.cases(code, "pledge", "submitted"), review_pledge)
        self.at(cal["starts_on"] + timedelta(days=5), 11)
        self.drive(code)  # publish

        # 3. Someone reads the bulletin and objects to a pledge under notice; the office
        #    upholds it, the unit resubmits, the superior approves, the flow posts it again.
        self.at(cal["starts_on"] + timedelta(days=6), 15)
        bulletin = p.call("GET", "/api/v1/bulletin", params={"period": code}).json()
        target = bulletin["pledges_under_notice"][0]["case_id"]
        p.call("POST", f"/api/v1/cases/{target}/objections",
               json={"body": "承诺内容与实际不符", "filed_by_name": "一名职工"})
        objections = p.call("GET", f"/api/v1/cases/{target}/objections", self.office).json()
        open_ = [o["id"] for o in objections if o["status"] == "open"]
        p.call("POST", f"/api/v1/objections/{open_[0]}/uphold", self.office,
               json={"comment": "异议属实，退回修改"})
        report.objection_upheld = target
        self.at(cal["starts_on"] + timedelta(days=7), 10)
        p.call("POST", f"/api/v1/cases/{target}/pledge/submit", infos[target].subject)
        p.call("POST", f"/api/v1/cases/{target}/pledge/approve", infos[target].superior)
        self.at(cal["starts_on"] + timedelta(days=7), 11)
        self.drive(code)  # publish the corrected pledge
        self.at(cal["starts_on"] + timedelta(days=8 + notice_days), 1)
        self.drive(code)  # close the notices

        # 4. The pledge deadline: reminders 3 and 1 days before, escalations 3 days after,
        #    then the late ones pledge; the flow posts them and closes their notice.
        due = cal["pledge_due_on"]
        for day in (due - timedelta(days=3), due - timedelta(days=1), due + timedelta(days=3)):
            self.remind(code, day)
        self.at(due + timedelta(days=3), 14)
        p.each(sorted(late), draft_and_submit)
        self.at(due + timedelta(days=4), 10)
        p.each(self.cases(code, "pledge", "submitted"), review_pledge)
        self.at(due + timedelta(days=4), 11)
        self.drive(code)
        self.at(due + timedelta(days=5 + notice_days), 1)
        self.drive(code)

        # 5. Leader review opens on its date (flow); superiors review, most subjects
        #    acknowledge with a plan, subjects record fulfilment with evidence.
        self.at(cal["review_opens_on"], 1)
        self.drive(code)
        self.at(cal["review_opens_on"] + timedelta(days=5), 10)
        review = {"achievements": "承诺事项推进有力", "problems": "个别事项进度偏慢",
                  "direction": "加强督查，按期兑现承诺"}

        def write_review(case_id: int) -> None:
            if infos[case_id].superior is not None:
                p.call("POST", f"/api/v1/cases/{case_id}/reviews", infos[case_id].superior,
                       json=review)

        p.each(self.cases(code, "review", "open"), write_review)
        self.remind(code, cal["review_due_on"] - timedelta(days=1))
        self.at(cal["review_due_on"] - timedelta(days=1), 15)
        items_of = self._items_of(code)

        def answer_review(case_id: int) -> None:
            subject = infos[case_id].subject
            if subject is None:
                return
            if _pick(case_id, "ack", 4):  # most acknowledge; a few never do
                p.call("POST", f"/api/v1/cases/{case_id}/reviews/acknowledge", subject,
                       json={"rectification_plan": "建立整改台账，月底前完成"})
            for n, item_id in enumerate(items_of.get(case_id, [])):
                kept = not (n == 0 and _pick(case_id, "kept", 6) == 5)
                p.call("POST", f"/api/v1/cases/{case_id}/pledge/items/{item_id}/fulfilment",
                       subject, json={"status": "kept" if kept else "not_kept",
                                      "evidence": "会议纪要与验收材料",
                                      "note": "" if kept else "受客观因素影响，已向职工说明"})

        p.each(self.cases(code, "review"), answer_review)

        # 6. The evaluation opens on its date (flow: rounds and ballot invitations); the
        #    evaluators vote — except in some rounds, which stay below quorum; the flow closes
        #    and announces, extends the rounds below quorum once, then gives them up.
        self.at(cal["evaluation_opens_on"], 1)
        self.drive(code)
        self.at(cal["evaluation_opens_on"] + timedelta(days=2), 10)
        options = [o["code"] for o in period["scale_options"]]
        weights = [0, 0, 0, 0, 0, 1, 1, 2, 3]
        ballots = self._ballots(code)
        voting = [c for c in self.cases(code, "evaluation", "voting") if c in ballots]
        below = {c for c in voting if _pick(c, "quorum", 5) == 4} or set(voting[:1])
        report.below_quorum = len(below)
        work: list[tuple[int, int, dict[str, str]]] = []
        for case_id in voting:
            criteria, voters = ballots[case_id]
            voters = [v for v in voters if p.can(v)]
            if case_id in below:
                voters = voters[:1] if len(voters) > 2 else []
            for voter in voters:
                work.append((case_id, voter, {
                    c: options[min(weights[_pick(case_id, f"{voter}{c}", 9)], len(options) - 1)]
                    for c in criteria}))

        def cast(w: tuple[int, int, dict[str, str]]) -> None:
            p.call("POST", f"/api/v1/cases/{w[0]}/round/ballot", w[1], json={"answers": w[2]})

        p.each(work, cast)
        self.remind(code, cal["evaluation_due_on"] - timedelta(days=1))
        self.at(cal["evaluation_due_on"] + timedelta(days=1), 1)
        self.drive(code)  # close (and announce) or extend
        extension = int(rules.get("round_extension_days", 7))
        self.at(cal["evaluation_due_on"] + timedelta(days=extension + 2), 1)
        self.drive(code)  # give up what is still below quorum (and select, once all evaluated)

        # 7. Commendation: the flow selects and posts the shortlists (if not done already),
        #    hands the decision to the office after the notice; the office decides.
        selection_day = cal["commendation_on"] - timedelta(days=notice_days + 1)
        if self.clock.now().date() < selection_day:
            self.at(selection_day, 0, 30)
            self.drive(code)
        self.at(cal["commendation_on"], 1)
        self.drive(code)  # hand-off (and anything still due)
        self.at(cal["commendation_on"], 10)
        self._decide(code)

        # 8. The period ends: the flow rolls it over (the next period opens with carry-over).
        self.at(cal["ends_on"] + timedelta(days=1), 0, 10)
        rolled = self.flow("roll_over_period", period_code=code)
        for r in rolled.get("periods", []):
            if r.get("period") == code:
                report.rollover = (f"{r.get('closed_period')} closed ({r.get('lapsed')} lapsed); "
                                   f"{r.get('opened_period') or '-'} opened with "
                                   f"{r.get('cases_opened', 0)} cases")
        report.commended = self._commended(code)
        report.seconds = time.perf_counter() - started
        return report

    def _items_of(self, code: str) -> dict[int, list[int]]:
        from models import Case, Period, Pledge, PledgeItem

        out: dict[int, list[int]] = {}
        with self.factory() as s:
            for case_id, item_id in s.execute(
                    sa.select(Case.id, PledgeItem.id).join(Pledge, Pledge.case_id == Case.id)
                    .join(PledgeItem, PledgeItem.pledge_id == Pledge.id)
                    .join(Period, Period.id == Case.period_id).where(Period.code == code)
                    .order_by(Case.id, PledgeItem.position)):
                out.setdefault(case_id, []).append(item_id)
        return out

    def _ballots(self, code: str) -> dict[int, tuple[list[str], list[int]]]:
        from models import Case, EvaluationRound, EvaluatorAssignment, Period

        out: dict[int, tuple[list[str], list[int]]] = {}
        with self.factory() as s:
            rounds = s.execute(sa.select(EvaluationRound.id, EvaluationRound.case_id,
                                         EvaluationRound.criteria)
                               .join(Case, Case.id == EvaluationRound.case_id)
                               .join(Period, Period.id == Case.period_id)
                               .where(Period.code == code)).all()
            for round_id, case_id, criteria in rounds:
                voters = list(s.scalars(sa.select(EvaluatorAssignment.person_id).where(
                    EvaluatorAssignment.round_id == round_id).order_by(EvaluatorAssignment.id)))
                out[case_id] = (list(criteria), voters)
        return out

    def _decide(self, code: str) -> None:
        """The office commends the best-ranked shortlisted candidates, up to each quota."""
        p = self.people
        awards = p.call("GET", f"/api/v1/periods/{code}/commendations", self.office).json()
        work: list[tuple[int, bool]] = []
        for award in awards:
            if award["status"] != "under_notice":
                continue
            ranked = sorted((n for n in award["nominations"] if n["shortlisted"]
                             and n["status"] == "under_notice"),
                            key=lambda n: (n["rank"] is None, n["rank"] or 0))
            chosen = {n["nomination_id"] for n in ranked[:award["quota"]]}
            work += [(n["nomination_id"], n["nomination_id"] in chosen)
                     for n in award["nominations"] if n["status"] == "under_notice"]

        def decide(w: tuple[int, bool]) -> None:
            p.call("POST", f"/api/v1/nominations/{w[0]}/decide", self.office,
                   json={"commend": w[1], "comment": "经公示无异议，研究决定" if w[1]
                         else "名额所限，本次不予表彰"})

        p.each(work, decide)

    def _commended(self, code: str) -> dict[str, list[str]]:
        bulletin = self.people.call("GET", "/api/v1/bulletin", params={"period": code}).json()
        out: dict[str, list[str]] = {}
        for award in bulletin.get("commended", []):
            names = [c["subject"].get("member_name") or c["subject"]["unit_name_zh"]
                     for c in award["commended"]]
            out.setdefault(award["award"], []).extend(names)
        return out
