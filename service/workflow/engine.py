"""The choke point: the only code that writes a case's stage and status.

``apply`` runs one transition in the caller's transaction:

1. lock the case row (``FOR UPDATE``; on SQLite the transaction already holds the write lock),
2. check the expected version, then the table (stage, status, action — deny by default),
   the actor's role relative to the case, the input and every guard,
3. on refusal raise ``TransitionRefused`` with *all* reasons, having written nothing,
4. otherwise run the effect, write the new status and version, append the event to the
   hash chain and enqueue the notifications — all in the same transaction.

``open_cases`` is the only other writer: it creates cases in their initial state.
A listener on ``Case.stage``/``Case.status`` refuses any write made outside these two, so a
stray assignment anywhere in the code base fails loudly (and a test checks for it).
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ValidationError
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session

from models import Case, Organization, Period, Pledge, PledgeItem
from notifications import outbox
from service import history
from service.clock import Clock, end_of_day, start_of_day
from service.errors import InvalidInput, NotFound, Reason, StaleVersion, TransitionRefused
from service.workflow import table
from service.workflow.context import Context
from service.workflow.roles import READERS, Actor, is_assigned_evaluator, relative_roles

__all__ = ["apply", "open_cases", "Outcome", "Subject", "StatusWriteOutsideChokePoint",
           "due_at_for", "actions_for"]

_inside = contextvars.ContextVar("inside_choke_point", default=False)


class StatusWriteOutsideChokePoint(RuntimeError):
    """Raised when code other than the engine assigns a case's stage or status."""


@contextmanager
def _choke_point() -> Iterator[None]:
    token = _inside.set(True)
    try:
        yield
    finally:
        _inside.reset(token)


@sa_event.listens_for(Case.status, "set", propagate=True)
@sa_event.listens_for(Case.stage, "set", propagate=True)
def _refuse_outside_writes(_target: Any, value: Any, _old: Any, _initiator: Any) -> Any:
    if not _inside.get():
        raise StatusWriteOutsideChokePoint(
            "a case's stage/status may only be written by service.workflow.engine"
        )
    return value


@dataclass(frozen=True)
class Outcome:
    """What a successful transition did."""

    case_id: int
    action: str
    from_state: tuple[str, str]
    to_state: tuple[str, str]
    version: int
    event_seq: int
    payload: dict[str, Any]


def apply(session: Session, *, case_id: int, action: str, actor: Actor, clock: Clock,
          expected_version: int | None = None, comment: str | None = None,
          data: dict[str, Any] | BaseModel | None = None,
          hide_unless_visible: bool = False) -> Outcome:
    """Apply one action to one case through the table; see the module docstring.

    ``hide_unless_visible`` (the API's setting): an actor who may not even read the case is
    told it does not exist, exactly as a read would, so ids cannot be probed by acting."""
    case = session.scalars(
        sa.select(Case).where(Case.id == case_id).with_for_update()
        .execution_options(populate_existing=True)
    ).first()
    if case is None:
        raise NotFound(f"case {case_id} not found")
    case_org = session.get(Organization, case.organization_id)
    period = session.get(Period, case.period_id)
    assert case_org is not None and period is not None
    transition = table.find(case.stage, case.status, action)
    needs_evaluator = transition is not None and "evaluator" in transition.roles
    roles = relative_roles(session, case, case_org, actor, check_evaluator=needs_evaluator)
    if hide_unless_visible:
        _ensure_visible(session, case, actor, transition, roles)
    if expected_version is not None and case.version != expected_version:
        raise StaleVersion(f"case {case_id} is at version {case.version}, not {expected_version}",
                           extra={"current_version": case.version})
    if transition is None:
        allowed = [t.action for t in table.actions_from(case.stage, case.status)]
        raise TransitionRefused(f"{action!r} is not possible now", [Reason(
            "not_allowed_in_state",
            f"{action!r} is not allowed at {case.stage}/{case.status}; allowed: {allowed}")])
    ctx = Context(session=session, case=case, case_org=case_org, period=period, actor=actor,
                  roles=roles, now=clock.now(), action=action,
                  comment=(comment or "").strip() or None)
    _check(ctx, transition, data)
    return _commit_transition(ctx, transition)


def _ensure_visible(session: Session, case: Case, actor: Actor,
                    transition: table.Transition | None, roles: set[str]) -> None:
    if transition is not None and transition.roles == frozenset({"public"}):
        return  # objections: anyone may file one against what is under public notice
    if roles & READERS:
        return
    if actor.person_id is not None and is_assigned_evaluator(session, case.id, actor.person_id):
        return
    raise NotFound(f"case {case.id} not found")


def actions_for(session: Session, case: Case, actor: Actor) -> list[str]:
    """The actions this actor's roles allow from the case's state (guards not yet judged)."""
    case_org = session.get(Organization, case.organization_id)
    assert case_org is not None
    options = table.actions_from(case.stage, case.status)
    if not options:
        return []
    roles = relative_roles(session, case, case_org, actor,
                           check_evaluator=any("evaluator" in t.roles for t in options))
    return list(dict.fromkeys(t.action for t in options if roles & t.roles and
                              t.roles != frozenset({"public"})))


def _check(ctx: Context, transition: table.Transition,
           data: dict[str, Any] | BaseModel | None) -> None:
    """Raise with every reason the transition may not happen; return when it may."""
    if not (ctx.roles & transition.roles):
        raise TransitionRefused(f"{ctx.action!r} refused", [Reason(
            "role", f"{ctx.action!r} needs one of {sorted(transition.roles)} relative to this "
                    f"case; the actor is {sorted(ctx.roles - {'public'}) or ['public']}")])
    ctx.input = _parse(transition, data)
    reasons = [r for r in (guard(ctx) for guard in transition.guards) if r is not None]
    if reasons:
        raise TransitionRefused(f"{ctx.action!r} refused", reasons)


def _parse(transition: table.Transition,
           data: dict[str, Any] | BaseModel | None) -> BaseModel | None:
    if transition.input is None:
        return None
    if isinstance(data, transition.input):
        return data
    try:
        return transition.input.model_validate(
            data.model_dump() if isinstance(data, BaseModel) else (data or {}))
    except ValidationError as exc:
        raise InvalidInput(f"invalid input for {transition.action!r}", [
            Reason("invalid_field", f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}")
            for e in exc.errors()]) from None


def _commit_transition(ctx: Context, transition: table.Transition) -> Outcome:
    case, session = ctx.case, ctx.session
    before = (case.stage, case.status)
    if transition.effect is not None:
        transition.effect(ctx)
    after = (transition.choose_target(ctx) if transition.choose_target
             else transition.target or before)
    with _choke_point():
        case.stage, case.status = after
    if transition.bumps_version:
        case.version += 1
        case.updated_at = ctx.now
    case.due_at = due_at_for(ctx, after)
    session.flush()
    for notify in transition.notify:
        if notify.when is None or notify.when(ctx):
            outbox.enqueue_for_case(ctx, template=notify.template, audience=notify.audience)
    # Last: the append locks the chain's head row until commit, serialising every writer.
    event = history.append(session, history.EventDraft(
        action=ctx.action, actor=ctx.actor, occurred_at=ctx.now, case_id=case.id,
        period_id=case.period_id, stage=before[0], from_status=before[1], to_status=after[1]
        if after[0] == before[0] else f"{after[0]}.{after[1]}", comment=ctx.comment,
        payload=ctx.payload))
    return Outcome(case.id, ctx.action, before, after, case.version, event.seq, dict(ctx.payload))


def due_at_for(ctx: Context, state: tuple[str, str]) -> datetime | None:
    """The deadline a case is working towards in a state (drives inboxes and reminders)."""
    p = ctx.period
    if state[1] == "under_notice":
        return ctx.open_notice.ends_at if ctx.open_notice else None
    if state == ("evaluation", "voting"):
        return ctx.round.closes_at if ctx.round else None
    calendar: dict[tuple[str, str], datetime] = {
        ("pledge", "pending"): start_of_day(p.starts_on),
        ("pledge", "drafting"): end_of_day(p.pledge_due_on),
        ("pledge", "returned"): end_of_day(p.pledge_due_on),
        ("pledge", "submitted"): end_of_day(p.pledge_due_on) + timedelta(days=7),
        ("pledge", "done"): start_of_day(p.review_opens_on),
        ("review", "open"): end_of_day(p.review_due_on),
        ("review", "recorded"): start_of_day(p.evaluation_opens_on),
        ("evaluation", "tallied"): start_of_day(p.commendation_on),
    }
    return calendar.get(state)


@dataclass(frozen=True)
class Subject:
    """Who a new case is about: a unit, or a member (with their organization)."""

    kind: str
    organization_id: int
    person_id: int | None = None

    @property
    def key(self) -> str:
        return Case.key_for(self.kind, self.person_id if self.kind == "member" else
                            self.organization_id)


def open_cases(session: Session, *, period: Period, subjects: Sequence[Subject], actor: Actor,
               clock: Clock, carry_over_from: int | None = None) -> list[int]:
    """Create a case in the initial state for each subject that has none in this period yet.

    Idempotent: subjects that already have a case are skipped (and a concurrent creator loses
    on the unique ``(period_id, subject_key)``). Unfinished pledge items of the same subject in
    ``carry_over_from`` (a period id) are copied into the new draft. Returns the new case ids.
    """
    now = clock.now()
    existing = set(session.scalars(sa.select(Case.subject_key).where(Case.period_id == period.id)))
    fresh = [s for s in subjects if s.key not in existing]
    if not fresh:
        return []
    with _choke_point():
        rows = [dict(period_id=period.id, subject_kind=s.kind, subject_key=s.key,
                     organization_id=s.organization_id, person_id=s.person_id,
                     stage=table.INITIAL[0], status=table.INITIAL[1], version=1,
                     due_at=start_of_day(period.starts_on), created_at=now, updated_at=now)
                for s in fresh]
        for start in range(0, len(rows), 1000):
            session.execute(sa.insert(Case), rows[start:start + 1000])
    ids = dict(session.execute(sa.select(Case.subject_key, Case.id).where(
        Case.period_id == period.id, Case.subject_key.in_([s.key for s in fresh]))).all()) \
        if len(fresh) <= 5000 else dict(session.execute(
            sa.select(Case.subject_key, Case.id).where(Case.period_id == period.id)).all())
    carried = _carry_over(session, carry_over_from, {s.key: ids[s.key] for s in fresh}) \
        if carry_over_from else {}
    history.append_many(session, [history.EventDraft(
        action="open_case", actor=actor, occurred_at=now, case_id=ids[s.key],
        period_id=period.id, stage=table.INITIAL[0], to_status=table.INITIAL[1],
        payload={"subject": s.key, **({"carried_items": carried[s.key]} if carried.get(s.key)
                                      else {})}) for s in fresh])
    return [ids[s.key] for s in fresh]


def _carry_over(session: Session, from_period_id: int, case_ids: dict[str, int]) -> dict[str, int]:
    """Copy unkept items of the previous period's pledges into new drafts; count per subject."""
    old = session.execute(
        sa.select(Case.subject_key, PledgeItem)
        .join(Pledge, Pledge.case_id == Case.id).join(PledgeItem, PledgeItem.pledge_id == Pledge.id)
        .where(Case.period_id == from_period_id, Case.subject_key.in_(list(case_ids)),
               PledgeItem.fulfilment.in_(("pending", "in_progress")))
        .order_by(PledgeItem.pledge_id, PledgeItem.position)
    ).all()
    if not old:
        return {}
    keys = sorted({key for key, _ in old})
    session.execute(sa.insert(Pledge), [{"case_id": case_ids[k], "summary": ""} for k in keys])
    pledge_ids = dict(session.execute(sa.select(Pledge.case_id, Pledge.id).where(
        Pledge.case_id.in_([case_ids[k] for k in keys]))).all())
    counts: dict[str, int] = {}
    items = []
    for key, item in old:
        counts[key] = counts.get(key, 0) + 1
        items.append(dict(pledge_id=pledge_ids[case_ids[key]], position=counts[key] - 1,
                          criterion_id=item.criterion_id, target=item.target,
                          measures=item.measures, deadline_on=None, owner_id=item.owner_id,
                          assessment_standard=item.assessment_standard, fulfilment="pending",
                          carried_over_from_id=item.id))
    session.execute(sa.insert(PledgeItem), items)
    return counts
