"""Opening periods and rolling them over.

``roll_over`` is safe to run again, and concurrently: it locks the ended period's row, lapses
what is unfinished, closes it, and opens the next period with a case for every active unit and
Party member (unfinished pledge items carried into the new drafts). A second run finds nothing
left to do and writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from models import Case, Commendation, Organization, Period, Person, Position
from notifications import outbox
from service import history
from service.clock import Clock, end_of_day
from service.errors import NotFound, Reason, TransitionRefused
from service.workflow import engine
from service.workflow.roles import UNIT_STAFF, Actor

__all__ = ["open_period", "roll_over", "RolloverReport", "subjects_for", "get_period"]

UNIT_KINDS = ("committee", "general_branch", "branch")


@dataclass(frozen=True)
class RolloverReport:
    """What a rollover did (all zeros and None when it had nothing left to do)."""

    closed_period: str | None
    lapsed: int
    opened_period: str | None
    cases_opened: int


def get_period(session: Session, code: str, *, lock: bool = False) -> Period:
    """The period with this code (row-locked when ``lock``), or NotFound."""
    query = sa.select(Period).where(Period.code == code)
    period = session.scalars(query.with_for_update() if lock else query).first()
    if period is None:
        known = ", ".join(session.scalars(sa.select(Period.code).order_by(Period.sequence)))
        raise NotFound(f"no period {code!r}; known periods: {known or 'none (run seed)'}")
    return period


def subjects_for(session: Session) -> list[engine.Subject]:
    """A case subject for every active unit and every active Party member of a unit."""
    units = session.execute(sa.select(Organization.id).where(
        Organization.kind.in_(UNIT_KINDS), Organization.active.is_(True)
    ).order_by(Organization.id)).scalars()
    # Members of the units only: the campaign office runs the campaign, it is not a subject.
    members = session.execute(
        sa.select(Person.id, Person.organization_id)
        .join(Organization, Organization.id == Person.organization_id)
        .where(Person.is_party_member.is_(True), Person.active.is_(True),
               Organization.kind.in_(UNIT_KINDS), Organization.active.is_(True))
        .order_by(Person.id)).all()
    return [*(engine.Subject("organization", oid) for oid in units),
            *(engine.Subject("member", org_id, pid) for pid, org_id in members)]


def open_period(session: Session, period: Period, *, actor: Actor, clock: Clock,
                carry_over_from: Period | None = None) -> int:
    """Open a planned period: a case for every subject, everyone concerned told. Idempotent."""
    if period.status == "closed":
        raise TransitionRefused("cannot open the period", [
            Reason("period_closed", f"period {period.code} is already closed")])
    new_ids = engine.open_cases(session, period=period, subjects=subjects_for(session),
                                actor=actor, clock=clock,
                                carry_over_from=carry_over_from.id if carry_over_from else None)
    if period.status == "planned":
        period.status = "open"
        history.append(session, history.EventDraft(
            action="open_period", actor=actor, occurred_at=clock.now(), period_id=period.id,
            payload={"period": period.code, "cases": len(new_ids)}))
        _tell_everyone(session, period, clock.now())
    return len(new_ids)


def _tell_everyone(session: Session, period: Period, now: datetime) -> None:
    """Unit staff and members learn that the new period has begun."""
    staff = sa.select(Position.person_id).where(Position.role.in_(tuple(UNIT_STAFF)))
    members = sa.select(Case.person_id).where(Case.period_id == period.id,
                                              Case.person_id.is_not(None))
    people = session.execute(sa.select(Person.id, Person.email, Person.lang).where(
        Person.active.is_(True), sa.or_(Person.id.in_(staff), Person.id.in_(members)))
        .order_by(Person.id)).all()
    outbox.enqueue(session, people, template="period_rolled_over", context={
        "period_zh": period.name_zh, "period_en": period.name_en,
        "starts_on": period.starts_on.isoformat(),
        "pledge_due_on": period.pledge_due_on.isoformat(),
    }, now=now, batch_key=f"period_opened:{period.code}")


def _finish_selections(session: Session, period: Period, *, actor: Actor,
                       clock: Clock) -> None:
    """Selections whose cases all closed (some lapsed) are finished, their notices closed."""
    from service.commendation import finish_if_decided

    for selection_row in session.scalars(sa.select(Commendation).where(
            Commendation.period_id == period.id, Commendation.status != "decided")):
        finish_if_decided(session, selection_row, actor=actor, clock=clock)


def roll_over(session: Session, period_code: str, *, actor: Actor, clock: Clock) -> RolloverReport:
    """Close an ended period (unfinished cases lapse) and open the next. Idempotent."""
    period = get_period(session, period_code, lock=True)
    if clock.now() < end_of_day(period.ends_on):
        raise TransitionRefused("the period has not ended", [
            Reason("period_not_ended", f"period {period.code} runs until {period.ends_on}")])
    lapsed = 0
    closed_code = None
    if period.status != "closed":
        lapsed = len(engine.lapse_cases(session, period=period, actor=actor, clock=clock))
        closed_code = period.code
        _finish_selections(session, period, actor=actor, clock=clock)
        period.status = "closed"
        history.append(session, history.EventDraft(
            action="close_period", actor=actor, occurred_at=clock.now(), period_id=period.id,
            payload={"period": period.code, "lapsed": lapsed}))
    following = session.scalars(sa.select(Period).where(Period.sequence == period.sequence + 1)
                                .with_for_update()).first()
    opened = 0
    if following is not None and following.status == "planned":
        opened = open_period(session, following, actor=actor, clock=clock,
                             carry_over_from=period)
    return RolloverReport(closed_code, lapsed,
                          following.code if following is not None and opened else None, opened)
