"""The flows' decisions without any Prefect server: ``due_step`` over every state of the
transition table and every boundary instant, ``period_step`` over the period's life, and the
plain functions of the tasks (``task.fn``) and of the client over ``httpx.MockTransport``."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta

import httpx
import pytest

from flows.client import FlowClient, RetryPolicy, ServiceError, ServiceUnavailable
from flows.steps import (
    AWARD_OF,
    CAMPAIGN_TZ,
    CASE_ACTIONS,
    AwardSnapshot,
    Calendar,
    CaseSnapshot,
    RoundSnapshot,
    due_step,
    period_step,
)
from service.workflow import table

CAL = Calendar(code="2010", starts_on=date(2010, 6, 1), ends_on=date(2010, 12, 31),
               review_opens_on=date(2010, 10, 11), evaluation_opens_on=date(2010, 11, 15),
               commendation_on=date(2010, 12, 28), notice_days=7)
TICK = timedelta(microseconds=1)
ALL_STATES = [(stage, status) for stage, statuses in table.STATUSES.items()
              for status in statuses]


def local(day: date, hour: int = 0) -> datetime:
    return datetime.combine(day, time(hour), tzinfo=CAMPAIGN_TZ)


def case(stage: str, status: str, *, due_at: datetime | None = None,
         round_: RoundSnapshot | None = None, kind: str = "organization", case_id: int = 1,
         objection: bool = False) -> CaseSnapshot:
    return CaseSnapshot(case_id=case_id, stage=stage, status=status, version=3, due_at=due_at,
                        round=round_, subject_kind=kind, open_objection=objection)


ROUND_CLOSES = local(date(2010, 12, 4))


def voting(assigned: int, voted: int, *, extended: bool = False,
           closes_at: datetime = ROUND_CLOSES, quorum: float = 2 / 3) -> CaseSnapshot:
    return case("evaluation", "voting", due_at=closes_at, round_=RoundSnapshot(
        closes_at=closes_at, extended=extended, assigned=assigned, voted=voted, quorum=quorum))


def action(snapshot: CaseSnapshot, now: datetime) -> str | None:
    step = due_step(snapshot, CAL, now)
    return step.action if step else None


# --- due_step: every state, every boundary -------------------------------------------------------

LATE = local(date(2010, 12, 30))  # every calendar date of the period has passed


@pytest.mark.parametrize("state", ALL_STATES, ids=lambda s: "/".join(s))
@pytest.mark.parametrize("now", [local(date(2010, 5, 31)), local(date(2010, 6, 1)),
                                 local(date(2010, 10, 11)), local(date(2010, 11, 15)), LATE],
                         ids=["before-start", "start", "review-date", "evaluation-date", "late"])
def test_every_due_step_is_a_machine_transition_of_the_table(state, now):
    """Whatever the state and the time, a due step is a move the table allows a flow from that
    state — the flows can only propose what the choke point may accept."""
    stage, status = state
    variants = [case(stage, status, due_at=now - timedelta(days=1)),
                case(stage, status, due_at=now + timedelta(days=1)), case(stage, status)]
    if state == ("evaluation", "voting"):
        variants += [voting(a, v, extended=e, closes_at=now + d)
                     for a, v in ((3, 3), (3, 2), (3, 1), (0, 0))
                     for e in (False, True) for d in (-TICK, TICK, timedelta(0))]
    for snapshot in variants:
        step = due_step(snapshot, CAL, now)
        if step is None:
            continue
        transition = table.find(stage, status, step.action)
        assert transition is not None, f"{step.action} from {state}"
        assert "flow" in transition.roles
        assert step.action in CASE_ACTIONS and step.why


@pytest.mark.parametrize("state", [
    ("pledge", "drafting"), ("pledge", "submitted"), ("pledge", "returned"), ("review", "open"),
    ("evaluation", "inconclusive"), ("evaluation", "announced"),
    ("commendation", "considered"), ("commendation", "under_notice"),
    ("closed", "commended"), ("closed", "not_commended"), ("closed", "lapsed"),
], ids=lambda s: "/".join(s))
def test_states_waiting_on_people_or_the_selection_have_no_case_step(state):
    assert action(case(*state, due_at=LATE - timedelta(days=30)), LATE) is None


def test_the_pledge_stage_opens_at_the_first_instant_of_the_period_in_shanghai():
    start = local(date(2010, 6, 1))
    assert action(case("pledge", "pending"), start - TICK) is None
    assert action(case("pledge", "pending"), start) == "open_pledge"
    # 2010-06-01 00:00 in Shanghai is 2010-05-31 16:00 UTC: a UTC clock at 16:00 is in time.
    assert action(case("pledge", "pending"), datetime(2010, 5, 31, 16, tzinfo=UTC)) \
        == "open_pledge"
    assert action(case("pledge", "pending"), datetime(2010, 5, 31, 15, 59, tzinfo=UTC)) is None


def test_an_approved_pledge_is_published_at_once():
    assert action(case("pledge", "approved"), local(date(2010, 6, 2))) == "publish"


def test_a_notice_closes_when_its_window_ends_unless_an_objection_is_open():
    ends = local(date(2010, 9, 27), 10)
    notice = case("pledge", "under_notice", due_at=ends)
    assert action(notice, ends - TICK) is None
    assert action(notice, ends) == "close_notice"
    assert action(notice, ends + timedelta(days=3)) == "close_notice"
    assert action(replace(notice, open_objection=True), ends + timedelta(days=3)) is None
    assert action(replace(notice, due_at=None), ends) is None  # no window known: wait


def test_review_and_evaluation_open_on_their_dates():
    review, evaluation = local(date(2010, 10, 11)), local(date(2010, 11, 15))
    assert action(case("pledge", "done"), review - TICK) is None
    assert action(case("pledge", "done"), review) == "open_review"
    for status in ("recorded", "acknowledged"):
        assert action(case("review", status), evaluation - TICK) is None
        assert action(case("review", status), evaluation) == "open_evaluation"
    assert action(case("review", "open"), evaluation) is None  # the superior must review first


@pytest.mark.parametrize(("assigned", "voted", "extended", "when", "expected"), [
    (3, 3, False, "before", "close_round"),        # everyone voted: close early
    (3, 2, False, "before", None),                 # quorum, but others may still vote
    (3, 1, False, "before", None),
    (3, 2, False, "at", "close_round"),            # exactly 2/3 meets a 2/3 quorum
    (3, 2, True, "after", "close_round"),
    (3, 1, False, "at", "extend_round"),           # below quorum: extended once...
    (3, 1, True, "at", "mark_inconclusive"),       # ...then given up
    (0, 0, False, "after", "extend_round"),        # nobody to vote never reaches quorum
    (0, 0, True, "after", "mark_inconclusive"),
    (10, 6, False, "at", "extend_round"),          # 60% < 2/3
    (10, 7, False, "at", "close_round"),
])
def test_a_round_closes_at_its_deadline_extends_once_below_quorum_then_gives_up(
        assigned, voted, extended, when, expected):
    closes = ROUND_CLOSES
    now = {"before": closes - TICK, "at": closes, "after": closes + timedelta(days=9)}[when]
    assert action(voting(assigned, voted, extended=extended, closes_at=closes), now) == expected


def test_a_voting_case_without_its_round_waits():
    assert action(case("evaluation", "voting"), LATE) is None


def test_a_tally_is_announced():
    assert action(case("evaluation", "tallied"), LATE) == "announce_results"


# --- period_step --------------------------------------------------------------------------------

def evaluated(n: int, kind: str = "organization", status: str = "announced",
              first: int = 1) -> list[CaseSnapshot]:
    return [case("evaluation", status, kind=kind, case_id=first + i) for i in range(n)]


def award(kind: str, status: str, *, ends: datetime | None = None, handed: bool = False,
          cid: int = 1) -> AwardSnapshot:
    return AwardSnapshot(commendation_id=cid, award=AWARD_OF[kind], status=status,
                         notice_ends_at=ends, handed_off=handed)


def pstep(cases, now, awards=(), calendar=CAL):  # type: ignore[no-untyped-def]
    step = period_step(cases, calendar, now, awards)
    return (step.action, step.target) if step else None


def test_selection_runs_once_every_case_is_evaluated():
    now = local(date(2010, 12, 10))
    done = evaluated(3) + evaluated(2, "member", "inconclusive", first=10)
    assert pstep(done, now) == ("select", None)
    assert pstep([*done, case("commendation", "considered"), case("closed", "lapsed")], now) \
        == ("select", None)
    assert pstep([*done, case("review", "open", case_id=99)], now) is None  # one still busy


def test_selection_runs_near_the_commendation_date_even_if_some_cases_are_unfinished():
    cases = [*evaluated(2), case("pledge", "drafting", case_id=50)]
    at = CAL.selection_at
    assert at == local(date(2010, 12, 20))  # 28 Dec − 7 days of notice − 1 day to decide
    assert pstep(cases, at - TICK) is None
    assert pstep(cases, at) == ("select", None)
    assert pstep([case("pledge", "drafting")], at) is None  # nobody finished: nothing to rank


def test_selection_is_not_asked_again_for_an_award_already_selected():
    now = CAL.selection_at
    orgs_done = [award("organization", "selected")]
    assert pstep(evaluated(2), now, [award("organization", "decided")]) is None
    # members finished later still get their selection
    assert pstep(evaluated(2) + evaluated(1, "member", first=9), now,
                 [award("organization", "under_notice", ends=now + timedelta(days=9))]) \
        == ("select", None)
    assert pstep(evaluated(2), now, orgs_done) == ("post_shortlist", 1)


def test_each_shortlist_is_posted_then_handed_to_the_office_after_its_notice():
    now = local(date(2010, 12, 21))
    ends = now + timedelta(days=7)
    posted = [award("organization", "under_notice", ends=ends, cid=1),
              award("member", "selected", cid=2)]
    assert pstep([], now, posted) == ("post_shortlist", 2)
    both = [posted[0], award("member", "under_notice", ends=ends, cid=2)]
    assert pstep([], ends - TICK, both) is None
    assert pstep([], ends, both) == ("hand_off", 1)
    assert pstep([], ends, [replace(both[0], handed_off=True), both[1]]) == ("hand_off", 2)
    assert pstep([], ends, [replace(a, handed_off=True) for a in both]) is None
    assert pstep([], ends, [replace(a, status="decided") for a in both]) is None


def test_after_the_period_ends_only_the_rollover_is_due():
    end = local(date(2011, 1, 1))
    cases = evaluated(2)
    assert pstep(cases, end - TICK)[0] == "select"  # type: ignore[index]
    assert pstep(cases, end) == ("roll_over", None)
    assert pstep(cases, end, calendar=replace(CAL, status="closed")) is None


def test_a_planned_period_is_never_opened_by_the_drive():
    """The rollover opens it (carrying unfinished pledge items over), or the office does."""
    assert pstep([], local(date(2010, 7, 1)), calendar=replace(CAL, status="planned")) is None


# --- the plain functions of the flows and the client, over a mock service ------------------------

def problem(status: int, slug: str, *reasons: tuple[str, str]) -> httpx.Response:
    return httpx.Response(status, headers={"content-type": "application/problem+json"},
                          content=json.dumps({"type": f"urn:pledgeflow:problem:{slug}",
                                              "title": slug, "status": status, "detail": "no",
                                              "reasons": [{"code": c, "message": m}
                                                          for c, m in reasons]}))


def mock_client(handler, attempts: int = 4) -> tuple[FlowClient, list[float]]:  # type: ignore[no-untyped-def]
    slept: list[float] = []
    client = FlowClient("http://service.test", "secret", transport=httpx.MockTransport(handler),
                        retry=RetryPolicy(attempts=attempts, backoff=0.1, cap=2.0),
                        sleep=slept.append)
    return client, slept


def test_the_client_retries_503_and_connection_errors_with_backoff_and_retry_after():
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 1:
            raise httpx.ConnectError("refused", request=request)
        if len(calls) == 2:
            return httpx.Response(503, headers={"Retry-After": "1"}, json={"detail": "db down"})
        return httpx.Response(200, json={"ok": True})

    client, slept = mock_client(handler)
    assert client.get("/api/v1/periods") == {"ok": True}
    assert slept == [0.1, 1.0]  # backoff, then the server's Retry-After
    assert calls[0].headers["Authorization"] == "Bearer secret"


def test_the_client_gives_up_after_its_attempts_with_a_readable_error():
    client, slept = mock_client(lambda r: httpx.Response(503, json={"detail": "down"}),
                                attempts=3)
    with pytest.raises(ServiceUnavailable) as caught:
        client.post("/api/v1/bulk/actions", {"action": "publish", "case_ids": [1]})
    assert caught.value.status == 503 and len(slept) == 2
    assert "POST /api/v1/bulk/actions → 503" in str(caught.value)


def test_problem_json_becomes_a_service_error_with_every_reason_and_is_not_retried():
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return problem(409, "transition-refused", ("period_not_ended", "runs until 31 Dec"),
                       ("other", "and this"))

    client, slept = mock_client(handler)
    with pytest.raises(ServiceError) as caught:
        client.roll_over("2010")
    error = caught.value
    assert (error.status, error.slug, len(calls), slept) == (409, "transition-refused", 1, [])
    assert error.has_reason("period_not_ended") and not error.has_reason("nope")
    assert "runs until 31 Dec [period_not_ended]; and this [other]" in str(error)


def test_a_non_json_error_still_says_what_happened():
    client, _ = mock_client(lambda r: httpx.Response(500, text="<h1>boom</h1>"))
    with pytest.raises(ServiceError, match="500.*boom"):
        client.get("/x")


def test_tasks_run_as_plain_functions_against_the_api():
    from flows.drive import apply_chunk, apply_period_step, due_by_action
    from flows.rollover import roll_over

    seen: list[tuple[str, str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        seen.append((request.method, request.url.path, body))
        if request.url.path == "/api/v1/bulk/actions":
            return httpx.Response(200, json={"action": body["action"], "succeeded": 1,
                                             "refused": 0, "results": []})
        if request.url.path.endswith("/notice"):
            return problem(409, "transition-refused", ("already_posted", "posted"))
        return problem(409, "transition-refused", ("period_not_ended", "not yet"))

    client, _ = mock_client(handler)
    assert apply_chunk.fn(client, "publish", [4, 5])["succeeded"] == 1
    assert seen[0] == ("POST", "/api/v1/bulk/actions", {"action": "publish", "case_ids": [4, 5]})
    assert "refused" in apply_period_step.fn(client, "2010", "post_shortlist", 7)
    assert roll_over.fn(client, "2010") == {"period": "2010", "result": "not_ended"}
    cases = [case("pledge", "pending", case_id=3), case("pledge", "approved", case_id=2),
             case("pledge", "approved", case_id=1), case("pledge", "drafting", case_id=9)]
    assert due_by_action(cases, CAL, local(date(2010, 6, 2))) == {
        "open_pledge": [3], "publish": [1, 2]}
