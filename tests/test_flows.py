"""The flows end to end: Prefect's test harness (one ephemeral Prefect server for the session),
the real app served by uvicorn on a loopback port over a private copy of the seeded database,
and a FixedClock the test moves. People act through the builders (the engine) or the API; the
flows act only through the API with a service token.

Also: the rollover twice and twice at once, a run killed after its first chunk and run again,
a lost response retried, reminders batched per recipient per day, the outbox sweep, the
deployments' schedules — and nothing left running afterwards.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa

from flows import client as flow_client
from flows.client import FlowClient
from flows.drive import drive_case, drive_period
from flows.reminders import send_reminders, sweep_notifications
from flows.rollover import roll_over_period
from models import (
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
    Position,
)
from service import accounts, directory, reminders
from service.api.app import create_app
from service.clock import CAMPAIGN_TZ, FixedClock
from service.demo import serving as demo_serving
from service.periods import get_period, open_period
from service.settings import Settings
from service.workflow.roles import Actor
from tests import builders
from tests.conftest import Database

FLOW = "flows"  # the service token's flow name: every act of the flows carries it
# Flows talk HTTP, so most of what they do is backend-blind; tests where the database's own
# behaviour matters run on both backends, the rest on one to keep the suite short.
ON_POSTGRESQL = pytest.mark.parametrize("db", ["postgresql"], indirect=True)
ON_SQLITE = pytest.mark.parametrize("db", ["sqlite"], indirect=True)


def local(day: date, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=CAMPAIGN_TZ)


def _children() -> set[int]:
    """Live child processes of this process (Linux /proc; empty elsewhere)."""
    me, found = str(os.getpid()), set()
    if not os.path.isdir("/proc"):
        return found
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me and fields[0] != "Z":
            found.add(int(entry))
    return found


def _threads_left(before: set[threading.Thread], wait: float = 15.0) -> list[threading.Thread]:
    """Threads of these fixtures (the service, the rollover workers) started since ``before``
    and still alive after ``wait`` seconds. The service's request worker threads belong to its
    event loop's root task and stop with it; Prefect's own threads are not ours to judge."""
    deadline = time.monotonic() + wait
    while True:
        alive = [t for t in set(threading.enumerate()) - before if t.is_alive()
                 and t.name.startswith("pledgeflow")]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


# --- fixtures ------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    """One ephemeral Prefect server (a subprocess) for the session; stopped and checked gone."""
    from prefect.testing.utilities import prefect_test_harness

    env = pytest.MonkeyPatch()
    env.setenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "60")
    env.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    before = _children()
    try:
        with prefect_test_harness(server_startup_timeout=60):
            yield
    finally:
        env.undo()
    deadline = time.monotonic() + 10
    while _children() - before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _children() - before, "the Prefect test server outlived the harness"


@dataclass
class Service:
    """The running service, its database and clock, and a client like the flows'."""

    db: Database
    clock: FixedClock
    url: str
    token: str

    def api(self) -> FlowClient:
        return FlowClient(self.url, self.token)

    def scalar(self, query: sa.Select) -> int:
        with self.db.factory() as s:
            return s.scalar(query) or 0


def serving(db: Database, clock: FixedClock) -> AbstractContextManager[str]:
    """The real app under uvicorn on a free loopback port, in a thread; stopped on exit."""
    return demo_serving(lambda _base_url: create_app(
        Settings(database_url=db.url, dispatcher=False), clock=clock),
        name="pledgeflow-test-service")


@pytest.fixture
def service(fresh_db: Database) -> Iterator[Service]:
    """Period 2010 opened (every case pending) at 2010-06-01 09:00; the flows pointed at the
    service with a fresh service token."""
    clock = FixedClock(local(date(2010, 6, 1), 9))
    with fresh_db.factory() as session, session.begin():
        open_period(session, get_period(session, "2010"), actor=Actor(flow="office"),
                    clock=clock)
        token, _ = accounts.create_token(session, name="flows", now=clock.now(), flow_name=FLOW)
    threads_before = set(threading.enumerate())
    with serving(fresh_db, clock) as url, flow_client.override(base_url=url, token=token):
        yield Service(fresh_db, clock, url, token)
    assert not _threads_left(threads_before), "threads left running"


# --- helpers -------------------------------------------------------------------------------------

def states(svc: Service, period: str = "2010") -> dict[int, tuple[str, str]]:
    with svc.db.factory() as s:
        return {i: (st, su) for i, st, su in s.execute(
            sa.select(Case.id, Case.stage, Case.status).join(Period, Period.id == Case.period_id)
            .where(Period.code == period))}


def events(svc: Service, action: str) -> list[int | None]:
    """Case ids of the events of an action, each once per event; asserting the flow acted."""
    with svc.db.factory() as s:
        rows = s.execute(sa.select(Event.case_id, Event.actor_flow, Event.actor_person_id)
                         .where(Event.action == action)).all()
    assert all(flow == FLOW and person is None for _, flow, person in rows), rows
    return [case_id for case_id, _, _ in rows]


def act_as_people(svc: Service, case_ids: list[int], target: tuple[str, str]) -> None:
    """People move these cases on (drafting, approving, reviewing…) through the engine."""
    with svc.db.factory() as s, s.begin():
        for case_id in case_ids:
            builders.drive(s, s.get(Case, case_id), target, svc.clock)


def vote(svc: Service, case_id: int, n: int) -> None:
    with svc.db.factory() as s, s.begin():
        builders.vote_all(s, s.get(Case, case_id), svc.clock, limit=n)


def assigned(svc: Service, case_id: int) -> int:
    return svc.scalar(sa.select(sa.func.count()).select_from(EvaluatorAssignment)
                      .join(EvaluationRound, EvaluationRound.id == EvaluatorAssignment.round_id)
                      .where(EvaluationRound.case_id == case_id))


def rendered(row: Notification) -> str:
    """The email a batched row becomes (as the dispatcher renders it, links aside)."""
    from notifications.render import render

    context = {**row.context, "links": [], "case_url": "http://x/cases",
               "items": [{**i, "links": [], "case_url": f"http://x/cases/{i['case_id']}"}
                         for i in row.context["items"]]}
    return render(row.template, row.lang if row.lang in ("zh", "en") else "zh", context).text


def pick_cases(svc: Service) -> tuple[list[int], list[int]]:
    """Three unit cases and two member cases whose enterprises have evaluators."""
    with svc.db.factory() as s:
        reps = s.scalars(sa.select(Organization.path).join(
            Position, Position.organization_id == Organization.id).where(
            Position.role.in_(("member_representative", "worker_representative")))).all()
        enterprises = {"/".join(p.strip("/").split("/")[:2]) for p in reps}
        cases = s.execute(sa.select(Case.id, Case.subject_kind, Organization.path).join(
            Organization, Organization.id == Case.organization_id).order_by(Case.id)).all()
    ok = [(i, k) for i, k, p in cases if "/".join(p.strip("/").split("/")[:2]) in enterprises]
    return ([i for i, k in ok if k == "organization"][:3],
            [i for i, k in ok if k == "member"][:2])


# --- the campaign, end to end --------------------------------------------------------------------

def test_a_small_campaign_end_to_end(prefect_server, service):
    svc, clock = service, service.clock
    total = len(states(svc))

    # 1. Period start: every pledge stage opens, in chunks, each act by the flow.
    first = drive_period("2010", chunk_size=50)
    assert first["done"] == {"open_pledge": total} and first["chunks"] == math.ceil(total / 50)
    assert set(states(svc).values()) == {("pledge", "drafting")}
    assert sorted(events(svc, "open_pledge")) == sorted(states(svc))
    assert drive_period("2010")["done"] == {}  # nothing more is due: a rerun changes nothing

    # 2. Units draft, submit and get approved; the flow posts approved pledges for notice.
    (a, b, c), (m1, m2) = pick_cases(svc)
    clock.set(local(date(2010, 6, 2), 9))
    act_as_people(svc, [a, b, c, m1, m2], ("pledge", "approved"))
    assert drive_period("2010")["done"] == {"publish": 5}
    # Someone objects to C's pledge: its notice stays open past the window until resolved.
    response = httpx.post(f"{svc.url}/api/v1/cases/{c}/objections",
                          json={"body": "承诺与实际不符"})
    assert response.status_code in (200, 201), response.text
    clock.advance(days=7, hours=1)
    summary = drive_period("2010")
    assert summary["done"] == {"close_notice": 4} and summary["refused"] == {}
    assert states(svc)[c] == ("pledge", "under_notice")

    # 3. Reviews open on their date; superiors review, one unit acknowledges.
    clock.set(local(date(2010, 10, 11), 9))
    assert drive_period("2010")["done"] == {"open_review": 4}
    act_as_people(svc, [a, b, m1, m2], ("review", "recorded"))
    act_as_people(svc, [a], ("review", "acknowledged"))

    # 4. Evaluation opens on its date, with ballot invitations.
    clock.set(local(date(2010, 11, 15), 9))
    assert drive_period("2010")["done"] == {"open_evaluation": 4}
    invited = svc.scalar(sa.select(sa.func.count()).select_from(Notification).where(
        Notification.template == "ballot_invitation", Notification.case_id.in_([a, b, m1, m2])))
    assert 0 < invited <= sum(assigned(svc, x) for x in (a, b, m1, m2))
    assert min(assigned(svc, x) for x in (b, m1, m2)) >= 3  # room for "quorum, not everyone"

    # 5. A's evaluators all vote: closed and announced at once. B reaches quorum, M1 and M2 not.
    vote(svc, a, assigned(svc, a))
    vote(svc, b, math.ceil(assigned(svc, b) * 2 / 3))
    vote(svc, m1, 1 if assigned(svc, m1) > 2 else 0)
    clock.set(local(date(2010, 11, 20), 9))
    assert drive_period("2010")["done"] == {"close_round": 1, "announce_results": 1}
    assert states(svc)[a] == ("evaluation", "announced")
    clock.set(local(date(2010, 12, 4), 1))  # the rounds' deadline has passed
    assert drive_period("2010")["done"] == {"close_round": 1, "extend_round": 2,
                                            "announce_results": 1}
    clock.advance(days=8)
    assert drive_period("2010")["done"] == {"mark_inconclusive": 2}
    assert {states(svc)[x] for x in (m1, m2)} == {("evaluation", "inconclusive")}

    # 6. Near the commendation date: select, then post every shortlist for public notice.
    clock.set(local(date(2010, 12, 20), 0, 30))
    summary = drive_period("2010")
    taken = [p["action"] for p in summary["period_steps"]]
    with svc.db.factory() as s:
        awards = s.scalars(sa.select(Commendation).order_by(Commendation.id)).all()
    assert awards and taken == ["select"] + ["post_shortlist"] * len(awards)
    assert {x.status for x in awards} == {"under_notice"}
    assert {states(svc)[x] for x in (a, b)} == {("commendation", "under_notice")}
    assert drive_period("2010")["period_steps"] == []  # nothing more until the notice ends

    # 7. After the notice the decision goes to the campaign office, once.
    clock.advance(days=7, hours=1)
    assert [p["action"] for p in drive_period("2010")["period_steps"]] == ["hand_off"]
    with svc.db.factory() as s:
        admins = {p.id for p in reminders.Directory(s).office if p.email}
        handed = s.scalars(sa.select(Notification).where(
            Notification.batch_key.like("hand_off:%"))).all()
    assert {n.recipient_person_id for n in handed} == admins
    assert len(handed) == len(admins) * len(awards)
    assert {a, b} <= {i["case_id"] for n in handed for i in n.context["items"]}
    assert all(rendered(n) for n in handed)  # a reminder listing the decisions due
    assert len(events(svc, "hand_off_decision")) == len(awards)
    assert drive_period("2010")["period_steps"] == []
    assert len(events(svc, "hand_off_decision")) == len(awards)

    # 8. The period ends: rolled over once; a second run changes nothing.
    clock.set(local(date(2011, 1, 1), 0, 10))
    unfinished = sum(1 for s in states(svc).values() if s[0] != "closed")
    rolled = roll_over_period()
    assert rolled["rolled_over"] == ["2010"]
    assert rolled["periods"][0]["lapsed"] == unfinished
    assert rolled["periods"][0]["opened_period"] == "2011-h1"
    assert len(states(svc, "2011-h1")) == total
    with svc.db.factory() as s:
        carried = s.scalar(sa.select(sa.func.count()).select_from(PledgeItem)
                           .join(Pledge, Pledge.id == PledgeItem.pledge_id)
                           .join(Case, Case.id == Pledge.case_id)
                           .join(Period, Period.id == Case.period_id)
                           .where(Period.code == "2011-h1",
                                  PledgeItem.carried_over_from_id.is_not(None)))
    assert carried and carried >= 2 * 5  # the five pledges' unkept items are carried over
    written = (svc.scalar(sa.select(sa.func.count()).select_from(Event)),
               svc.scalar(sa.select(sa.func.count()).select_from(Notification)))
    again = roll_over_period("2010")
    assert again["rolled_over"] == [] and again["periods"][0]["lapsed"] == 0
    assert roll_over_period() == {"periods": [{"period": "2011-h1", "result": "not_ended"}],
                                  "rolled_over": []}
    assert (svc.scalar(sa.select(sa.func.count()).select_from(Event)),
            svc.scalar(sa.select(sa.func.count()).select_from(Notification))) == written
    assert drive_period("2010")["note"] == "period 2010 is closed: nothing to drive"


@ON_SQLITE
def test_drive_case_takes_the_steps_due_on_one_case(prefect_server, service):
    case_id = min(states(service))
    result = drive_case(case_id)
    assert [s["action"] for s in result["steps"]] == ["open_pledge"]
    assert (result["stage"], result["status"]) == ("pledge", "drafting")
    assert drive_case(case_id)["steps"] == []


# --- killed half-way, lost responses, concurrency ------------------------------------------------

class Killed(Exception):
    """The worker died (as far as the flow can tell)."""


class FailAfterFirstBulk(httpx.BaseTransport):
    """Forward every request; after the first bulk request has been applied, fail."""

    def __init__(self, error: Exception) -> None:
        self.inner, self.error, self.bulk_requests = httpx.HTTPTransport(), error, 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.url.path.endswith("/bulk/actions"):
            self.bulk_requests += 1
            if self.bulk_requests == 1:
                response.read()
                response.close()
                raise self.error
        return response

    def close(self) -> None:
        self.inner.close()


def test_a_run_killed_after_a_chunk_and_run_again_leaves_no_duplicate_and_no_gap(
        prefect_server, service):
    svc = service
    cases = sorted(states(svc))
    killer = FailAfterFirstBulk(Killed("worker gone"))
    with flow_client.override(base_url=svc.url, token=svc.token, transport=killer), \
            pytest.raises(Killed):
        drive_period("2010", chunk_size=40)
    moved = [i for i, s in states(svc).items() if s == ("pledge", "drafting")]
    assert moved == cases[:40]  # the first chunk was applied whole, nothing after it

    summary = drive_period("2010", chunk_size=40)
    assert summary["done"] == {"open_pledge": len(cases) - 40} and summary["refused"] == {}
    assert set(states(svc).values()) == {("pledge", "drafting")}
    assert sorted(events(svc, "open_pledge")) == cases  # every case exactly once


@ON_SQLITE
def test_a_lost_response_is_retried_and_what_was_done_is_refused_not_repeated(
        prefect_server, service):
    svc = service
    cases = sorted(states(svc))
    lost = FailAfterFirstBulk(httpx.ReadError("connection reset"))
    with flow_client.override(base_url=svc.url, token=svc.token, transport=lost):
        summary = drive_period("2010", chunk_size=25)
    assert lost.bulk_requests == math.ceil(len(cases) / 25) + 1  # the first one sent twice
    assert summary["done"] == {"open_pledge": len(cases) - 25}
    assert summary["refused"] == {"open_pledge": 25}
    assert summary["refusal_reasons"] == {"not_allowed_in_state": 25}
    assert sorted(events(svc, "open_pledge")) == cases


@ON_POSTGRESQL
def test_rollover_twice_at_once_rolls_over_once(service):
    """Two workers at the same instant (plain functions, no Prefect), on PostgreSQL: one rolls
    over, the other waits on the period row's lock and then finds nothing left to do."""
    svc = service
    total = len(states(svc))
    svc.clock.set(local(date(2011, 1, 1), 0, 10))
    results: list[dict] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def worker() -> None:
        try:
            barrier.wait(timeout=10)
            results.append(roll_over_period.fn("2010"))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, name=f"pledgeflow-rollover-{i}")
               for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and len(results) == 2
    assert sorted(len(r["rolled_over"]) for r in results) == [0, 1]
    assert sorted(events(svc, "lapse")) == sorted(states(svc))  # each case lapsed once
    with svc.db.factory() as s:
        periodwide = s.execute(sa.select(Event.action, Period.code).join(
            Period, Period.id == Event.period_id).where(
            Event.action.in_(("close_period", "open_period")))).all()
    assert sorted(periodwide) == [("close_period", "2010"), ("open_period", "2010"),
                                  ("open_period", "2011-h1")]
    assert len(states(svc, "2011-h1")) == total
    assert set(states(svc).values()) == {("closed", "lapsed")}


@ON_SQLITE
def test_the_rollover_waits_for_the_period_to_end(service):
    result = roll_over_period.fn()
    assert result == {"periods": [{"period": "2010", "result": "not_ended"}],
                      "rolled_over": []}


# --- reminders and the outbox ---------------------------------------------------------------------

def _branch_with_members(svc: Service, n: int) -> tuple[int, list[int]]:
    """A new branch with a secretary (a Party member) and ``n`` members; their cases are
    added to the open period 2010. Returns (secretary id, member ids)."""
    with svc.db.factory() as s, s.begin():
        parent = s.scalars(sa.select(Organization).where(
            Organization.kind == "committee").order_by(Organization.id)).first()
        branch = Organization(code="test.big-branch", name_zh="测试支部", name_en="Test branch",
                              kind="branch", parent_id=parent.id)
        s.add(branch)
        s.flush()
        branch.path = f"{parent.path}{branch.id}/"
        people = [Person(name=f"党员{i:03d}", email=f"big{i:03d}@example.org",
                         organization_id=branch.id) for i in range(n + 1)]
        s.add_all(people)
        s.flush()
        s.add(Position(person_id=people[0].id, organization_id=branch.id, role="secretary"))
        open_period(s, get_period(s, "2010"), actor=Actor(flow="office"), clock=svc.clock)
        return people[0].id, [p.id for p in people[1:]]


@ON_POSTGRESQL
def test_reminders_batch_200_overdue_cases_into_one_email_to_their_superior(
        prefect_server, service):
    svc = service
    secretary, members = _branch_with_members(svc, 200)
    with svc.db.factory() as s:
        branch_cases = sorted(s.scalars(sa.select(Case.id).join(
            Organization, Organization.id == Case.organization_id).where(
            Organization.code == "test.big-branch")))
    with svc.api() as api:  # the branch's pledge stages open (as drive_period would do)
        assert api.bulk("open_pledge", branch_cases)["succeeded"] == 202
    with svc.db.factory() as s:  # the set-based directory names who directory.audience does
        who = reminders.Directory(s)
        for case in s.scalars(sa.select(Case)):
            org = s.get(Organization, case.organization_id)
            for name, mine in (("superior", who.superior(case)),
                               ("subject", who.subject(case, s.get(Person, case.person_id)
                                                       if case.person_id else None))):
                assert [p.id for p in mine] == [
                    p.id for p in directory.audience(s, name, case, org)], (name, case.id)

    svc.clock.set(local(date(2010, 9, 14), 8, 30))  # three days before the deadline
    before = send_reminders()
    assert before["reminded_cases"] == 202 and before["escalated_cases"] == 0
    assert svc.scalar(sa.select(sa.func.count()).select_from(Notification).where(
        Notification.template == "reminder",
        Notification.recipient_person_id.in_(members))) == 200  # one each, their own case

    svc.clock.set(local(date(2010, 9, 20), 8, 30))  # three days overdue
    report = send_reminders()
    assert report["escalated_cases"] == 202 and report["reminded_cases"] == 0
    with svc.db.factory() as s:
        rows = s.scalars(sa.select(Notification).where(
            Notification.template == "escalation",
            Notification.recipient_person_id == secretary)).all()
        member_cases = set(s.scalars(sa.select(Case.id).where(Case.person_id.in_(members))))
    assert len(rows) == 1 and rows[0].batch_key == f"escalation:2010-09-20:{secretary}"
    items = rows[0].context["items"]
    assert len(items) == 200 and {i["case_id"] for i in items} == member_cases
    assert {(i["stage"], i["status"]) for i in items} == {("pledge", "drafting")}
    assert all(i["link_actions"] == [] and i["due_at"] for i in items)
    assert "2010" in rendered(rows[0])  # renders: every item with its unit, period, deadline

    again = send_reminders()  # the same day again: nothing is added
    assert again["items_added"] == 0
    with svc.db.factory() as s:
        assert len(s.get(Notification, rows[0].id).context["items"]) == 200


@ON_SQLITE
def test_the_sweep_requeues_stuck_rows_and_dead_ones_on_request(prefect_server, service):
    svc = service
    now = svc.clock.now()
    with svc.db.factory() as s, s.begin():
        rows = s.scalars(sa.select(Notification).order_by(Notification.id).limit(3)).all()
        rows[0].status, rows[0].next_attempt_at = "sending", now - timedelta(minutes=1)
        rows[1].status, rows[1].next_attempt_at = "sending", now + timedelta(minutes=4)
        rows[2].status, rows[2].attempts, rows[2].last_error = "dead", 8, "550 no such user"
        ids = [r.id for r in rows]
    first = sweep_notifications()
    assert (first["stuck_requeued"], first["dead_requeued"]) == (1, 0)
    assert sweep_notifications(dead=True)["dead_requeued"] == 1
    with svc.db.factory() as s:
        after = [s.get(Notification, i) for i in ids]
    assert [r.status for r in after] == ["pending", "sending", "pending"]
    assert after[2].attempts == 0 and after[2].last_error == "550 no such user"


@ON_SQLITE
def test_the_flow_endpoints_are_for_flows_and_the_office_only(service):
    from tests.apiclient import bearer

    person = bearer(service.db, "supply-marketing.secretary")
    office = bearer(service.db, "office.admin")
    for method, path in (("GET", "/api/v1/periods/2010/case-states"),
                         ("GET", "/api/v1/periods/2010/awards"),
                         ("POST", "/api/v1/periods/2010/commendations/hand-off"),
                         ("POST", "/api/v1/reminders/run"),
                         ("POST", "/api/v1/notifications/sweep")):
        assert httpx.request(method, service.url + path).status_code == 401, path
        assert httpx.request(method, service.url + path, headers=person).status_code == 403
        assert httpx.request(method, service.url + path, headers=office).status_code == 200
    page = httpx.get(f"{service.url}/api/v1/periods/2010/case-states?limit=5",
                     headers=office).json()
    assert len(page["items"]) == 5 and page["next_after"] == page["items"][-1]["id"]
    assert datetime.fromisoformat(page["now"]) == service.clock.now().astimezone(UTC)


# --- deployments and the command line -----------------------------------------------------------

def test_deployments_are_scheduled_in_shanghai_time_and_configurable(monkeypatch):
    from flows.deployments import deployments

    monkeypatch.setenv("PLEDGEFLOW_FLOWS_DRIVE_CRON", "15 */2 * * *")
    built = {d.name: d for d in deployments(Settings())}
    crons = {name: [(s.schedule.cron, s.schedule.timezone) for s in d.schedules]
             for name, d in built.items()}
    assert crons == {"drive-open-periods": [("15 */2 * * *", "Asia/Shanghai")],
                     "daily-reminders": [("30 8 * * *", "Asia/Shanghai")],
                     "outbox-sweep": [("*/10 * * * *", "Asia/Shanghai")],
                     "daily-rollover": [("10 0 * * *", "Asia/Shanghai")],
                     "drive-one-case": []}
    assert built["drive-open-periods"].parameters == {"chunk_size": 300}
    assert built["drive-open-periods"].entrypoint == "flows.drive.drive_period"


def test_the_flows_cli_does_not_import_prefect_until_a_command_needs_it():
    import subprocess
    import sys

    code = ("import sys, flows.cli; from typer.testing import CliRunner; "
            "r = CliRunner().invoke(flows.cli.flows_app, ['schedules']); "
            "print(r.output); assert 'prefect' not in sys.modules, 'prefect imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert "drive-open-periods   0 * * * *" in done.stdout and "Asia/Shanghai" in done.stdout
