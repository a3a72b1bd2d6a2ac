"""Races through the choke point with real threads, real connections and committed data.

Every test works on ``fresh_db`` (a private, committed copy of the seeded database) so that each
thread can use its own connection and its own ``transaction(factory)``. PostgreSQL serialises the
racers with row locks (``FOR UPDATE`` on the case, the period and the chain head); SQLite
serialises every writer with ``BEGIN IMMEDIATE``. Either way the outcome must be the one a
single, sequential run would have produced.

Every wait is bounded (barrier, joins, and on PostgreSQL a ``lock_timeout``), so a deadlock or a
lost wake-up fails the test instead of hanging the suite.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from models import (
    BallotCount,
    BallotReceipt,
    Case,
    EvaluationRound,
    EvaluatorAssignment,
    Event,
    Notification,
    Period,
    Pledge,
    PledgeItem,
)
from service import history
from service.clock import FixedClock, end_of_day
from service.db import transaction
from service.errors import Conflict, StaleVersion, TransitionRefused
from service.periods import get_period, roll_over, subjects_for
from service.workflow import engine
from service.workflow.roles import Actor
from tests import builders as b

THREAD_TIMEOUT = 90.0  # seconds for a whole race; a healthy one takes well under five
LOCK_TIMEOUT_MS = 30_000


# --- helpers -------------------------------------------------------------------------------


class _Abort(Exception):
    """Raised to leave a ``transaction`` block by rolling it back."""


@dataclass
class Result:
    """What one racer ended with: a value, or the exception it raised."""

    index: int
    value: Any = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def race(n: int, work: Callable[[int, threading.Barrier], Any], *,
         timeout: float = THREAD_TIMEOUT) -> list[Result]:
    """Run ``work(i, barrier)`` in ``n`` threads; ``work`` must call ``barrier.wait()`` once
    right before the contended operation. Joins are bounded; no thread may be left alive."""
    barrier = threading.Barrier(n, timeout=timeout)
    results = [Result(i) for i in range(n)]

    def run(i: int) -> None:
        try:
            results[i].value = work(i, barrier)
        except BaseException as exc:  # noqa: BLE001 - every outcome is judged by the test
            results[i].error = exc

    threads = [threading.Thread(target=run, args=(i,), name=f"racer-{i}", daemon=True)
               for i in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    alive = [t.name for t in threads if t.is_alive()]
    assert not alive, f"threads still running after {timeout}s (deadlock?): {alive}"
    return results


def start(session: Session) -> None:
    """Bound lock waits on PostgreSQL (SQLite's busy_timeout bounds them there)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.text(f"SET LOCAL lock_timeout = {LOCK_TIMEOUT_MS}"))


def errors_of(results: list[Result]) -> list[BaseException]:
    return [r.error for r in results if r.error is not None]


def unexpected(results: list[Result], *allowed: type[BaseException]) -> list[str]:
    return [f"racer {r.index}: {type(r.error).__name__}: {r.error}" for r in results
            if r.error is not None and not isinstance(r.error, allowed)]


def assert_chain_intact(session: Session) -> None:
    """verify() passes, and independently: seq is 1..n and no two events share a prev_hash."""
    assert history.verify(session) is None
    count, max_seq, min_seq, prevs = session.execute(sa.select(
        sa.func.count(), sa.func.max(Event.seq), sa.func.min(Event.seq),
        sa.func.count(sa.distinct(Event.prev_hash)))).one()
    assert (min_seq, max_seq) == (1, count), "event sequence has gaps or does not start at 1"
    assert prevs == count, "two events link to the same predecessor: the chain forked"
    assert history.head(session)[0] == count


def events_for(session: Session, case_id: int, action: str) -> int:
    return session.scalar(sa.select(sa.func.count()).select_from(Event).where(
        Event.case_id == case_id, Event.action == action)) or 0


def setup_cases(fresh_db, target: tuple[str, str], n: int) -> tuple[list[int], FixedClock]:
    """Open 2010 and walk the first ``n`` cases to ``target``; committed."""
    with transaction(fresh_db.factory) as s:
        clock = b.clock_at(b.period(s).starts_on)
        b.opened_period(s, clock)
        cases = s.scalars(sa.select(Case).order_by(Case.id).limit(n)).all()
        for case in cases:
            b.drive(s, case, target, clock)
        return [c.id for c in cases], clock


# --- (a) many approvers, one case -----------------------------------------------------------


def test_racing_approvals_of_one_case_let_exactly_one_win(fresh_db):
    (case_id,), clock = setup_cases(fresh_db, ("pledge", "submitted"), 1)
    with transaction(fresh_db.factory) as s:
        case = s.get(Case, case_id)
        version = case.version
        approver = b.superior_of(s, case)
        events_before = b.event_count(s)
    n = 16

    def approve(_i: int, barrier: threading.Barrier) -> engine.Outcome:
        with transaction(fresh_db.factory) as s:
            start(s)
            barrier.wait()
            return engine.apply(s, case_id=case_id, action="approve", actor=approver,
                                clock=clock, expected_version=version)

    results = race(n, approve)

    assert not unexpected(results, Conflict), unexpected(results, Conflict)
    winners = [r for r in results if r.ok]
    assert len(winners) == 1, f"{len(winners)} approvals succeeded"
    assert len(errors_of(results)) == n - 1
    assert all(isinstance(e, Conflict) for e in errors_of(results))
    with transaction(fresh_db.factory) as s:
        case = s.get(Case, case_id)
        assert (case.stage, case.status, case.version) == ("pledge", "approved", version + 1)
        assert winners[0].value.version == version + 1
        assert events_for(s, case_id, "approve") == 1
        assert b.event_count(s) == events_before + 1
        assert_chain_intact(s)


def test_a_second_approver_waits_for_the_lock_then_sees_the_new_version(fresh_db):
    """Deterministic: the loser starts while the winner's transaction is still open."""
    (case_id,), clock = setup_cases(fresh_db, ("pledge", "submitted"), 1)
    with transaction(fresh_db.factory) as s:
        case = s.get(Case, case_id)
        version, approver = case.version, b.superior_of(s, case)
    applied, release = threading.Event(), threading.Event()
    second_done = threading.Event()
    outcome: dict[str, Any] = {}

    def first() -> None:
        try:
            with transaction(fresh_db.factory) as s:
                start(s)
                engine.apply(s, case_id=case_id, action="approve", actor=approver,
                             clock=clock, expected_version=version)
                applied.set()
                release.wait(THREAD_TIMEOUT)  # hold the lock (and the transaction) open
        except BaseException as exc:  # noqa: BLE001
            outcome["first"] = exc
            applied.set()

    def second() -> None:
        try:
            with transaction(fresh_db.factory) as s:
                start(s)
                engine.apply(s, case_id=case_id, action="approve", actor=approver,
                             clock=clock, expected_version=version)
            outcome["second"] = "approved"
        except BaseException as exc:  # noqa: BLE001
            outcome["second"] = exc
        finally:
            second_done.set()

    t1 = threading.Thread(target=first, daemon=True)
    t1.start()
    assert applied.wait(THREAD_TIMEOUT)
    assert "first" not in outcome, outcome
    t2 = threading.Thread(target=second, daemon=True)
    t2.start()
    # While the first transaction holds the case, the second must not get through.
    blocked = not second_done.wait(1.5)
    release.set()
    t1.join(THREAD_TIMEOUT)
    t2.join(THREAD_TIMEOUT)
    assert not t1.is_alive() and not t2.is_alive()
    assert blocked, f"the second approval did not wait for the first: {outcome.get('second')}"
    assert "first" not in outcome, outcome
    assert isinstance(outcome["second"], StaleVersion), outcome["second"]
    assert outcome["second"].extra == {"current_version": version + 1}
    with transaction(fresh_db.factory) as s:
        assert events_for(s, case_id, "approve") == 1
        assert_chain_intact(s)


@pytest.mark.postgres_only
def test_applying_row_locks_only_the_case_it_changes(fresh_db):
    """PostgreSQL row locks: an open transition holds its case (NOWAIT fails on it) but not
    the neighbouring cases, which stay lockable."""
    if fresh_db.backend != "postgresql":
        pytest.skip("row-level locking is PostgreSQL's; SQLite locks the whole database")
    (case_id, other_id), clock = setup_cases(fresh_db, ("pledge", "submitted"), 2)
    with transaction(fresh_db.factory) as s:
        approver = b.superior_of(s, s.get(Case, case_id))
    with pytest.raises(_Abort), transaction(fresh_db.factory) as holder:
        start(holder)
        engine.apply(holder, case_id=case_id, action="approve", actor=approver, clock=clock)
        with fresh_db.engine.connect() as probe, probe.begin():
            locked = sa.select(Case.id).with_for_update(nowait=True)
            with pytest.raises(OperationalError, match="could not obtain lock"), \
                    probe.begin_nested():
                probe.execute(locked.where(Case.id == case_id))
            assert probe.execute(locked.where(Case.id == other_id)).scalar() == other_id
            # Readers are never blocked, and see the committed state only.
            status = probe.execute(sa.select(Case.status).where(Case.id == case_id)).scalar()
            assert status == "submitted"
        raise _Abort  # roll the holder back: nothing of it may remain
    with transaction(fresh_db.factory) as s:
        assert s.get(Case, case_id).status == "submitted"
        assert events_for(s, case_id, "approve") == 0


# --- (b) many cases at once -------------------------------------------------------------------


def test_concurrent_transitions_on_different_cases_all_succeed_on_one_chain(fresh_db):
    n = 16
    case_ids, clock = setup_cases(fresh_db, ("pledge", "submitted"), n)
    assert len(case_ids) == n
    with transaction(fresh_db.factory) as s:
        plan = [(cid, s.get(Case, cid).version, b.superior_of(s, s.get(Case, cid)))
                for cid in case_ids]
        head_before = history.head(s)[0]

    def approve(i: int, barrier: threading.Barrier) -> engine.Outcome:
        case_id, version, approver = plan[i]
        with transaction(fresh_db.factory) as s:
            start(s)
            barrier.wait()
            return engine.apply(s, case_id=case_id, action="approve", actor=approver,
                                clock=clock, expected_version=version)

    results = race(n, approve)

    assert not errors_of(results), unexpected(results)
    seqs = sorted(r.value.event_seq for r in results)
    assert seqs == list(range(head_before + 1, head_before + n + 1))
    with transaction(fresh_db.factory) as s:
        new = s.execute(sa.select(Event.seq, Event.case_id, Event.action)
                        .where(Event.seq > head_before).order_by(Event.seq)).all()
        assert [seq for seq, _, _ in new] == seqs
        assert {action for _, _, action in new} == {"approve"}
        assert sorted(cid for _, cid, _ in new) == sorted(case_ids)
        statuses = s.scalars(sa.select(Case.status).where(Case.id.in_(case_ids))).all()
        assert statuses == ["approved"] * n
        assert_chain_intact(s)


# --- (c) one ballot per evaluator -------------------------------------------------------------


def _voting_case(fresh_db) -> tuple[int, int, list[tuple[int, int]], dict[str, str], FixedClock]:
    """A case in evaluation/voting: (case id, round id, [(assignment id, person id)],
    valid answers, clock inside the voting window)."""
    (case_id,), clock = setup_cases(fresh_db, ("evaluation", "voting"), 1)
    with transaction(fresh_db.factory) as s:
        round_ = s.scalars(sa.select(EvaluationRound).where(
            EvaluationRound.case_id == case_id)).one()
        assignments = s.execute(sa.select(EvaluatorAssignment.id, EvaluatorAssignment.person_id)
                                .where(EvaluatorAssignment.round_id == round_.id)
                                .order_by(EvaluatorAssignment.id)).all()
        assert len(assignments) >= 2, "the demo round needs several evaluators"
        answers = {criterion: "satisfied" for criterion in round_.criteria}
        return case_id, round_.id, [tuple(a) for a in assignments], answers, clock


def _ballots(s: Session, round_id: int) -> int:
    """Ballots in the box: every ballot answers every criterion, so any criterion's total."""
    totals = s.execute(sa.select(BallotCount.criterion, sa.func.sum(BallotCount.count))
                       .where(BallotCount.round_id == round_id)
                       .group_by(BallotCount.criterion)).all()
    assert len({n for _, n in totals}) <= 1, totals
    return int(totals[0][1]) if totals else 0


def test_the_database_refuses_a_second_receipt_for_the_same_evaluator(fresh_db):
    case_id, round_id, assignments, answers, clock = _voting_case(fresh_db)
    assignment_id, person_id = assignments[0]
    with transaction(fresh_db.factory) as s:
        engine.apply(s, case_id=case_id, action="cast_ballot", actor=Actor(person_id=person_id),
                     clock=clock, data={"answers": answers})
    # Around the engine (no guard, no ORM identity map): the constraint alone must refuse it.
    with pytest.raises(IntegrityError), transaction(fresh_db.factory) as s:
        s.execute(sa.insert(BallotReceipt).values(round_id=round_id,
                                                  assignment_id=assignment_id))
    # ... even when the evaluator's voted_at was wiped (the guard would then let it through).
    with pytest.raises(IntegrityError), transaction(fresh_db.factory) as s:
        s.execute(sa.update(EvaluatorAssignment).where(EvaluatorAssignment.id == assignment_id)
                  .values(voted_at=None))
        engine.apply(s, case_id=case_id, action="cast_ballot", actor=Actor(person_id=person_id),
                     clock=clock, data={"answers": answers})
        s.flush()
    # A different evaluator's receipt is fine (tried, then rolled back).
    with fresh_db.engine.connect() as conn, conn.begin() as tx:
        conn.execute(sa.insert(BallotReceipt).values(round_id=round_id,
                                                     assignment_id=assignments[1][0]))
        tx.rollback()
    with transaction(fresh_db.factory) as s:
        assert _ballots(s, round_id) == 1
        receipts = s.scalar(sa.select(sa.func.count()).select_from(BallotReceipt)
                            .where(BallotReceipt.round_id == round_id))
        assert receipts == 1


def test_one_evaluator_casting_at_once_from_eight_threads_counts_once(fresh_db):
    case_id, round_id, assignments, answers, clock = _voting_case(fresh_db)
    voter = Actor(person_id=assignments[0][1])
    with transaction(fresh_db.factory) as s:
        events_before = events_for(s, case_id, "cast_ballot")
        assert _ballots(s, round_id) == 0
    n = 8

    def cast(_i: int, barrier: threading.Barrier) -> engine.Outcome:
        with transaction(fresh_db.factory) as s:
            start(s)
            barrier.wait()
            return engine.apply(s, case_id=case_id, action="cast_ballot", actor=voter,
                                clock=clock, data={"answers": answers})

    results = race(n, cast)

    assert not unexpected(results, TransitionRefused, Conflict), \
        unexpected(results, TransitionRefused, Conflict)
    assert sum(r.ok for r in results) == 1
    for error in errors_of(results):
        if isinstance(error, TransitionRefused):
            assert [r.code for r in error.reasons] == ["already_voted"], error
    with transaction(fresh_db.factory) as s:
        assert _ballots(s, round_id) == 1
        assert s.scalar(sa.select(sa.func.count()).select_from(BallotReceipt)
                        .where(BallotReceipt.round_id == round_id)) == 1
        assert events_for(s, case_id, "cast_ballot") == events_before + 1
        voted = s.scalar(sa.select(EvaluatorAssignment.voted_at).where(
            EvaluatorAssignment.id == assignments[0][0]))
        assert voted is not None
        assert_chain_intact(s)


# --- (d) two rollovers at once ----------------------------------------------------------------


def _snapshot(s: Session, period_ids: list[int]) -> dict[str, Any]:
    count = sa.func.count()
    return {
        "cases": s.execute(sa.select(Case.period_id, Case.stage, Case.status, count)
                           .where(Case.period_id.in_(period_ids))
                           .group_by(Case.period_id, Case.stage, Case.status)
                           .order_by(Case.period_id, Case.stage, Case.status)).all(),
        "events": s.execute(sa.select(Event.action, count).group_by(Event.action)
                            .order_by(Event.action)).all(),
        "notifications": s.scalar(sa.select(count).select_from(Notification)),
        "pledge_items": s.scalar(sa.select(count).select_from(PledgeItem)),
        "pledges": s.scalar(sa.select(count).select_from(Pledge)),
        "periods": s.execute(sa.select(Period.code, Period.status).order_by(Period.sequence))
        .all(),
    }


def test_concurrent_rollovers_end_as_one_rollover(fresh_db):
    # Give a few cases something to carry over: drafts with pending items.
    case_ids, clock = setup_cases(fresh_db, ("pledge", "submitted"), 3)
    with transaction(fresh_db.factory) as s:
        old, new = get_period(s, "2010"), get_period(s, "2011-h1")
        unfinished = s.scalar(sa.select(sa.func.count()).select_from(Case).where(
            Case.period_id == old.id, Case.stage != "closed"))
        carried_from = set(s.scalars(
            sa.select(PledgeItem.id).join(Pledge).join(Case, Case.id == Pledge.case_id)
            .where(Case.period_id == old.id,
                   PledgeItem.fulfilment.in_(("pending", "in_progress")))))
        subjects = {subj.key for subj in subjects_for(s)}
        events_before = b.event_count(s)
    assert carried_from and unfinished > 0
    after_end = FixedClock(end_of_day(old.ends_on) + timedelta(hours=2))
    flow = Actor(flow="rollover")

    def roll(_i: int, barrier: threading.Barrier):  # type: ignore[no-untyped-def]
        with transaction(fresh_db.factory) as s:
            start(s)
            barrier.wait()
            return roll_over(s, "2010", actor=flow, clock=after_end)

    results = race(2, roll)

    # Both return, or one refuses cleanly (as a Conflict). A TransitionRefused would mean the
    # loser ran into the winner's work halfway (e.g. "lapse" on an already lapsed case): the
    # period lock is missing, so that counts as a failure, not as a clean refusal.
    assert not unexpected(results, Conflict), unexpected(results, Conflict)
    reports = [r.value for r in results if r.ok]
    assert reports, "neither rollover succeeded"
    did_work = [r for r in reports if r.closed_period is not None]
    assert len(did_work) == 1, reports
    assert (did_work[0].closed_period, did_work[0].lapsed, did_work[0].opened_period,
            did_work[0].cases_opened) == ("2010", unfinished, "2011-h1", len(subjects))
    for report in reports:
        if report is not did_work[0]:
            assert (report.closed_period, report.lapsed, report.opened_period,
                    report.cases_opened) == (None, 0, None, 0)

    with transaction(fresh_db.factory) as s:
        keys = s.scalars(sa.select(Case.subject_key).where(Case.period_id == new.id)).all()
        assert sorted(keys) == sorted(subjects), "not exactly one case per subject"
        stages = s.scalars(sa.select(sa.distinct(Case.stage)).where(
            Case.period_id == old.id)).all()
        assert stages == ["closed"]

        def period_events(action: str, period_id: int) -> int:
            return s.scalar(sa.select(sa.func.count()).select_from(Event).where(
                Event.action == action, Event.period_id == period_id)) or 0

        assert period_events("close_period", old.id) == 1
        assert period_events("open_period", new.id) == 1
        assert period_events("lapse", old.id) == unfinished
        assert period_events("open_case", new.id) == len(subjects)
        lapses_per_case = s.execute(sa.select(Event.case_id, sa.func.count()).where(
            Event.action == "lapse").group_by(Event.case_id)).all()
        assert all(n == 1 for _, n in lapses_per_case)
        assert b.event_count(s) == events_before + unfinished + 1 + len(subjects) + 1
        carried = s.scalars(sa.select(PledgeItem.carried_over_from_id).where(
            PledgeItem.carried_over_from_id.is_not(None))).all()
        assert sorted(carried) == sorted(carried_from), "items carried twice or not at all"
        told = s.execute(sa.select(Notification.recipient_person_id, sa.func.count())
                         .where(Notification.template == "period_rolled_over",
                                Notification.batch_key.like("period_opened:2011-h1:%"))
                         .group_by(Notification.recipient_person_id)).all()
        assert told and all(n == 1 for _, n in told), "someone was told twice"
        assert_chain_intact(s)
        before_again = _snapshot(s, [old.id, new.id])

    # Once more, sequentially: nothing left to do, nothing written.
    with transaction(fresh_db.factory) as s:
        report = roll_over(s, "2010", actor=flow, clock=after_end)
    assert (report.closed_period, report.lapsed, report.opened_period, report.cases_opened) == \
        (None, 0, None, 0)
    with transaction(fresh_db.factory) as s:
        assert _snapshot(s, [old.id, new.id]) == before_again
