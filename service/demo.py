"""``pledgeflow demo``: the seed's whole campaign replayed on the embedded defaults, fast.

A fresh SQLite database under ``var/demo/`` (wiped first), migrated and seeded with the
notice's data and the demo people; the real app (``create_app``, with its outbox dispatcher)
under uvicorn on a free loopback port in a thread; the local mail catcher on a free port as its
SMTP server; and one ``FixedClock`` shared by the app and the dispatcher, which this module
steps through each period's calendar.

Between the clock's steps **people act through the JSON API** with their own bearer tokens
(httpx, a small thread pool): units and members draft and submit pledges (most on time, some
late — they get reminders and their superiors escalations), superiors approve (about one in
seven goes back once), a member of the public objects to a pledge on the bulletin and the
office upholds it, leaders review, subjects acknowledge and record fulfilment, evaluators vote
(some rounds stay below quorum), and the campaign office decides the commendations within the
quota. **The real flows drive the calendar** (``drive_period``, ``send_reminders``,
``roll_over_period``) with a flow service token, exactly as the schedule would run them.

How the flows are called: as plain functions (``flow.fn``, the same code path as
``pledgeflow flows run … --plain``); with ``prefect=True`` (``pledgeflow demo --prefect``) they
run as Prefect flow runs on Prefect's ephemeral server instead. Not measured here yet:
docs/flows.md gives 8–23 s for the ephemeral server's cold start plus per-run bookkeeping, over
the ~60 flow runs of a full replay, so ``.fn`` is the default (``DEMO_FLOW_MODE``).

Who does what varies by case id, deterministically (``_pick``), so runs are repeatable.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

__all__ = ["run_demo", "DemoReport", "PeriodReport", "serving", "free_port", "FLOW_NAME",
           "DEMO_FLOW_MODE"]

FLOW_NAME = "flows"  # the service token's flow name: every act of the flows carries it
#: How the demo calls the flows by default (see the module docstring for the measurement).
DEMO_FLOW_MODE = "plain (.fn, no Prefect server)"
PEOPLE_THREADS = 4


def _pick(case_id: int, salt: str, modulo: int) -> int:
    """A deterministic 'random' number for this case and purpose."""
    return int(hashlib.sha256(f"{case_id}:{salt}".encode()).hexdigest()[:8], 16) % modulo


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(make_app: Callable[[str], Any], *, name: str = "pledgeflow-demo-service"
            ) -> Iterator[str]:
    """The app ``make_app(base_url)`` builds, under uvicorn on a free loopback port, in a
    thread; stopped (lifespan and all) on exit. Yields the base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    app = make_app(f"http://127.0.0.1:{sock.getsockname()[1]}")
    server = uvicorn.Server(uvicorn.Config(app, loop="asyncio", http="httptools", lifespan="on",
                                           log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=name,
                              daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError("the service did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
        if thread.is_alive():
            raise RuntimeError("the service thread is still running")


# --- the report -----------------------------------------------------------------------------------

@dataclass
class PeriodReport:
    period: str
    by_state: Counter[str] = field(default_factory=Counter)
    commended: dict[str, list[str]] = field(default_factory=dict)
    emails: Counter[str] = field(default_factory=Counter)
    caught: int = 0
    people_requests: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    flow_runs: Counter[str] = field(default_factory=Counter)
    flow_done: Counter[str] = field(default_factory=Counter)
    returned: int = 0
    late: int = 0
    below_quorum: int = 0
    objection_upheld: int | None = None
    rollover: str = ""
    audit: str = ""
    seconds: float = 0.0

    def render(self) -> str:
        lines = [f"period {self.period}  ({self.seconds:.1f} s)"]
        lines.append("  cases by stage/status:")
        lines += [f"    {state:<28} {n:>5}" for state, n in sorted(self.by_state.items())]
        lines.append(f"  people: {self.people_requests} API requests; {self.late} pledged late, "
                     f"{self.returned} returned once, objection upheld on case "
                     f"{self.objection_upheld}, {self.below_quorum} rounds left below quorum"
                     + (f"; refused {dict(self.refused)}" if self.refused else ""))
        lines.append("  flows: " + ", ".join(f"{k}×{v}" for k, v in sorted(self.flow_runs.items()))
                     + "; steps done " + ", ".join(f"{k} {v}" for k, v in
                                                  sorted(self.flow_done.items())))
        lines.append("  commendations:")
        for award, names in self.commended.items():
            lines.append(f"    {award} ({len(names)}): {', '.join(names) or '-'}")
        if not self.commended:
            lines.append("    (none)")
        lines.append(f"  emails caught: {self.caught}  (" + ", ".join(
            f"{t} {n}" for t, n in sorted(self.emails.items())) + ")")
        if self.rollover:
            lines.append(f"  rollover: {self.rollover}")
        lines.append(f"  audit verify: {self.audit}")
        return "\n".join(lines)


@dataclass
class DemoReport:
    periods: list[PeriodReport]
    flow_mode: str
    database: str
    mail_dir: Path
    total_caught: int = 0
    audit: str = ""
    setup_seconds: float = 0.0
    seconds: float = 0.0

    def render(self) -> str:
        out = [f"pledgeflow demo — flows called {self.flow_mode}; database {self.database}",
               f"setup (migrate, seed, tokens, service, mail catcher): {self.setup_seconds:.1f} s"]
        out += [p.render() for p in self.periods]
        out.append(f"emails caught in {self.mail_dir}: {self.total_caught}")
        out.append(f"audit verify: {self.audit}")
        out.append(f"total wall time: {self.seconds:.1f} s")
        return "\n".join(out)


# --- people -------------------------------------------------------------------------------------

class People:
    """Bearer tokens for every account, and requests as one person or anonymously."""

    def __init__(self, base_url: str, tokens: dict[int, str]) -> None:
        self.tokens = tokens
        self.http = httpx.Client(base_url=base_url, timeout=60.0,
                                 limits=httpx.Limits(max_connections=PEOPLE_THREADS * 2))
        self.pool = ThreadPoolExecutor(PEOPLE_THREADS, thread_name_prefix="pledgeflow-demo-people")
        self.requests = 0
        self.refused: Counter[str] = Counter()
        self._lock = threading.Lock()

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.http.close()

    def can(self, person_id: int | None) -> bool:
        return person_id is not None and person_id in self.tokens

    def call(self, method: str, path: str, person_id: int | None = None, *,
             json: Any = None, params: dict[str, Any] | None = None,
             expect_ok: bool = True) -> httpx.Response:
        headers = {"Accept": "application/json"}
        if person_id is not None:
            headers["Authorization"] = f"Bearer {self.tokens[person_id]}"
        response = self.http.request(method, path, json=json, params=params, headers=headers)
        with self._lock:
            self.requests += 1
        if response.status_code >= 500:
            raise RuntimeError(f"{method} {path} → {response.status_code}: {response.text[:500]}")
        if not response.is_success:
            if expect_ok and response.status_code != 409:
                raise RuntimeError(f"{method} {path} → {response.status_code}: "
                                   f"{response.text[:500]}")
            with self._lock:
                self.refused[f"{path.split('/')[-1]} {response.status_code}"] += 1
        return response

    def each(self, work: Iterable[Any], fn: Callable[[Any], None]) -> None:
        """Run ``fn`` over the work concurrently (people act at the same time); re-raise."""
        for future in [self.pool.submit(fn, w) for w in work]:
            future.result()


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


# --- setup, run, tear down ------------------------------------------------------------------------

def _flow_functions(prefect: bool) -> dict[str, Callable[..., Any]]:
    import flows.runtime  # noqa: F401  (heartbeat off, analytics off: before prefect runs)
    from flows.drive import drive_period
    from flows.reminders import send_reminders
    from flows.rollover import roll_over_period

    pick = (lambda f: f) if prefect else (lambda f: f.fn)
    return {"drive_period": pick(drive_period), "send_reminders": pick(send_reminders),
            "roll_over_period": pick(roll_over_period)}


def _state_counts(factory: Any, code: str) -> Counter[str]:
    from models import Case, Period

    with factory() as s:
        return Counter({f"{stage}/{status}": n for stage, status, n in s.execute(
            sa.select(Case.stage, Case.status, sa.func.count())
            .join(Period, Period.id == Case.period_id).where(Period.code == code)
            .group_by(Case.stage, Case.status))})


def _sent_by_template(factory: Any) -> Counter[str]:
    from models import Notification

    with factory() as s:
        return Counter({t: n for t, n in s.execute(
            sa.select(Notification.template, sa.func.count())
            .where(Notification.status == "sent").group_by(Notification.template))})


def _drain_outbox(factory: Any, clock: Any, timeout: float = 30.0) -> None:
    """Wait for the dispatcher to send what is due (it polls every second)."""
    from models import Notification

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with factory() as s:
            waiting = s.scalar(sa.select(sa.func.count()).select_from(Notification).where(
                Notification.status.in_(("pending", "sending")),
                Notification.next_attempt_at <= clock.now()))
        if not waiting:
            return
        time.sleep(0.2)


def _audit(factory: Any) -> str:
    from service import history

    with factory() as s:
        broken = history.verify(s)
        seq, head = history.head(s)
    return f"OK: {seq} events, head {head[:16]}…" if broken is None else \
        f"BROKEN at event {broken.seq}: {broken.problem}"


def _count_caught(mail_dir: Path) -> int:
    from notifications.catcher import read_caught

    return len(read_caught(mail_dir, limit=10**6))


def run_demo(var: Path = Path("var/demo"), *, periods: int = 3, prefect: bool = False,
             echo: Callable[[str], None] = print) -> DemoReport:
    """Replay the seed's campaign (``periods`` of its three periods) and report; everything it
    starts is stopped before it returns."""
    started = time.perf_counter()
    from flows import client as flow_client
    from models import Account
    from notifications.catcher import start_catcher
    from service import accounts, migrate
    from service.api.app import create_app
    from service.clock import CAMPAIGN_TZ, FixedClock
    from service.db import make_engine, make_session_factory
    from service.seed import seed
    from service.settings import Settings

    if var.exists():
        shutil.rmtree(var)
    var.mkdir(parents=True)
    mail_dir = var / "mail"
    url = f"sqlite:///{var.resolve()}/pledgeflow.db"
    migrate.upgrade(url)
    engine = make_engine(url)
    factory = make_session_factory(engine)
    clock = FixedClock(datetime(2010, 5, 31, 9, tzinfo=CAMPAIGN_TZ))
    with factory() as session, session.begin():
        seed(session, demo=True)
        flow_token, _ = accounts.create_token(session, name="demo flows", now=clock.now(),
                                              flow_name=FLOW_NAME)
        tokens: dict[int, str] = {}
        for account_id, person_id in session.execute(sa.select(Account.id, Account.person_id)):
            tokens[person_id] = accounts.create_token(session, name="demo", now=clock.now(),
                                                      account_id=account_id)[0]
        office = _office_admin(session)
    flows = _flow_functions(prefect)
    smtp_port = free_port()
    catcher = start_catcher(mail_dir, port=smtp_port)
    reports: list[PeriodReport] = []
    report = DemoReport(reports, "as Prefect flow runs (ephemeral server)" if prefect
                        else DEMO_FLOW_MODE, url, mail_dir)
    try:
        settings = Settings(database_url=url, dispatcher=True, mail_catcher_dir=str(mail_dir),
                            smtp_url=f"smtp://127.0.0.1:{smtp_port}", service_token=flow_token)

        def make_app(base_url: str) -> Any:  # links in the emails point at this service
            app = create_app(settings.model_copy(update={"base_url": base_url}), clock=clock)
            _throwaway_durability(app.state.engine)
            return app

        with serving(make_app) as base_url, \
                flow_client.override(base_url=base_url, token=flow_token):
            people = People(base_url, tokens)
            try:
                demo = Demo(factory, clock, people, office, flows, echo)
                report.setup_seconds = time.perf_counter() - started
                echo(f"setup done in {report.setup_seconds:.1f} s; service at {base_url}, "
                     f"mail catcher on port {smtp_port}; flows called {report.flow_mode}")
                all_periods = people.call("GET", "/api/v1/periods").json()
                sent_before, caught_before = Counter[str](), 0
                for n, period in enumerate(all_periods[:periods]):
                    before, refused = people.requests, people.refused.copy()
                    pr = demo.run_period(period, first=n == 0)
                    pr.people_requests = people.requests - before
                    pr.refused = people.refused - refused
                    _drain_outbox(factory, clock)
                    sent, caught = _sent_by_template(factory), _count_caught(mail_dir)
                    pr.emails, pr.caught = sent - sent_before, caught - caught_before
                    sent_before, caught_before = sent, caught
                    pr.by_state = _state_counts(factory, period["code"])
                    pr.audit = _audit(factory)
                    reports.append(pr)
                    echo(pr.render())
            finally:
                people.close()
    finally:
        catcher.stop()
        engine.dispose()
    report.total_caught = _count_caught(mail_dir)
    final_engine = make_engine(url)
    try:
        report.audit = _audit(make_session_factory(final_engine))
    finally:
        final_engine.dispose()
    report.seconds = time.perf_counter() - started
    echo(f"emails caught in {mail_dir}: {report.total_caught}")
    echo(f"audit verify: {report.audit}")
    echo(f"total wall time: {report.seconds:.1f} s (flows called {report.flow_mode})")
    return report


def _throwaway_durability(engine: sa.Engine) -> None:
    """The demo's database is thrown away: commit without waiting for the disk.

    The service runs SQLite with ``synchronous=FULL`` (an fsync per commit, ~17 ms on the dev
    box), and every request commits at least once under SQLite's single write lock — which made
    a period take ~160 s. In WAL mode ``synchronous=NORMAL`` is still safe against a crash of
    the process (only a power cut may lose the last commits), and that is fine for a replay.
    Added after the service's own connect hook, so it wins; the service itself is unchanged."""
    if engine.dialect.name != "sqlite":
        return

    @sa.event.listens_for(engine, "connect")
    def _normal_sync(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


def _office_admin(session: Any) -> int:
    from models import Account, Organization, Position

    person_id = session.scalar(
        sa.select(Position.person_id)
        .join(Organization, Organization.id == Position.organization_id)
        .join(Account, Account.person_id == Position.person_id)
        .where(Organization.kind == "campaign_office", Position.role == "admin")
        .order_by(Position.id).limit(1))
    if person_id is None:
        raise RuntimeError("no campaign office admin with an account in the demo seed")
    return int(person_id)
