"""``pledgeflow demo``: one period replayed end to end (the CLI default runs all three).

The real app under uvicorn with its dispatcher, the mail catcher, people through the API and
the flows (``drive_period``, ``send_reminders``, ``roll_over_period``) driving the calendar;
afterwards nothing it started is still running.
"""

from __future__ import annotations

import threading
import time

import pytest
import sqlalchemy as sa

from models import Event
from service.db import make_engine, make_session_factory
from service.demo import FLOW_NAME, run_demo


def _ours_alive(before: set[threading.Thread], wait: float = 15.0) -> list[threading.Thread]:
    deadline = time.monotonic() + wait
    while True:
        alive = [t for t in set(threading.enumerate()) - before if t.is_alive()]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


pytestmark = pytest.mark.demo  # minutes long: run with `pytest -m demo`


def test_demo_replays_a_period_through_the_api_and_the_flows(tmp_path):
    before = set(threading.enumerate())
    lines: list[str] = []
    report = run_demo(tmp_path / "demo", periods=1, echo=lines.append)
    output = "\n".join(lines)

    # Every thread and server it started is gone (service, dispatcher, catcher, people).
    assert not _ours_alive(before), "threads left running"

    # The output: the period's counts, its commendation lists, the emails, the audit.
    assert [p.period for p in report.periods] == ["2010"]
    period = report.periods[0]
    assert "period 2010" in output and "cases by stage/status:" in output
    assert sum(period.by_state.values()) == 126
    for state, n in period.by_state.items():
        assert f"{state:<28} {n:>5}" in output
    assert sum(len(names) for names in period.commended.values()) >= 1
    assert any(f"{award} ({len(names)})" in output for award, names in period.commended.items())
    assert period.caught > 0 and report.total_caught >= period.caught
    assert period.emails["escalation"] > 0 and period.emails["ballot_invitation"] > 0
    assert report.audit.startswith("OK") and "audit verify: OK" in output
    assert "total wall time" in output

    # The people's script happened: late pledges, returns, an upheld objection, a round
    # below quorum, and the flows moved the calendar on their own.
    assert period.late and period.returned and period.below_quorum
    assert period.objection_upheld is not None
    assert period.by_state.get("closed/commended", 0) >= 1
    assert period.rollover.startswith("2010 closed")

    engine = make_engine(f"sqlite:///{tmp_path / 'demo' / 'pledgeflow.db'}")
    try:
        with make_session_factory(engine)() as s:
            by_flow = set(s.execute(sa.select(Event.action, Event.actor_flow)
                                     .where(Event.action.in_(("open_pledge", "publish",
                                                              "close_notice", "open_review",
                                                              "open_evaluation", "close_round",
                                                              "extend_round",
                                                              "mark_inconclusive")))
                                     .distinct()).all())
            upheld = s.scalar(sa.select(sa.func.count()).select_from(Event).where(
                Event.action == "uphold_objection", Event.actor_person_id.is_not(None)))
            people_acts = s.scalar(sa.select(sa.func.count()).select_from(Event).where(
                Event.action.in_(("submit", "approve", "cast_ballot")),
                Event.actor_flow.is_(None)))
    finally:
        engine.dispose()
    assert {action for action, _ in by_flow} == {
        "open_pledge", "publish", "close_notice", "open_review", "open_evaluation",
        "close_round", "extend_round", "mark_inconclusive"}
    assert {flow for _, flow in by_flow} == {FLOW_NAME}
    assert upheld == 1 and people_acts > 126
