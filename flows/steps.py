"""The campaign's sequence as code: for a case's state and the time, which step is due.

    1. public pledge     open at period start → (people draft, submit, approve) → publish →
                         close the public notice once its window passed with no open objection
    2. leader review     open on the calendar's review date once the pledge is done
    3. mass evaluation   open on the evaluation date (ballot invitations go out); close at the
                         deadline, or earlier when everyone voted; below quorum extend once,
                         then mark inconclusive; announce the tally
    4. commendation      once every case of the period is evaluated, or when the commendation
                         date is near (the shortlist's notice must end before it), select and
                         post the shortlist; after the notice hand the decision to the campaign
                         office (people decide; flows only remind)
    then                 after the period's end: roll over into the next period

``due_step`` (one case) and ``period_step`` (the period as a whole) are pure: the flows
(``drive_case``, ``drive_period``) and the tests call them with snapshots read from the
service; the service's guards remain the final word, so a wrong guess here is a refusal there,
never a wrong state.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

__all__ = ["Calendar", "RoundSnapshot", "CaseSnapshot", "AwardSnapshot", "Step", "due_step",
           "period_step", "ORDER", "CASE_ACTIONS", "AWARD_OF"]

CAMPAIGN_TZ = ZoneInfo("Asia/Shanghai")
ORDER = ("pledge", "review", "evaluation", "commendation")
#: The machine steps on one case, in the order of the sequence (flows apply them in this order).
CASE_ACTIONS = ("open_pledge", "publish", "close_notice", "open_review", "open_evaluation",
                "close_round", "extend_round", "mark_inconclusive", "announce_results")
#: Which award a subject kind competes for (models.commendation.AWARDS).
AWARD_OF = {"organization": "advanced_organization", "member": "outstanding_member"}
_EVALUATED = frozenset({("evaluation", "announced"), ("evaluation", "inconclusive")})


def _start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=CAMPAIGN_TZ)


@dataclass(frozen=True)
class Calendar:
    """A period's dates and status, as the service publishes them."""

    code: str
    starts_on: date
    ends_on: date
    review_opens_on: date
    evaluation_opens_on: date
    commendation_on: date
    notice_days: int = 7
    status: str = "open"

    @property
    def selection_at(self) -> datetime:
        """The latest start of the selection for its shortlist notice to end before the
        commendation date (a day to spare for the office's decision)."""
        return _start(self.commendation_on - timedelta(days=self.notice_days + 1))


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
        """The same comparison as the service's ``quorum_reached`` guard, so the flow never
        proposes a close the guard refuses (or an extension it refuses)."""
        return self.assigned > 0 and self.voted / self.assigned >= self.quorum


@dataclass(frozen=True)
class CaseSnapshot:
    """One case as the flows see it."""

    case_id: int
    stage: str
    status: str
    version: int
    due_at: datetime | None
    round: RoundSnapshot | None = None
    subject_kind: str = "organization"
    open_objection: bool = False


@dataclass(frozen=True)
class AwardSnapshot:
    """One award's selection in a period: its status, notice and whether the office was told."""

    commendation_id: int
    award: str
    status: str  # selected | under_notice | decided
    notice_ends_at: datetime | None = None
    handed_off: bool = False


@dataclass(frozen=True)
class Step:
    """An action due now — on a case, or period-wide (``target``: a commendation id) — and why."""

    action: str
    why: str
    target: int | None = None


def due_step(case: CaseSnapshot, calendar: Calendar, now: datetime) -> Step | None:
    """The one step the flows should take on this case now, or None (waiting on people or on
    the calendar)."""
    state = (case.stage, case.status)
    if state == ("pledge", "pending") and now >= _start(calendar.starts_on):
        return Step("open_pledge", f"period {calendar.code} has started")
    if state == ("pledge", "approved"):
        return Step("publish", "an approved pledge is posted for public notice")
    if state == ("pledge", "under_notice") and case.due_at and now >= case.due_at:
        if case.open_objection:
            return None  # the office or the superior must resolve the objection first
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
                awards: Iterable[AwardSnapshot] = ()) -> Step | None:
    """The period-wide step due now: select, post a shortlist, hand the decision to the
    office, or roll over. Call again after acting: one step at a time."""
    if calendar.status == "closed":
        return None
    if now >= _start(calendar.ends_on + timedelta(days=1)):
        return Step("roll_over", f"period {calendar.code} ended on {calendar.ends_on}")
    if calendar.status == "planned":
        # Opened by the rollover of the period before (which carries unfinished pledge items
        # over) or, for the first period, by the campaign office: never here.
        return None
    awards = list(awards)
    selected = {a.award for a in awards}
    cases = list(cases)
    waiting = [c for c in cases if (c.stage, c.status) in _EVALUATED
               and AWARD_OF.get(c.subject_kind) not in selected]
    all_done = bool(cases) and all((c.stage, c.status) in _EVALUATED
                                   or c.stage in ("commendation", "closed") for c in cases)
    if waiting and (all_done or now >= calendar.selection_at):
        return Step("select", "every case is evaluated" if all_done
                    else f"the commendation date {calendar.commendation_on} is near")
    for award in sorted(awards, key=lambda a: a.commendation_id):
        if award.status == "selected":
            return Step("post_shortlist", f"the {award.award} shortlist goes under public "
                        "notice", award.commendation_id)
        if award.status == "under_notice" and not award.handed_off \
                and award.notice_ends_at is not None and now >= award.notice_ends_at:
            return Step("hand_off", f"the {award.award} shortlist's notice has ended: the "
                        "campaign office decides", award.commendation_id)
    return None
