"""The campaign's sequence as code: for a case's state and the time, which step is due.

    1. public pledge     open at period start → (people draft, submit, approve) → publish →
                         close the public notice once its window passed with no open objection
    2. leader review     open on the calendar's review date once the pledge is done
    3. mass evaluation   open on the evaluation date (ballot invitations go out); close at the
                         deadline, or earlier when everyone voted; below quorum extend once,
                         then mark inconclusive; announce the tally
    4. commendation      once every case of the period is evaluated, or on the commendation
                         date, select and post the shortlist; after the notice the campaign
                         office decides (people act; flows only remind)
    then                 after the period's end: roll over into the next period

``due_step`` is pure: flows (``drive_case``, ``drive_period``) and tests call it with a
snapshot read from the service; the service's guards remain the final word.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

__all__ = ["Calendar", "RoundSnapshot", "CaseSnapshot", "Step", "due_step", "period_step",
           "ORDER"]

CAMPAIGN_TZ = ZoneInfo("Asia/Shanghai")
ORDER = ("pledge", "review", "evaluation", "commendation")


def _start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=CAMPAIGN_TZ)


@dataclass(frozen=True)
class Calendar:
    """A period's dates, as the service publishes them."""

    code: str
    starts_on: date
    ends_on: date
    review_opens_on: date
    evaluation_opens_on: date
    commendation_on: date
    notice_days: int = 7


@dataclass(frozen=True)
class RoundSnapshot:
    """An evaluation round as far as deciding goes: never who voted what."""

    closes_at: datetime
    extended: bool
    assigned: int
    voted: int
    quorum: float

    @property
    def quorum_reached(self) -> bool:
        return self.assigned > 0 and round(self.voted / self.assigned, 9) >= self.quorum


@dataclass(frozen=True)
class CaseSnapshot:
    """One case as the flows see it."""

    case_id: int
    stage: str
    status: str
    version: int
    due_at: datetime | None
    round: RoundSnapshot | None = None


@dataclass(frozen=True)
class Step:
    """An action due now on a case, and why."""

    action: str
    why: str


def due_step(case: CaseSnapshot, calendar: Calendar, now: datetime) -> Step | None:
    """The one step the flows should take on this case now, or None (waiting on people)."""
    state = (case.stage, case.status)
    if state == ("pledge", "pending") and now >= _start(calendar.starts_on):
        return Step("open_pledge", f"period {calendar.code} has started")
    if state == ("pledge", "approved"):
        return Step("publish", "an approved pledge is posted for public notice")
    if state == ("pledge", "under_notice") and case.due_at and now >= case.due_at:
        return Step("close_notice", "the public notice window has ended")
    if state == ("pledge", "done") and now >= _start(calendar.review_opens_on):
        return Step("open_review", f"reviews open on {calendar.review_opens_on}")
    if case.stage == "review" and case.status in ("recorded", "acknowledged") \
            and now >= _start(calendar.evaluation_opens_on):
        return Step("open_evaluation", f"evaluation opens on {calendar.evaluation_opens_on}")
    if state == ("evaluation", "voting") and case.round is not None:
        return _round_step(case.round, now)
    if state == ("evaluation", "tallied"):
        return Step("announce_results", "the tally is ready to be announced")
    return None


def _round_step(round_: RoundSnapshot, now: datetime) -> Step | None:
    if round_.assigned and round_.voted >= round_.assigned:
        return Step("close_round", "every evaluator has voted")
    if now < round_.closes_at:
        return None
    if round_.quorum_reached:
        return Step("close_round", "the round's deadline has passed with quorum")
    if not round_.extended:
        return Step("extend_round", "below quorum at the deadline: extended once")
    return Step("mark_inconclusive", "still below quorum after the extension")


def period_step(cases: Iterable[CaseSnapshot], calendar: Calendar, now: datetime,
                *, selected: bool, shortlist_posted: bool) -> Step | None:
    """The period-wide step due now: selection, the shortlist notice, or the rollover."""
    if now >= _start(calendar.ends_on + timedelta(days=1)):
        return Step("roll_over", f"period {calendar.code} ended on {calendar.ends_on}")
    states = [(c.stage, c.status) for c in cases]
    evaluated = {("evaluation", "announced"), ("evaluation", "inconclusive")}
    ready = [s for s in states if s in evaluated]
    all_done = bool(states) and all(s in evaluated or s[0] in ("commendation", "closed")
                                    for s in states)
    selection_date = _start(calendar.commendation_on - timedelta(days=calendar.notice_days + 1))
    if not selected and ready and (all_done or now >= selection_date):
        return Step("select", "every case is evaluated" if all_done
                    else f"the commendation date {calendar.commendation_on} is near")
    if selected and not shortlist_posted:
        return Step("post_shortlist", "the shortlist goes under public notice")
    return None
