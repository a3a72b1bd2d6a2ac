"""Effects: what an action writes besides the case's status, inside the same transaction.

An effect runs only after every guard has passed. It may still refuse (for input it can only
judge against the database, such as an unknown criterion code) by raising; the unit of work
then rolls back, so nothing is half-written. Effects record in ``ctx.payload`` what the event
should carry — never a ballot's content.
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from models import (
    BallotCount,
    BallotReceipt,
    CriteriaSet,
    Criterion,
    EvaluationRound,
    EvaluatorAssignment,
    FulfilmentEntry,
    Objection,
    Organization,
    Person,
    Pledge,
    PledgeItem,
    Position,
    PublicNotice,
    Review,
)
from service.clock import end_of_day
from service.errors import InvalidInput, Reason
from service.tally import tally_counts
from service.workflow import inputs
from service.workflow.context import Context

EVALUATOR_ROLES = ("member_representative", "worker_representative")
CRITERIA_BY_KIND = {"organization": ("four_strengths", "six_carriers"),
                    "member": ("four_excellences", "six_carriers")}
ROUND_CRITERIA = {"organization": "four_strengths", "member": "four_excellences"}


# --- pledge ------------------------------------------------------------------------------------

def ensure_pledge(ctx: Context) -> None:
    """Opening the stage gives the case an empty pledge to draft (unless carried over)."""
    if ctx.pledge is None:
        ctx.session.add(Pledge(case_id=ctx.case.id))


def edit_pledge(ctx: Context) -> None:
    """Replace a draft's summary and items; criterion codes must belong to the case's sets."""
    data = ctx.input
    assert isinstance(data, inputs.EditPledge) and ctx.pledge is not None
    codes = {c for c in (i.criterion for i in data.items) if c}
    known = _criterion_ids(ctx, codes)
    unknown = sorted(codes - known.keys())
    if unknown:
        raise InvalidInput("unknown criteria", [
            Reason("unknown_criterion", f"unknown criterion {c!r}") for c in unknown])
    strangers = _not_of_the_unit(ctx, {i.owner_id for i in data.items if i.owner_id})
    if strangers:
        # One answer whether the person exists elsewhere or not at all: no probing by id.
        raise InvalidInput("unknown item owners", [Reason(
            "unknown_owner", f"owner {pid} is nobody of {ctx.case_org.name_zh} "
                             f"({ctx.case_org.name_en}) or of an organization below it")
            for pid in strangers])
    # An item carried over from the last period keeps that link while its target is kept.
    carried = {item.target: item.carried_over_from_id for item in ctx.pledge_items
               if item.carried_over_from_id is not None}
    ctx.session.execute(sa.delete(PledgeItem).where(PledgeItem.pledge_id == ctx.pledge.id))
    ctx.pledge.summary = data.summary
    ctx.session.add_all([
        PledgeItem(pledge_id=ctx.pledge.id, position=n, criterion_id=known.get(i.criterion or ""),
                   target=i.target, measures=i.measures, deadline_on=i.deadline_on,
                   owner_id=i.owner_id, assessment_standard=i.assessment_standard,
                   carried_over_from_id=carried.get(i.target))
        for n, i in enumerate(data.items)
    ])
    ctx.payload["items"] = len(data.items)
    ctx.__dict__.pop("pledge_items", None)


def _not_of_the_unit(ctx: Context, owner_ids: set[int]) -> list[int]:
    """The owners who are not active people of the case's organization or of one below it
    (an item's owner is someone the unit answers for)."""
    if not owner_ids:
        return []
    theirs = set(ctx.session.scalars(
        sa.select(Person.id).join(Organization, Organization.id == Person.organization_id)
        .where(Person.id.in_(owner_ids), Person.active.is_(True),
               Organization.path.startswith(ctx.case_org.path))))
    return sorted(owner_ids - theirs)


def _criterion_ids(ctx: Context, codes: set[str]) -> dict[str, int]:
    if not codes:
        return {}
    rows = ctx.session.execute(
        sa.select(Criterion.code, Criterion.id)
        .join(CriteriaSet, CriteriaSet.id == Criterion.criteria_set_id)
        .where(Criterion.code.in_(codes),
               CriteriaSet.code.in_(CRITERIA_BY_KIND[ctx.case.subject_kind]))
    ).all()
    return dict(rows)


def mark_submitted(ctx: Context) -> None:
    ctx.pledge.submitted_by_id, ctx.pledge.submitted_at = ctx.actor.person_id, ctx.now  # type: ignore[union-attr]


def clear_submitted(ctx: Context) -> None:
    ctx.pledge.submitted_by_id, ctx.pledge.submitted_at = None, None  # type: ignore[union-attr]


def mark_approved(ctx: Context) -> None:
    ctx.pledge.approved_by_id, ctx.pledge.approved_at = ctx.actor.person_id, ctx.now  # type: ignore[union-attr]


def start_pledge_notice(ctx: Context) -> None:
    """Post the approved pledge on the bulletin board for the notice window (公示)."""
    notice = PublicNotice(subject="pledge", case_id=ctx.case.id, starts_at=ctx.now,
                          ends_at=ctx.now + timedelta(days=ctx.rules.notice_days))
    ctx.session.add(notice)
    ctx.session.flush()
    ctx.pledge.published_at = ctx.now  # type: ignore[union-attr]
    ctx.payload["notice_id"] = notice.id
    ctx.payload["notice_ends_at"] = notice.ends_at.isoformat()


def close_notice(ctx: Context) -> None:
    ctx.open_notice.status = "closed"  # type: ignore[union-attr]


def record_fulfilment(ctx: Context) -> None:
    """Append a ledger line and move the item's fulfilment status."""
    data = ctx.input
    assert isinstance(data, inputs.RecordFulfilment)
    item = next(i for i in ctx.pledge_items if i.id == data.item_id)
    item.fulfilment = data.status
    ctx.session.add(FulfilmentEntry(pledge_item_id=item.id, status=data.status, note=data.note,
                                    evidence=data.evidence, recorded_by_id=ctx.actor.person_id,
                                    recorded_at=ctx.now))
    ctx.payload.update(item_id=item.id, fulfilment=data.status)


# --- objections --------------------------------------------------------------------------------

def file_objection(ctx: Context) -> None:
    data = ctx.input
    assert isinstance(data, inputs.FileObjection) and ctx.open_notice is not None
    objection = Objection(notice_id=ctx.open_notice.id, case_id=ctx.case.id, body=data.body,
                          filed_by_name=data.filed_by_name, contact=data.contact,
                          filed_at=ctx.now)
    ctx.session.add(objection)
    ctx.session.flush()
    ctx.payload["objection_id"] = objection.id


def _resolve(ctx: Context, status: str) -> Objection:
    assert isinstance(ctx.input, inputs.ResolveObjection)
    objection = next(o for o in ctx.open_objections if o.id == ctx.input.objection_id)
    objection.status, objection.resolution = status, ctx.comment
    objection.resolved_by_id, objection.resolved_at = ctx.actor.person_id, ctx.now
    ctx.payload["objection_id"] = objection.id
    return objection


def uphold_pledge_objection(ctx: Context) -> None:
    """An upheld objection withdraws the notice and sends the pledge back to the unit."""
    _resolve(ctx, "upheld")
    ctx.open_notice.status = "withdrawn"  # type: ignore[union-attr]
    ctx.pledge.published_at = ctx.pledge.approved_at = ctx.pledge.approved_by_id = None  # type: ignore[union-attr]


def uphold_shortlist_objection(ctx: Context) -> None:
    """An upheld objection takes the candidate off the shortlist."""
    _resolve(ctx, "upheld")
    ctx.nomination.shortlisted = False  # type: ignore[union-attr]
    ctx.nomination.adjustment_rationale = f"objection upheld: {ctx.comment}"  # type: ignore[union-attr]


def dismiss_objection(ctx: Context) -> None:
    _resolve(ctx, "dismissed")


# --- review ------------------------------------------------------------------------------------

def _record_review(ctx: Context, kind: str) -> None:
    data = ctx.input
    assert isinstance(data, inputs.RecordReview)
    review = Review(case_id=ctx.case.id, kind=kind, reviewer_id=ctx.actor.person_id,
                    achievements=data.achievements, problems=data.problems,
                    direction=data.direction, ratings=dict(data.ratings), recorded_at=ctx.now)
    ctx.session.add(review)
    ctx.session.flush()
    ctx.payload.update(review_id=review.id, kind=kind)


def record_scheduled_review(ctx: Context) -> None:
    _record_review(ctx, "scheduled")


def record_ad_hoc_review(ctx: Context) -> None:
    _record_review(ctx, "ad_hoc")


def acknowledge_review(ctx: Context) -> None:
    data = ctx.input
    assert isinstance(data, inputs.AcknowledgeReview) and ctx.scheduled_review is not None
    review = ctx.scheduled_review
    review.rectification_plan = data.rectification_plan
    review.acknowledged_by_id, review.acknowledged_at = ctx.actor.person_id, ctx.now
    ctx.payload["review_id"] = review.id


# --- evaluation --------------------------------------------------------------------------------

def open_round(ctx: Context) -> None:
    """Create the round and assign every representative of the subject's enterprise."""
    evaluators = candidate_evaluators(ctx)
    if not evaluators:
        raise InvalidInput("no evaluators", [Reason(
            "no_evaluators", "no member or worker representatives can evaluate this case")])
    rules = ctx.rules
    round_ = EvaluationRound(
        case_id=ctx.case.id, scale=rules.scale, quorum=rules.quorum,
        disclosure_scope=rules.disclosure_scope,
        criteria=_round_criteria(ctx), opened_at=ctx.now,
        closes_at=max(end_of_day(ctx.period.evaluation_due_on), ctx.now + timedelta(days=1)),
    )
    ctx.session.add(round_)
    ctx.session.flush()
    ctx.session.add_all([EvaluatorAssignment(round_id=round_.id, person_id=pid, kind=kind)
                         for pid, kind in evaluators])
    ctx.session.flush()
    ctx.payload.update(round_id=round_.id, evaluators=len(evaluators))
    for name in ("round", "assignments"):
        ctx.__dict__.pop(name, None)


def _round_criteria(ctx: Context) -> list[str]:
    return list(ctx.session.scalars(
        sa.select(Criterion.code).join(CriteriaSet, CriteriaSet.id == Criterion.criteria_set_id)
        .where(CriteriaSet.code == ROUND_CRITERIA[ctx.case.subject_kind])
        .order_by(Criterion.position)
    ))


def candidate_evaluators(ctx: Context) -> list[tuple[int, str]]:
    """Representatives anywhere in the subject's enterprise, the subject excluded."""
    parts = [p for p in ctx.case_org.path.strip("/").split("/") if p]
    enterprise_path = "/" + "/".join(parts[:2]) + "/"
    rows = ctx.session.execute(
        sa.select(Position.person_id, sa.func.min(Position.role))
        .join(Organization, Organization.id == Position.organization_id)
        .join(Person, Person.id == Position.person_id)
        .where(Position.role.in_(EVALUATOR_ROLES), Organization.path.startswith(enterprise_path),
               Person.active.is_(True))
        .group_by(Position.person_id).order_by(Position.person_id)
    ).all()
    return [(pid, role) for pid, role in rows if pid != ctx.case.person_id]


def assign_evaluators(ctx: Context) -> None:
    """Add and remove evaluators of the open round; new ones are invited by email."""
    data = ctx.input
    assert isinstance(data, inputs.AssignEvaluators) and ctx.round is not None
    have = {a.person_id: a for a in ctx.assignments}
    people = ctx.session.scalars(sa.select(Person).where(
        Person.id.in_([p for p in data.add if p not in have]), Person.active.is_(True))).all()
    unknown = sorted(set(data.add) - set(have) - {p.id for p in people})
    if unknown:  # judged before anything is written
        raise InvalidInput("unknown evaluators", [Reason(
            "unknown_person", f"no active person with id {p}") for p in unknown])
    for person_id in data.remove:
        if person_id in have:
            ctx.session.delete(have.pop(person_id))
    ctx.session.add_all([EvaluatorAssignment(
        round_id=ctx.round.id, person_id=p.id,
        kind="member_representative" if p.is_party_member else "worker_representative")
        for p in people if p.id != ctx.case.person_id])
    ctx.session.flush()
    ctx.payload.update(added=sorted(p.id for p in people), removed=sorted(data.remove))
    ctx.__dict__.pop("assignments", None)
    from notifications import outbox

    outbox.enqueue(ctx.session, [p for p in people if p.id != ctx.case.person_id],
                   template="ballot_invitation", context=outbox.case_context(ctx), now=ctx.now,
                   case_id=ctx.case.id, case_version=ctx.case.version)


def cast_ballot(ctx: Context) -> None:
    """Record *that* the evaluator voted apart from *what* was chosen (anonymous ballot)."""
    data = ctx.input
    assert isinstance(data, inputs.CastBallot) and ctx.round and ctx.my_assignment
    ctx.my_assignment.voted_at = ctx.now
    ctx.session.add(BallotReceipt(round_id=ctx.round.id, assignment_id=ctx.my_assignment.id))
    ctx.session.flush()  # the receipt's primary key refuses a second ballot before counting
    insert = (postgresql.insert if ctx.session.get_bind().dialect.name == "postgresql"
              else sqlite.insert)(BallotCount)
    for criterion, option in sorted(data.answers.items()):
        ctx.session.execute(insert.values(
            round_id=ctx.round.id, criterion=criterion, option=option, count=1,
        ).on_conflict_do_update(index_elements=["round_id", "criterion", "option"],
                                set_={"count": BallotCount.count + 1}))
    ctx.payload["round_id"] = ctx.round.id


def extend_round(ctx: Context) -> None:
    ctx.round.extended = True  # type: ignore[union-attr]
    ctx.round.closes_at = ctx.now + timedelta(days=ctx.rules.round_extension_days)  # type: ignore[union-attr]
    ctx.payload["closes_at"] = ctx.round.closes_at.isoformat()  # type: ignore[union-attr]


def _close_round(ctx: Context, status: str) -> None:
    round_ = ctx.round
    assert round_ is not None
    counts: dict[str, dict[str, int]] = {}
    for criterion, option, n in ctx.session.execute(
            sa.select(BallotCount.criterion, BallotCount.option, BallotCount.count)
            .where(BallotCount.round_id == round_.id)):
        counts.setdefault(criterion, {})[option] = n
    cast = sum(a.voted_at is not None for a in ctx.assignments)
    result = tally_counts(assigned=len(ctx.assignments), cast=cast, counts=counts,
                          criteria=round_.criteria, rules=ctx.rules)
    round_.tally, round_.status, round_.closed_at = result.as_dict(), status, ctx.now
    ctx.payload.update(round_id=round_.id, participation=round(result.participation, 4),
                       overall_satisfaction=result.overall_satisfaction)


def tally_closed_round(ctx: Context) -> None:
    _close_round(ctx, "tallied")


def give_up_round(ctx: Context) -> None:
    _close_round(ctx, "inconclusive")


def announce_results(ctx: Context) -> None:
    ctx.round.announced_at = ctx.now  # type: ignore[union-attr]


# --- commendation ------------------------------------------------------------------------------

def adjust_nomination(ctx: Context) -> None:
    data = ctx.input
    assert isinstance(data, inputs.AdjustNomination) and ctx.nomination is not None
    ctx.nomination.shortlisted = data.shortlisted
    ctx.nomination.adjustment_rationale = data.rationale
    ctx.payload.update(shortlisted=data.shortlisted)


def close_open_notices(ctx: Context) -> None:
    """A lapsing case takes nothing under notice with it."""
    ctx.session.execute(sa.update(PublicNotice)
                        .where(PublicNotice.case_id == ctx.case.id, PublicNotice.status == "open")
                        .values(status="withdrawn"))
