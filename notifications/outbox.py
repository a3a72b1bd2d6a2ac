"""The outbox: notification rows written in the transition's own transaction.

Nothing is sent here. A row committed with its transition is delivered by the dispatcher after
commit; a rolled-back transition leaves no row, so nobody is told of a change that did not
happen. Each row gets its Message-ID now, so a re-send is recognisable as the same message.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from models import Notification, Person
from service import directory, history

if TYPE_CHECKING:
    from service.workflow.context import Context

__all__ = ["enqueue", "enqueue_for_case", "enqueue_batched", "case_context", "new_message_id",
           "Recipient"]


def new_message_id() -> str:
    """A globally unique, stable Message-ID for one notification."""
    return f"<{uuid.uuid4().hex}@pledgeflow>"


class Recipient(Protocol):
    """Whom an email goes to: a ``Person``, or a row of ``select(Person.id, .email, .lang)``
    (what a period-wide email to 200,000 people should load instead of Person objects)."""

    @property
    def id(self) -> int: ...
    @property
    def email(self) -> str | None: ...
    @property
    def lang(self) -> str: ...


_INSERT_NOTIFICATIONS = sa.insert(Notification)


def enqueue(session: Session, people: Iterable[Recipient], *, template: str,
            context: dict[str, Any], now: datetime, case_id: int | None = None,
            case_version: int | None = None, batch_key: str | None = None) -> int:
    """Queue one email per person with an address, due at ``now`` (the workflow's clock);
    returns how many rows were written (set-based: COPY for many on PostgreSQL)."""
    reachable = [p for p in people if p.email]
    history.insert_rows(session, _INSERT_NOTIFICATIONS, (dict(
        recipient_person_id=p.id, recipient_email=p.email, lang=p.lang, template=template,
        context=context, case_id=case_id, case_version=case_version,
        message_id=new_message_id(), batch_key=f"{batch_key}:{p.id}" if batch_key else None,
        created_at=now, next_attempt_at=now) for p in reachable), count=len(reachable))
    return len(reachable)


def case_context(ctx: Context) -> dict[str, Any]:
    """The facts every email about a case names: unit, member, period, stage, deadline."""
    case, period, org = ctx.case, ctx.period, ctx.case_org
    subject_person = ctx.session.get(Person, case.person_id) if case.person_id else None
    return {
        "action": ctx.action, "case_id": case.id, "stage": case.stage, "status": case.status,
        "unit_zh": org.name_zh, "unit_en": org.name_en,
        "subject_name": subject_person.name if subject_person else org.name_zh,
        "period_zh": period.name_zh, "period_en": period.name_en,
        "due_at": case.due_at.isoformat() if case.due_at else None,
        "comment": ctx.comment,
    }


def enqueue_for_case(ctx: Context, *, template: str, audience: str) -> int:
    """Queue a template for an audience of the case, with the facts every email names."""
    case, org = ctx.case, ctx.case_org
    context = case_context(ctx)
    round_id = ctx.round.id if audience == "evaluators" and ctx.round else None
    people = directory.audience(ctx.session, audience, case, org, round_id=round_id)
    people = [p for p in people if p.id != ctx.actor.person_id]  # nobody is told of their own act
    return enqueue(ctx.session, people, template=template, context=context, now=ctx.now,
                   case_id=case.id, case_version=case.version)


def enqueue_batched(session: Session, person: Person, *, template: str, day: date,
                    item: dict[str, Any], now: datetime) -> bool:
    """Add one case to the person's ``template`` email of ``day`` (reminder, escalation).

    One row per (template, day, person): 200 overdue cases make one email listing 200 items.
    An item already listed (same case id) is not added twice; once the day's email has gone,
    later items wait for the next day's. Returns True when the item was added."""
    if not person.email:
        return False
    key = f"{template}:{day.isoformat()}:{person.id}"
    insert = (postgresql.insert if session.get_bind().dialect.name == "postgresql"
              else sqlite.insert)(Notification)
    session.execute(insert.values(
        recipient_person_id=person.id, recipient_email=person.email, lang=person.lang,
        template=template, context={"items": []}, message_id=new_message_id(), batch_key=key,
        status="pending", attempts=0, created_at=now, next_attempt_at=now,
    ).on_conflict_do_nothing(index_elements=["batch_key"]))
    row = session.scalars(sa.select(Notification).where(Notification.batch_key == key)
                          .with_for_update()).one()
    items = list(row.context.get("items", []))
    # Once an attempt was made the message (and its Message-ID) may already be out: a re-send
    # must carry the same content, so later items wait for the next day's email.
    if row.status != "pending" or row.attempts > 0 or any(
            i.get("case_id") == item.get("case_id") for i in items):
        return False
    row.context = {**row.context, "items": [*items, item]}
    return True
