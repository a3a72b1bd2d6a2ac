"""The choke point: the only code that writes a case's stage and status.

``apply`` runs one transition in the caller's transaction:

1. lock the case row (``FOR UPDATE``; on SQLite the transaction already holds the write lock),
2. check the expected version, then the table (stage, status, action — deny by default),
   the actor's role relative to the case, the input and every guard,
3. on refusal raise ``TransitionRefused`` with *all* reasons, having written nothing,
4. otherwise run the effect, write the new status and version, append the event to the
   hash chain and enqueue the notifications — all in the same transaction.

``open_cases`` creates cases in their initial state, and ``lapse_cases`` is ``apply`` for every
unfinished case of an ended period at once (the rollover): the same table rows, roles and
guards, judged once for the whole set where they cannot differ between its cases, then one
update, one event per case and the effect's set-based twin. A listener on
``Case.stage``/``Case.status`` refuses any write made outside these three, so a stray
assignment anywhere in the code base fails loudly (and a test checks for it).
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
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from models import Case, Organization, Period, Pledge, PledgeItem, PublicNotice
from notifications import outbox
from service import history
from service.clock import Clock, end_of_day, start_of_day
from service.errors import InvalidInput, NotFound, Reason, StaleVersion, TransitionRefused
from service.workflow import effects as fx
from service.workflow import guards as g
from service.workflow import table
from service.workflow.context import Context
from service.workflow.roles import Actor, CaseFacts, OrgFacts, may_read, relative_roles

__all__ = ["apply", "open_cases", "lapse_cases", "Outcome", "Subject",
           "StatusWriteOutsideChokePoint", "due_at_for", "actions_for"]

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


# The case locked, with its organization and period in the same round trip. Built once: building
# a statement like this costs more CPU than running it (hot-path statements are prebuilt).
_LOCK_CASE = (sa.select(Case, Organization, Period)
              .join(Organization, Organization.id == Case.organization_id)
              .join(Period, Period.id == Case.period_id)
              .where(Case.id == sa.bindparam("case_id")).with_for_update(of=Case)
              .execution_options(populate_existing=True))


def apply(session: Session, *, case_id: int, action: str, actor: Actor, clock: Clock,
          expected_version: int | None = None, comment: str | None = None,
          data: dict[str, Any] | BaseModel | None = None,
          hide_unless_visible: bool = False) -> Outcome:
    """Apply one action to one case through the table; see the module docstring.

    ``hide_unless_visible`` (the API's setting): an actor who may not even read the case is
    told it does not exist, exactly as a read would, so ids cannot be probed by acting."""
    row = session.execute(_LOCK_CASE, {"case_id": case_id}).first()
    if row is None:
        raise NotFound(f"case {case_id} not found")
    case, case_org, period = row
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
    if not may_read(session, case, actor, roles):
        raise NotFound(f"case {case.id} not found")


def actions_for(session: Session, case: CaseFacts, actor: Actor,
                case_org: OrgFacts | None = None) -> list[str]:
    """The actions this actor's roles allow from the case's state (guards not yet judged).

    ``case`` and ``case_org`` need only the columns roles are judged on (the inbox passes
    plain rows); without ``case_org`` the case's organization is loaded."""
    if case_org is None:
        case_org = session.get_one(Organization, case.organization_id)
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
        period_id=case.period_id, stage=before[0], from_status=before[1],
        to_status=_to_status(before, after), comment=ctx.comment, payload=ctx.payload))
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
    now, starts = clock.now(), start_of_day(period.starts_on)
    existing = set(session.scalars(sa.select(Case.subject_key).where(Case.period_id == period.id)))
    fresh = [(key, s) for s in subjects if (key := s.key) not in existing]
    if not fresh:
        return []
    with _choke_point():
        history.insert_rows(session, sa.insert(Case), (dict(
            period_id=period.id, subject_kind=s.kind, subject_key=key,
            organization_id=s.organization_id, person_id=s.person_id, stage=table.INITIAL[0],
            status=table.INITIAL[1], version=1, due_at=starts, created_at=now, updated_at=now)
            for key, s in fresh), count=len(fresh))
    ids = dict(session.execute(sa.select(Case.subject_key, Case.id).where(
        Case.period_id == period.id, Case.subject_key.in_([key for key, _ in fresh]))).all()) \
        if len(fresh) <= 5000 else dict(session.execute(
            sa.select(Case.subject_key, Case.id).where(Case.period_id == period.id)).all())
    carried = _carry_over(session, carry_over_from, {key: ids[key] for key, _ in fresh},
                          period.id) if carry_over_from else {}
    history.append_bulk(session, (history.EventDraft(
        action="open_case", actor=actor, occurred_at=now, case_id=ids[key],
        period_id=period.id, stage=table.INITIAL[0], to_status=table.INITIAL[1],
        payload={"subject": key, **({"carried_items": carried[key]} if carried.get(key)
                                    else {})}) for key, _ in fresh), count=len(fresh))
    return [ids[key] for key, _ in fresh]


def _carry_over(session: Session, from_period_id: int, case_ids: dict[str, int],
                period_id: int) -> dict[str, int]:
    """Copy unkept items of the previous period's pledges into new drafts; count per subject."""
    # Every unkept item of the old period, kept only for the subjects given (filtered here:
    # an IN list of 200,000 subject keys is slower than reading the period's items).
    old = [row for row in session.execute(
        sa.select(Case.subject_key, PledgeItem.id, PledgeItem.criterion_id, PledgeItem.target,
                  PledgeItem.measures, PledgeItem.owner_id, PledgeItem.assessment_standard)
        .join(Pledge, Pledge.case_id == Case.id).join(PledgeItem, PledgeItem.pledge_id == Pledge.id)
        .where(Case.period_id == from_period_id,
               PledgeItem.fulfilment.in_(("pending", "in_progress")))
        .order_by(PledgeItem.pledge_id, PledgeItem.position)
    ) if row.subject_key in case_ids]
    if not old:
        return {}
    keys = sorted({row.subject_key for row in old})
    history.insert_rows(session, sa.insert(Pledge),
                        [{"case_id": case_ids[k], "summary": ""} for k in keys])
    new_cases = [case_ids[k] for k in keys]
    query = sa.select(Pledge.case_id, Pledge.id)
    pledge_ids = dict(session.execute(query.where(Pledge.case_id.in_(new_cases)) if len(
        new_cases) <= 5000 else query.join(Case, Case.id == Pledge.case_id).where(
        Case.period_id == period_id)).all())
    counts: dict[str, int] = {}
    items = []
    for row in old:
        key = row.subject_key
        counts[key] = counts.get(key, 0) + 1
        items.append(dict(pledge_id=pledge_ids[case_ids[key]], position=counts[key] - 1,
                          criterion_id=row.criterion_id, target=row.target,
                          measures=row.measures, deadline_on=None, owner_id=row.owner_id,
                          assessment_standard=row.assessment_standard, fulfilment="pending",
                          carried_over_from_id=row.id))
    history.insert_rows(session, sa.insert(PledgeItem), items)
    return counts


# --- lapsing a whole period at once ------------------------------------------------------------

# Roles that follow from the actor alone (never from the case), guards that read only the
# period and the time: judged on one case, they hold the same for every case of the period.
CASE_INDEPENDENT_ROLES = frozenset({"flow", "office", "public"})
PERIOD_WIDE_GUARDS = frozenset({g.period_ended})
CHUNK = 5000


def _id_in(session: Session, column: Any, ids: Sequence[int]) -> Iterator[Any]:
    """``column IN ids`` as few conditions as the database takes: one ``= ANY(array)`` on
    PostgreSQL, chunks of ``CHUNK`` elsewhere."""
    if session.get_bind().dialect.name == "postgresql":
        yield column == sa.any_(sa.bindparam("ids", list(ids), type_=ARRAY(sa.Integer)))
        return
    for start in range(0, len(ids), CHUNK):
        yield column.in_(ids[start:start + CHUNK])


def _withdraw_open_notices(session: Session, case_ids: Sequence[int]) -> None:
    """``effects.close_open_notices`` for many cases: nothing under notice lapses with them."""
    for condition in _id_in(session, PublicNotice.case_id, case_ids):
        session.execute(sa.update(PublicNotice).where(condition, PublicNotice.status == "open")
                        .values(status="withdrawn").execution_options(synchronize_session=False))


BULK_EFFECTS: dict[Any, Any] = {None: None, fx.close_open_notices: _withdraw_open_notices}


def _bulk_ready(transition: table.Transition) -> None:
    """Refuse (a programming error, not a user's) a row the set-based path cannot honour."""
    problems = [what for what, bad in (
        ("roles that depend on the case", not transition.roles <= CASE_INDEPENDENT_ROLES),
        ("guards that read the case", not set(transition.guards) <= PERIOD_WIDE_GUARDS),
        ("an effect without a set-based twin", transition.effect not in BULK_EFFECTS),
        ("input", transition.input is not None),
        ("notifications", bool(transition.notify)),
        ("a target chosen per case", transition.target is None
         or transition.choose_target is not None),
        ("a deadline that depends on the case", transition.target is not None
         and (transition.target[1] == "under_notice"
              or transition.target == ("evaluation", "voting"))),
    ) if bad]
    if problems:
        raise ValueError(f"{transition.action!r} from {transition.stage} cannot be applied in "
                         f"bulk: it has {', '.join(problems)}; use apply() per case")


def lapse_cases(session: Session, *, period: Period, actor: Actor, clock: Clock) -> list[int]:
    """Lapse every unfinished case of an ended period, as ``apply(action="lapse")`` on each
    would, in one go; returns their ids (ascending).

    The cases are locked (ascending id, as the per-case loop did), then each one's
    (stage, status) must have a "lapse" row in the table; the rows' roles and guards are
    judged once per row on one of its cases, which is exact because they depend on the actor
    and the period only (``_bulk_ready`` refuses rows where that is not so). Any refusal
    raises with every reason, having written nothing. Then one update per row (state,
    version + 1, deadline), the effect for all its cases, and one event per case in id order.
    """
    rows = session.execute(
        sa.select(Case.id, Case.stage, Case.status).where(
            Case.period_id == period.id, Case.stage != "closed")
        .order_by(Case.id).with_for_update()).all()
    if not rows:
        return []
    groups: dict[table.Transition, list[int]] = {}
    plan: list[tuple[int, tuple[str, str], table.Transition]] = []
    reasons: list[Reason] = []
    for case_id, stage, status in rows:
        transition = table.find(stage, status, "lapse")
        if transition is None:
            reasons.append(Reason("not_allowed_in_state",
                                  f"case {case_id}: 'lapse' is not allowed at {stage}/{status}"))
        else:
            groups.setdefault(transition, []).append(case_id)
            plan.append((case_id, (stage, status), transition))
    if reasons:
        raise TransitionRefused("'lapse' is not possible now", reasons)
    now = clock.now()
    due: dict[table.Transition, datetime | None] = {}
    for transition, case_ids in groups.items():
        _bulk_ready(transition)
        ctx = _context_for(session, case_ids[0], period, actor, now)
        _check(ctx, transition, None)  # the very check apply() makes, once for the row
        due[transition] = due_at_for(ctx, transition.target)  # type: ignore[arg-type]
    for transition, case_ids in groups.items():
        effect = BULK_EFFECTS[transition.effect]
        if effect is not None:
            effect(session, case_ids)
        stage, status = transition.target  # type: ignore[misc]
        values: dict[str, Any] = {"stage": stage, "status": status, "due_at": due[transition]}
        if transition.bumps_version:
            values.update(version=Case.version + 1, updated_at=now)
        with _choke_point():
            for condition in _id_in(session, Case.id, case_ids):
                session.execute(sa.update(Case).where(condition).values(**values)
                                .execution_options(synchronize_session=False))
    lapsed = {case_id for ids in groups.values() for case_id in ids}
    for obj in list(session.identity_map.values()):
        if isinstance(obj, Case) and obj.id in lapsed:
            session.expire(obj)  # what the session held of them is stale now
    history.append_bulk(session, (history.EventDraft(
        action="lapse", actor=actor, occurred_at=now, case_id=case_id, period_id=period.id,
        stage=before[0], from_status=before[1],
        to_status=_to_status(before, transition.target))  # type: ignore[arg-type]
        for case_id, before, transition in plan), count=len(plan))
    return [case_id for case_id, _, _ in plan]


def _to_status(before: tuple[str, str], after: tuple[str, str]) -> str:
    """How an event names where the case went: the status, or ``stage.status`` on a move."""
    return after[1] if after[0] == before[0] else f"{after[0]}.{after[1]}"


def _context_for(session: Session, case_id: int, period: Period, actor: Actor,
                 now: datetime) -> Context:
    """The context ``apply`` would judge this (already locked) case in."""
    case = session.get(Case, case_id)
    assert case is not None
    case_org = session.get(Organization, case.organization_id)
    assert case_org is not None
    roles = relative_roles(session, case, case_org, actor, check_evaluator=False)
    return Context(session=session, case=case, case_org=case_org, period=period, actor=actor,
                   roles=roles, now=now, action="lapse")
