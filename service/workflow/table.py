"""The transition table: every legal move of a case, and nothing else (deny by default).

Read it top to bottom and you have the campaign: public pledge → leader review → mass
evaluation → selection and commendation → closed, plus lapsing at period rollover. Each row
says from which (stage, statuses) an action goes where, who may take it (roles relative to the
case, see ``roles.py``), which guards must pass, what it writes, and who is told.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import BaseModel

from service.workflow import effects as fx
from service.workflow import guards as g
from service.workflow import inputs
from service.workflow.context import Context

__all__ = ["Transition", "Notify", "TRANSITIONS", "STATUSES", "find", "actions_from"]

State = tuple[str, str]

STATUSES: dict[str, tuple[str, ...]] = {
    "pledge": ("pending", "drafting", "submitted", "returned", "approved", "under_notice", "done"),
    "review": ("open", "recorded", "acknowledged"),
    "evaluation": ("voting", "tallied", "inconclusive", "announced"),
    "commendation": ("considered", "under_notice"),
    "closed": ("commended", "not_commended", "lapsed"),
}
INITIAL: State = ("pledge", "pending")


@dataclass(frozen=True)
class Notify:
    """Tell an audience (subject, superior, office, evaluators) with a template — only
    ``when`` the predicate holds, if one is given."""

    template: str
    audience: str
    when: Callable[[Context], bool] | None = None


@dataclass(frozen=True)
class Transition:
    """One row of the table."""

    action: str
    stage: str
    sources: tuple[str, ...]
    target: State | None  # None: the case stays where it is (a decision inside a status)
    roles: frozenset[str]
    guards: tuple[g.Guard, ...] = ()
    input: type[BaseModel] | None = None
    effect: Callable[[Context], None] | None = None
    notify: tuple[Notify, ...] = ()
    choose_target: Callable[[Context], State] | None = None
    targets: tuple[State, ...] = field(default=())
    bumps_version: bool = True

    def possible_targets(self) -> tuple[State, ...]:
        """Every state this transition can lead to (for tests and the diagram)."""
        if self.targets:
            return self.targets
        return (self.target,) if self.target else tuple((self.stage, s) for s in self.sources)


def _roles(*names: str) -> frozenset[str]:
    return frozenset(names)


MACHINE = _roles("flow", "office")
ACTIVE_AFTER_PLEDGE = {
    "review": STATUSES["review"],
    "evaluation": STATUSES["evaluation"],
    "commendation": STATUSES["commendation"],
}


def _shortlisted(ctx: Context) -> bool:
    return ctx.nomination is not None and ctx.nomination.shortlisted


def _decision(ctx: Context) -> State:
    commend = isinstance(ctx.input, inputs.Decide) and ctx.input.commend
    return ("closed", "commended" if commend else "not_commended")


TRANSITIONS: tuple[Transition, ...] = (
    # 1. Public pledge (公开承诺) -----------------------------------------------------------------
    Transition("open_pledge", "pledge", ("pending",), ("pledge", "drafting"), MACHINE,
               (g.period_started,), effect=fx.ensure_pledge,
               notify=(Notify("stage_opened", "subject"),)),
    Transition("edit_pledge", "pledge", ("drafting", "returned"), None, _roles("subject"),
               input=inputs.EditPledge, effect=fx.edit_pledge),
    Transition("submit", "pledge", ("drafting", "returned"), ("pledge", "submitted"),
               _roles("subject"), (g.pledge_has_items, g.pledge_items_complete),
               effect=fx.mark_submitted, notify=(Notify("pledge_submitted", "superior"),)),
    Transition("withdraw", "pledge", ("submitted",), ("pledge", "drafting"), _roles("subject"),
               (g.actor_is_submitter,), effect=fx.clear_submitted),
    Transition("approve", "pledge", ("submitted",), ("pledge", "approved"), _roles("superior"),
               (g.not_own_pledge,), effect=fx.mark_approved,
               notify=(Notify("pledge_approved", "subject"),)),
    Transition("return", "pledge", ("submitted",), ("pledge", "returned"), _roles("superior"),
               (g.not_own_pledge, g.comment_given), effect=fx.clear_submitted,
               notify=(Notify("pledge_returned", "subject"),)),
    Transition("publish", "pledge", ("approved",), ("pledge", "under_notice"),
               MACHINE | {"subject"}, effect=fx.start_pledge_notice,
               notify=(Notify("notice_started", "subject"),)),
    Transition("file_objection", "pledge", ("under_notice",), None, _roles("public"),
               (g.notice_open,), input=inputs.FileObjection, effect=fx.file_objection,
               notify=(Notify("objection_filed", "office"), Notify("objection_filed", "subject"))),
    Transition("uphold_objection", "pledge", ("under_notice",), ("pledge", "returned"),
               _roles("office", "superior"),
               (g.not_own_pledge, g.objection_is_open, g.comment_given),
               input=inputs.ResolveObjection, effect=fx.uphold_pledge_objection,
               notify=(Notify("pledge_returned", "subject"),)),
    Transition("dismiss_objection", "pledge", ("under_notice",), None,
               _roles("office", "superior"),
               (g.not_own_pledge, g.objection_is_open, g.comment_given),
               input=inputs.ResolveObjection, effect=fx.dismiss_objection),
    Transition("close_notice", "pledge", ("under_notice",), ("pledge", "done"), MACHINE,
               (g.notice_window_ended, g.no_open_objection), effect=fx.close_notice),

    # 2. Leader review (领导点评) -----------------------------------------------------------------
    Transition("open_review", "pledge", ("done",), ("review", "open"), MACHINE,
               (g.review_date_reached,), notify=(Notify("task_assigned", "superior"),)),
    Transition("record_review", "review", ("open",), ("review", "recorded"),
               _roles("superior"), (g.not_own_pledge, g.review_ratings_valid),
               input=inputs.RecordReview, effect=fx.record_scheduled_review,
               notify=(Notify("review_recorded", "subject"),)),
    Transition("acknowledge_review", "review", ("recorded",), ("review", "acknowledged"),
               _roles("subject"), input=inputs.AcknowledgeReview, effect=fx.acknowledge_review),

    # 3. Mass evaluation (群众评议) ---------------------------------------------------------------
    Transition("open_evaluation", "review", ("recorded", "acknowledged"),
               ("evaluation", "voting"), MACHINE, (g.evaluation_date_reached,),
               effect=fx.open_round, notify=(Notify("ballot_invitation", "evaluators"),)),
    Transition("assign_evaluators", "evaluation", ("voting",), None, _roles("office"),
               (g.round_accepting_ballots, g.removed_have_not_voted),
               input=inputs.AssignEvaluators, effect=fx.assign_evaluators),
    Transition("cast_ballot", "evaluation", ("voting",), None, _roles("evaluator"),
               (g.round_accepting_ballots, g.not_voted_yet, g.ballot_valid),
               input=inputs.CastBallot, effect=fx.cast_ballot, bumps_version=False),
    Transition("extend_round", "evaluation", ("voting",), None, MACHINE,
               (g.round_deadline_passed, g.below_quorum, g.not_extended),
               effect=fx.extend_round, notify=(Notify("reminder", "evaluators"),)),
    Transition("close_round", "evaluation", ("voting",), ("evaluation", "tallied"), MACHINE,
               (g.all_voted_or_deadline, g.quorum_reached), effect=fx.tally_closed_round),
    Transition("mark_inconclusive", "evaluation", ("voting",), ("evaluation", "inconclusive"),
               MACHINE, (g.round_deadline_passed, g.below_quorum, g.already_extended),
               effect=fx.give_up_round),
    Transition("announce_results", "evaluation", ("tallied",), ("evaluation", "announced"),
               MACHINE, effect=fx.announce_results,
               notify=(Notify("results_announced", "subject"),)),

    # 4. Selection and commendation (评选表彰) — driven period-wide by service.commendation ----
    Transition("nominate", "evaluation", ("announced", "inconclusive"),
               ("commendation", "considered"), MACHINE, (g.selection_stored,)),
    Transition("adjust_nomination", "commendation", ("considered", "under_notice"), None,
               _roles("office"), (g.not_own_unit,), input=inputs.AdjustNomination,
               effect=fx.adjust_nomination),
    Transition("open_shortlist_notice", "commendation", ("considered",),
               ("commendation", "under_notice"), MACHINE, (g.shortlist_posted,),
               notify=(Notify("commendation_shortlist", "subject", when=_shortlisted),)),
    Transition("file_objection", "commendation", ("under_notice",), None, _roles("public"),
               (g.notice_open,), input=inputs.FileObjection, effect=fx.file_objection,
               notify=(Notify("objection_filed", "office"),)),
    Transition("uphold_objection", "commendation", ("under_notice",), None, _roles("office"),
               (g.not_own_unit, g.objection_is_open, g.comment_given),
               input=inputs.ResolveObjection, effect=fx.uphold_shortlist_objection),
    Transition("dismiss_objection", "commendation", ("under_notice",), None, _roles("office"),
               (g.not_own_unit, g.objection_is_open, g.comment_given),
               input=inputs.ResolveObjection, effect=fx.dismiss_objection),
    Transition("decide", "commendation", ("under_notice",), None, _roles("office"),
               (g.not_own_unit, g.notice_window_ended, g.no_open_objection,
                g.commend_only_shortlisted, g.within_quota),
               input=inputs.Decide, choose_target=_decision,
               targets=(("closed", "commended"), ("closed", "not_commended")),
               notify=(Notify("commendation_decision", "subject"),)),

    # Any time after the pledge is done: ad hoc reviews and fulfilment updates --------------------
    *(Transition("record_ad_hoc_review", stage, statuses, None, _roles("superior"),
                 (g.not_own_pledge, g.review_ratings_valid), input=inputs.RecordReview,
                 effect=fx.record_ad_hoc_review, notify=(Notify("review_recorded", "subject"),))
      for stage, statuses in ACTIVE_AFTER_PLEDGE.items()),
    *(Transition("record_fulfilment", stage, statuses, None, _roles("subject"),
                 (g.fulfilment_item_of_case,), input=inputs.RecordFulfilment,
                 effect=fx.record_fulfilment)
      for stage, statuses in {"pledge": ("approved", "under_notice", "done"),
                              **ACTIVE_AFTER_PLEDGE}.items()),

    # Period rollover: whatever is unfinished when the period has ended lapses --------------------
    *(Transition("lapse", stage, statuses, ("closed", "lapsed"), MACHINE, (g.period_ended,),
                 effect=fx.close_open_notices)
      for stage, statuses in STATUSES.items() if stage != "closed"),
)

_INDEX: dict[tuple[str, str, str], Transition] = {}
for _t in TRANSITIONS:
    for _status in _t.sources:
        key = (_t.stage, _status, _t.action)
        assert key not in _INDEX, f"two transitions for {key}"
        _INDEX[key] = _t


def find(stage: str, status: str, action: str) -> Transition | None:
    """The transition for this action from this state, or None (deny by default)."""
    return _INDEX.get((stage, status, action))


def actions_from(stage: str, status: str) -> list[Transition]:
    """Every transition that leaves this state, in table order."""
    return [t for t in TRANSITIONS if t.stage == stage and status in t.sources]
