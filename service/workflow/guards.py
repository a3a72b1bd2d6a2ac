"""Guards: small named rules a transition must pass. Each reads the Context, writes nothing,
and returns ``None`` when satisfied or a ``Reason`` saying what is wrong. The engine runs every
guard of a transition and refuses with *all* reasons, so a person can fix everything at once.
"""

from __future__ import annotations

from collections.abc import Callable

from service import selection, tally
from service.clock import end_of_day, start_of_day
from service.errors import Reason
from service.workflow import inputs
from service.workflow.context import Context

Guard = Callable[[Context], Reason | None]

REVIEW_GRADES = ("excellent", "good", "fair", "poor")


def _refuse(code: str, message: str) -> Reason:
    return Reason(code=code, message=message)


# --- time, from the period's calendar -------------------------------------------------------

def period_started(ctx: Context) -> Reason | None:
    """Stages open on the calendar, never before the period starts."""
    if ctx.now < start_of_day(ctx.period.starts_on):
        return _refuse("period_not_started", f"the period starts on {ctx.period.starts_on}")
    return None


def period_ended(ctx: Context) -> Reason | None:
    """Cases lapse only once their period is over; an open period keeps them alive."""
    if ctx.now < end_of_day(ctx.period.ends_on):
        return _refuse("period_not_ended", f"the period runs until {ctx.period.ends_on}")
    return None


def review_date_reached(ctx: Context) -> Reason | None:
    """The scheduled review happens on the calendar's review date, not earlier."""
    if ctx.now < start_of_day(ctx.period.review_opens_on):
        return _refuse("review_not_due", f"reviews open on {ctx.period.review_opens_on}")
    return None


def evaluation_date_reached(ctx: Context) -> Reason | None:
    """Mass evaluation goes with the year-end report: it opens on its calendar date."""
    if ctx.now < start_of_day(ctx.period.evaluation_opens_on):
        return _refuse(
            "evaluation_not_due", f"evaluation opens on {ctx.period.evaluation_opens_on}"
        )
    return None


def notice_window_ended(ctx: Context) -> Reason | None:
    """A public notice must run its full window so that anyone can object."""
    notice = ctx.open_notice
    if notice is None:
        return _refuse("no_open_notice", "nothing of this case is under public notice")
    if ctx.now < notice.ends_at:
        return _refuse("notice_running",
                       f"the public notice runs until {notice.ends_at:%Y-%m-%d %H:%M} UTC")
    return None


def notice_open(ctx: Context) -> Reason | None:
    """Objections can be filed only while the notice window is open."""
    notice = ctx.open_notice
    if notice is None or not (notice.starts_at <= ctx.now < notice.ends_at):
        return _refuse("notice_closed", "the public notice window is not open")
    return None


def round_deadline_passed(ctx: Context) -> Reason | None:
    """Below quorum, a round may be extended or given up only after its deadline."""
    if ctx.round is None or ctx.now < ctx.round.closes_at:
        return _refuse("round_running", "the evaluation round has not reached its deadline")
    return None


def round_accepting_ballots(ctx: Context) -> Reason | None:
    """Ballots count only inside the round's window."""
    if ctx.round is None or ctx.round.status != "open" or ctx.now >= ctx.round.closes_at:
        return _refuse("round_closed", "the evaluation round is not accepting ballots")
    return None


# --- who ---------------------------------------------------------------------------------------

def not_own_pledge(ctx: Context) -> Reason | None:
    """Separation of duties: nobody approves, returns or reviews their own case or pledge."""
    submitted_by = ctx.pledge.submitted_by_id if ctx.pledge else None
    if "subject" in ctx.roles or (submitted_by and submitted_by == ctx.actor.person_id):
        return _refuse("own_case", "nobody may decide on their own pledge or case")
    return None


def actor_is_submitter(ctx: Context) -> Reason | None:
    """Only the person who submitted a pledge may withdraw it."""
    if ctx.pledge is None or ctx.pledge.submitted_by_id != ctx.actor.person_id:
        return _refuse("not_submitter", "only the submitter may withdraw a pledge")
    return None


def not_own_unit(ctx: Context) -> Reason | None:
    """Recusal: nobody decides on a nomination from their own unit or enterprise."""
    candidate_path = ctx.case_org.path
    unit_ids = {int(p.strip("/").split("/")[-1]) for p in ctx.actor_unit_paths}
    enterprise_ids = {_enterprise_of(p) for p in ctx.actor_unit_paths} - {None}
    candidate = selection.Candidate(
        case_id=ctx.case.id, subject_kind=ctx.case.subject_kind,
        unit_id=ctx.case.organization_id, enterprise_id=_enterprise_of(candidate_path) or 0,
        satisfaction=None, pledge_items_total=0, pledge_items_kept=0,
    )
    reason = selection.recused(unit_ids, enterprise_ids, candidate)
    return None if reason is None else _refuse(reason.code, reason.message_en)


def _enterprise_of(path: str) -> int | None:
    """The enterprise committee of an organization: the second id on its path."""
    parts = [p for p in path.strip("/").split("/") if p]
    return int(parts[1]) if len(parts) > 1 else None


def not_voted_yet(ctx: Context) -> Reason | None:
    """One ballot per evaluator (the database enforces it too)."""
    if ctx.my_assignment is not None and ctx.my_assignment.voted_at is not None:
        return _refuse("already_voted", "this evaluator has already cast a ballot")
    return None


# --- content -----------------------------------------------------------------------------------

def commend_only_shortlisted(ctx: Context) -> Reason | None:
    """Only a candidate who stood on the public shortlist can be commended."""
    assert isinstance(ctx.input, inputs.Decide)
    if ctx.input.commend and not (ctx.nomination and ctx.nomination.shortlisted):
        return _refuse("not_shortlisted", "only shortlisted candidates can be commended")
    return None


def within_quota(ctx: Context) -> Reason | None:
    """Commendations never exceed the award's quota; the shortlist is larger (1:1.2) on purpose."""
    assert isinstance(ctx.input, inputs.Decide)
    if not ctx.input.commend or ctx.commendation is None:
        return None
    if ctx.commended_so_far >= ctx.commendation.quota:
        return _refuse("quota_full", f"the quota of {ctx.commendation.quota} is already filled")
    return None


def selection_stored(ctx: Context) -> Reason | None:
    """A case enters the commendation stage only as part of a stored selection."""
    if ctx.nomination is None:
        return _refuse("not_selected", "run the period's selection first (no nomination stored)")
    return None


def shortlist_posted(ctx: Context) -> Reason | None:
    """A candidate waits on the public notice only once the shortlist has been posted."""
    if ctx.commendation is None or ctx.commendation.status != "under_notice":
        return _refuse("shortlist_not_posted", "the selection's shortlist is not under notice")
    return None


def comment_given(ctx: Context) -> Reason | None:
    """A return or a decision against someone must say why."""
    if not (ctx.comment and ctx.comment.strip()):
        return _refuse("comment_required", "a comment is required for this action")
    return None


def pledge_has_items(ctx: Context) -> Reason | None:
    """A pledge without items promises nothing checkable."""
    if not ctx.pledge_items:
        return _refuse("no_items", "the pledge has no items")
    return None


def pledge_items_complete(ctx: Context) -> Reason | None:
    """Items must be specific and checkable: a target, measures and a deadline each."""
    missing = [str(i + 1) for i, item in enumerate(ctx.pledge_items)
               if not (item.target.strip() and item.measures.strip() and item.deadline_on)]
    if missing:
        return _refuse("items_incomplete",
                       f"items {', '.join(missing)} lack a target, measures or a deadline")
    return None


def no_open_objection(ctx: Context) -> Reason | None:
    """What is under notice stands only when every objection to it has been resolved."""
    if ctx.open_objections:
        return _refuse("open_objection", f"{len(ctx.open_objections)} objection(s) unresolved")
    return None


def objection_is_open(ctx: Context) -> Reason | None:
    """Only an open objection to this case can be upheld or dismissed."""
    assert isinstance(ctx.input, inputs.ResolveObjection)
    if all(o.id != ctx.input.objection_id for o in ctx.open_objections):
        return _refuse("no_such_objection", "no open objection with that id on this case")
    return None


def fulfilment_item_of_case(ctx: Context) -> Reason | None:
    """A ledger line must be about an item of this case's pledge."""
    assert isinstance(ctx.input, inputs.RecordFulfilment)
    if all(item.id != ctx.input.item_id for item in ctx.pledge_items):
        return _refuse("no_such_item", "no pledge item with that id on this case")
    return None


def review_ratings_valid(ctx: Context) -> Reason | None:
    """Ratings are per criterion of the case's sets (or a unit's refinement of them), on the
    review grade scale."""
    assert isinstance(ctx.input, inputs.RecordReview)
    bad = [f"{k}={v}" for k, v in ctx.input.ratings.items() if v not in REVIEW_GRADES]
    unknown = sorted(set(ctx.input.ratings) - ctx.criterion_codes)
    if bad or unknown:
        return _refuse("bad_rating", "; ".join(
            ([f"ratings must be one of {REVIEW_GRADES}: {', '.join(bad)}"] if bad else []) +
            ([f"not criteria of this case: {', '.join(unknown)}"] if unknown else [])))
    return None


def ballot_valid(ctx: Context) -> Reason | None:
    """Every answer names a criterion of the round and an option of its scale."""
    assert isinstance(ctx.input, inputs.CastBallot) and ctx.round is not None
    problems = tally.validate_ballot(ctx.input.answers, ctx.round.criteria, ctx.rules)
    return _refuse("bad_ballot", "; ".join(problems)) if problems else None


def _votes(ctx: Context) -> tuple[int, int]:
    return sum(a.voted_at is not None for a in ctx.assignments), len(ctx.assignments)


def quorum_reached(ctx: Context) -> Reason | None:
    """A round counts only when enough of its evaluators voted."""
    cast, assigned = _votes(ctx)
    if not assigned or cast / assigned < ctx.round.quorum:  # type: ignore[union-attr]
        return _refuse("below_quorum", f"{cast} of {assigned} evaluators voted; below quorum")
    return None


def below_quorum(ctx: Context) -> Reason | None:
    """Extending or giving up a round makes sense only below quorum."""
    return None if quorum_reached(ctx) else _refuse("quorum_reached", "the round has quorum")


def all_voted_or_deadline(ctx: Context) -> Reason | None:
    """A round closes at its deadline, or earlier once every evaluator has voted."""
    cast, assigned = _votes(ctx)
    if cast < assigned and round_deadline_passed(ctx) is not None:
        return _refuse("round_running", f"{assigned - cast} evaluator(s) may still vote")
    return None


def removed_have_not_voted(ctx: Context) -> Reason | None:
    """An evaluator who already voted stays assigned: their ballot is in the count."""
    assert isinstance(ctx.input, inputs.AssignEvaluators)
    voted = {a.person_id for a in ctx.assignments if a.voted_at is not None}
    clash = sorted(voted & set(ctx.input.remove))
    if clash:
        return _refuse("already_voted", f"evaluators {clash} already voted and cannot be removed")
    return None


def not_extended(ctx: Context) -> Reason | None:
    """A round below quorum is extended once, no more."""
    if ctx.round is not None and ctx.round.extended:
        return _refuse("already_extended", "the round has already been extended once")
    return None


def already_extended(ctx: Context) -> Reason | None:
    """A round is given up as inconclusive only after its one extension."""
    if ctx.round is None or not ctx.round.extended:
        return _refuse("not_extended", "extend the round once before marking it inconclusive")
    return None
