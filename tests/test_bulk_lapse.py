"""The rollover's set-based paths: ``engine.lapse_cases``, ``history.append_bulk`` and
``history.insert_rows`` (COPY on PostgreSQL), on both databases.

``lapse_cases`` must write exactly what ``apply(action="lapse")`` on each unfinished case wrote
before it: the same states, versions, deadlines, notices and the very same hash chain. The
COPY path starts at ``history.COPY_FROM`` rows, more than the seeded demo has cases, so the
``copy`` fixture lowers it to one row to run these tests through COPY too (PostgreSQL only; on
SQLite both settings are multi-row INSERTs).
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from models import Case, ChainHead, Event, Notification, Pledge, PledgeItem, PublicNotice
from service import history
from service.clock import FixedClock, end_of_day
from service.db import transaction
from service.errors import Conflict, TransitionRefused
from service.periods import get_period, roll_over, subjects_for
from service.workflow import engine, table
from service.workflow.roles import Actor
from tests import builders as b
from tests.test_choke_point import scan_for_case_writes
from tests.test_concurrency import assert_chain_intact, race, setup_cases, start, unexpected

ON_POSTGRESQL = pytest.mark.parametrize("db", ["postgresql"], indirect=True)
FLOW = Actor(flow="rollover")
# One case in each of these states (the four "lapse" rows of the table, under notice or not).
STATES = (("commendation", "under_notice"), ("pledge", "pending"), ("pledge", "drafting"),
          ("pledge", "submitted"), ("pledge", "returned"), ("pledge", "approved"),
          ("pledge", "under_notice"), ("pledge", "done"), ("review", "open"),
          ("review", "recorded"), ("review", "acknowledged"), ("evaluation", "voting"),
          ("evaluation", "tallied"), ("evaluation", "announced"))


@pytest.fixture(params=["insert", "copy"])
def copy(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Bulk rows as multi-row INSERTs, or by COPY from the first row (PostgreSQL)."""
    if request.param == "copy":
        monkeypatch.setattr(history, "COPY_FROM", 1)
    return request.param


def _spread(session: Session) -> tuple[Any, FixedClock]:
    """2010 open, one case in each of STATES (the rest pending), the clock past its end."""
    period = b.period(session)
    clock = b.clock_at(period.starts_on)
    b.opened_period(session, clock)
    cases = session.scalars(sa.select(Case).where(Case.period_id == period.id)
                            .order_by(Case.id).limit(len(STATES))).all()
    for case, state in zip(cases, STATES, strict=True):
        b.drive(session, case, state, clock)
    clock.set(end_of_day(period.ends_on) + timedelta(hours=3))
    session.flush()
    return period, clock


def _field(event: tuple[Any, ...], name: str) -> Any:
    return event[(*history.HASHED_FIELDS, "hash").index(name)]


def _written(session: Session, period_id: int, after_seq: int) -> dict[str, Any]:
    """Everything a lapse may write: the period's cases, notices, new events, new
    notifications, the chain head."""
    session.expire_all()
    return {
        "cases": session.execute(sa.select(
            Case.id, Case.stage, Case.status, Case.version, Case.due_at, Case.updated_at)
            .where(Case.period_id == period_id).order_by(Case.id)).all(),
        "notices": session.execute(sa.select(PublicNotice.id, PublicNotice.status)
                                   .order_by(PublicNotice.id)).all(),
        "events": [tuple(getattr(e, f) for f in (*history.HASHED_FIELDS, "hash"))
                   for e in session.scalars(sa.select(Event).where(Event.seq > after_seq)
                                            .order_by(Event.seq))],
        "notifications": session.scalar(sa.select(sa.func.count()).select_from(Notification)),
        "head": session.execute(sa.select(ChainHead.seq, ChainHead.hash)).all(),
    }


def test_lapse_cases_writes_what_apply_on_each_case_wrote(session: Session, copy: str) -> None:
    period, clock = _spread(session)
    seq = history.head(session)[0]
    unfinished = session.scalars(sa.select(Case.id).where(
        Case.period_id == period.id, Case.stage != "closed").order_by(Case.id)).all()
    open_notices = session.scalar(sa.select(sa.func.count()).select_from(PublicNotice).where(
        PublicNotice.status == "open", PublicNotice.case_id.is_not(None)))
    assert len(unfinished) > len(STATES) and open_notices >= 1

    savepoint = session.begin_nested()
    for case_id in unfinished:  # the rollover's loop before lapse_cases
        engine.apply(session, case_id=case_id, action="lapse", actor=FLOW, clock=clock)
    one_by_one = _written(session, period.id, seq)
    savepoint.rollback()
    assert _written(session, period.id, seq)["events"] == []

    lapsed = engine.lapse_cases(session, period=period, actor=FLOW, clock=clock)
    at_once = _written(session, period.id, seq)

    assert lapsed == list(unfinished)
    assert at_once == one_by_one  # states, versions, deadlines, notices, every hash
    assert {(stage, status) for _, stage, status, *_ in at_once["cases"]} == \
        {("closed", "lapsed")}
    assert len(at_once["events"]) == len(unfinished)
    assert {_field(e, "stage") for e in at_once["events"]} == \
        {"pledge", "review", "evaluation", "commendation"}  # every lapse row of the table
    assert {_field(e, "to_status") for e in at_once["events"]} == {"closed.lapsed"}
    assert session.scalar(sa.select(sa.func.count()).select_from(PublicNotice).where(
        PublicNotice.status == "open", PublicNotice.case_id.is_not(None))) == 0
    assert history.verify(session) is None
    # Nothing is left to lapse: a second call writes nothing.
    assert engine.lapse_cases(session, period=period, actor=FLOW, clock=clock) == []
    assert _written(session, period.id, seq) == at_once


def test_lapse_cases_before_the_end_refuses_and_writes_nothing(session: Session) -> None:
    period, clock = _spread(session)
    clock.set(end_of_day(period.ends_on) - timedelta(microseconds=1))
    seq = history.head(session)[0]
    before = _written(session, period.id, seq)

    with pytest.raises(TransitionRefused) as refused:
        engine.lapse_cases(session, period=period, actor=FLOW, clock=clock)

    assert {r.code for r in refused.value.reasons} == {"period_not_ended"}
    session.flush()
    assert _written(session, period.id, seq) == before


def test_lapse_cases_is_for_flows_and_the_office_only(session: Session) -> None:
    period, clock = _spread(session)
    seq = history.head(session)[0]
    before = _written(session, period.id, seq)
    secretary = b.subject_of(session, b.unit_case(session, "telecom"))

    with pytest.raises(TransitionRefused) as refused:
        engine.lapse_cases(session, period=period, actor=secretary, clock=clock)
    assert {r.code for r in refused.value.reasons} == {"role"}
    assert _written(session, period.id, seq) == before

    lapsed = engine.lapse_cases(session, period=period, actor=b.office(session), clock=clock)
    assert lapsed and {_field(e, "actor_person_id") for e in _written(
        session, period.id, seq)["events"]} == {b.office(session).person_id}


@pytest.mark.parametrize("transition", [t for t in table.TRANSITIONS if t.action == "lapse"],
                         ids=lambda t: t.stage)
def test_every_lapse_row_of_the_table_can_run_in_bulk(transition: table.Transition) -> None:
    # Should a lapse row gain a notification, a case-dependent guard or an effect without a
    # set-based twin, the rollover must fail loudly here rather than skip it silently.
    engine._bulk_ready(transition)


@pytest.mark.parametrize("state, action", [(("pledge", "submitted"), "approve"),
                                           (("pledge", "pending"), "open_pledge"),
                                           (("commendation", "under_notice"), "decide")])
def test_rows_the_bulk_path_cannot_honour_are_refused(state: tuple[str, str],
                                                      action: str) -> None:
    transition = table.find(*state, action)
    assert transition is not None
    with pytest.raises(ValueError, match="cannot be applied in bulk"):
        engine._bulk_ready(transition)


def test_append_bulk_chains_the_same_events_as_append_many(session: Session, copy: str) -> None:
    at = datetime(2010, 6, 1, 8, tzinfo=UTC)
    drafts = [history.EventDraft(action="open_case", actor=FLOW, occurred_at=at + timedelta(
        seconds=n % 3), comment=f"草稿 {n}" if n % 2 else None,
        payload={"n": n, "名": "单位", "at": at.isoformat()}) for n in range(7)]
    seq = history.head(session)[0]

    savepoint = session.begin_nested()
    made = history.append_many(session, drafts)
    one = _written(session, 0, seq)["events"]
    savepoint.rollback()
    assert history.append_bulk(session, drafts) == len(drafts)
    bulk = _written(session, 0, seq)["events"]

    assert bulk == one and [e[-1] for e in bulk] == [e.hash for e in made]
    assert all(history.event_hash(dict(zip((*history.HASHED_FIELDS, "hash"), e, strict=True)))
               == e[-1] for e in bulk)
    assert history.verify(session) is None


def test_append_bulk_streams_a_generator_and_checks_its_count(session: Session,
                                                            copy: str) -> None:
    at = datetime(2010, 6, 1, tzinfo=UTC)
    seq, head_hash = history.head(session)

    def drafts(n: int) -> Any:
        return (history.EventDraft(action="open_case", actor=FLOW, occurred_at=at,
                                   payload={"n": i}) for i in range(n))

    assert history.append_bulk(session, drafts(3), count=3) == 3
    assert [e[-1] for e in _written(session, 0, seq)["events"]][-1] == history.head(session)[1]
    for announced in (2, 5):  # fewer or more than announced: nothing of it stays
        before = _written(session, 0, seq)
        with pytest.raises(ValueError, match="announced"), session.begin_nested():
            history.append_bulk(session, drafts(4), count=announced)
        assert _written(session, 0, seq) == before
    assert history.head(session)[0] == seq + 3 and head_hash != history.head(session)[1]
    assert history.verify(session) is None


@ON_POSTGRESQL
def test_copy_reports_a_constraint_as_sqlalchemy_does(session: Session, copy: str) -> None:
    at = datetime(2010, 6, 1, tzinfo=UTC)
    row = {"seq": 10**9, "case_id": None, "period_id": None, "stage": None,
           "from_status": None, "to_status": None, "action": "x", "actor_person_id": None,
           "actor_flow": "t", "occurred_at": at, "comment": None, "payload": {},
           "prev_hash": "a" * 64, "hash": "b" * 64}
    with pytest.raises(sa.exc.IntegrityError), session.begin_nested():
        history.insert_rows(session, sa.insert(Event), [row, {**row, "hash": "c" * 64}])


def test_the_scan_catches_a_bulk_insert_of_cases_elsewhere(tmp_path: Any) -> None:
    stray = tmp_path / "stray.py"
    stray.write_text("history.insert_rows(session, sa.insert(Case), rows)\n", encoding="utf-8")
    assert scan_for_case_writes(stray, "service/stray.py")


# --- the whole rollover through COPY, twice, and twice at once ---------------------------------

@ON_POSTGRESQL
def test_rollovers_at_once_through_copy_end_as_one_rollover(fresh_db: Any,
                                                           copy: str) -> None:
    setup_cases(fresh_db, ("pledge", "submitted"), 3)  # drafts with items to carry over
    with transaction(fresh_db.factory) as s:
        old, new = get_period(s, "2010"), get_period(s, "2011-h1")
        unfinished = s.scalar(sa.select(sa.func.count()).select_from(Case).where(
            Case.period_id == old.id, Case.stage != "closed"))
        carried_from = set(s.scalars(
            sa.select(PledgeItem.id).join(Pledge).join(Case, Case.id == Pledge.case_id)
            .where(Case.period_id == old.id,
                   PledgeItem.fulfilment.in_(("pending", "in_progress")))))
        subjects = len(subjects_for(s))
        events_before = b.event_count(s)
    assert carried_from and unfinished
    after_end = FixedClock(end_of_day(old.ends_on) + timedelta(hours=2))

    def roll(_i: int, barrier: threading.Barrier) -> Any:
        with transaction(fresh_db.factory) as s:
            start(s)
            barrier.wait()
            return roll_over(s, "2010", actor=FLOW, clock=after_end)

    results = race(2, roll)

    assert not unexpected(results, Conflict), unexpected(results, Conflict)
    reports = sorted((r.value for r in results if r.ok), key=lambda r: r.lapsed)
    assert [(r.closed_period, r.lapsed, r.opened_period, r.cases_opened)
            for r in reports][-1] == ("2010", unfinished, "2011-h1", subjects)
    assert all((r.lapsed, r.cases_opened) == (0, 0) for r in reports[:-1])

    def state(s: Session) -> dict[str, Any]:
        return {"written": _written(s, new.id, events_before),
                "old": _written(s, old.id, 0)["cases"],
                "carried": sorted(s.scalars(sa.select(PledgeItem.carried_over_from_id).where(
                    PledgeItem.carried_over_from_id.is_not(None)))),
                "told": s.execute(sa.select(Notification.recipient_person_id, sa.func.count())
                                  .where(Notification.batch_key.like("period_opened:2011-h1:%"))
                                  .group_by(Notification.recipient_person_id)).all()}

    with transaction(fresh_db.factory) as s:
        done = state(s)
        assert_chain_intact(s)
    assert len(done["written"]["cases"]) == subjects
    assert len(done["written"]["events"]) == unfinished + 1 + subjects + 1
    assert {(st, status) for _, st, status, *_ in done["old"]} <= {
        ("closed", "lapsed"), ("closed", "commended"), ("closed", "not_commended")}
    assert done["carried"] == sorted(carried_from), "items carried twice or not at all"
    assert done["told"] and all(n == 1 for _, n in done["told"]), "someone was told twice"

    # Once more, later: nothing left to do, nothing written.
    with transaction(fresh_db.factory) as s:
        again = roll_over(s, "2010", actor=FLOW, clock=FixedClock(after_end.now()
                                                                  + timedelta(days=1)))
    assert (again.closed_period, again.lapsed, again.opened_period, again.cases_opened) == \
        (None, 0, None, 0)
    with transaction(fresh_db.factory) as s:
        assert state(s) == done
