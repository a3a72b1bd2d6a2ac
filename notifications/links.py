"""Action links: single-use capabilities to act on one case from an email.

A token is 256 random bits, shown only in the email; the database keeps its SHA-256. A link is
bound to its recipient, case, action and the case version the email was about, expires, and
works once. Issuing a new link for the same (recipient, case, action) supersedes older unused
ones. Links are minted when the email is *sent*, so the raw token never sits in the outbox.
URLs are built from the configured base URL only, never from a request's Host header.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from models import ActionLink, Case, Person
from service import history
from service.workflow.roles import Actor

__all__ = ["Mint", "issue_many", "resolve", "LinkState", "EXPIRY", "expiry_table", "LINK_LABELS",
           "token_hash", "link_url"]

# How long a link works, per action (the campaign's windows are days to weeks).
EXPIRY: dict[str, timedelta] = {
    "approve": timedelta(days=14), "return": timedelta(days=14),
    "cast_ballot": timedelta(days=30), "record_review": timedelta(days=30),
    "acknowledge_review": timedelta(days=30), "submit": timedelta(days=14),
}
DEFAULT_EXPIRY = timedelta(days=14)
LINK_LABELS: dict[str, tuple[str, str]] = {
    "approve": ("批准承诺", "Approve the pledge"),
    "return": ("退回修改", "Return for revision"),
    "cast_ballot": ("填写测评票", "Cast your ballot"),
    "record_review": ("填写点评", "Write the review"),
    "acknowledge_review": ("确认点评并提交整改计划", "Acknowledge with a rectification plan"),
    "submit": ("提交承诺", "Submit the pledge"),
}


def expiry_table(overrides_days: Mapping[str, float] | None = None) -> dict[str, timedelta]:
    """How long each kind of link works: the defaults, with ``overrides_days`` (days per
    kind, from ``PLEDGEFLOW_LINK_EXPIRY_DAYS``) over them."""
    return {**EXPIRY, **{kind: timedelta(days=days)
                         for kind, days in (overrides_days or {}).items()}}


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def link_url(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}/a/{token}"


@dataclass(frozen=True)
class Mint:
    """An action link put into an email: stored (as the token's hash) by ``issue_many`` once
    the email has rendered, so a link of an email that could not be built never exists."""

    notification_id: int | None
    recipient_id: int
    case_id: int
    action: str
    case_version: int | None
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))


def issue_many(session: Session, mints: Sequence[Mint], *, now: datetime,
               expiry: Mapping[str, timedelta] = EXPIRY,
               period_of: Mapping[int, int | None] | None = None) -> None:
    """Store the links, set-based: older unused links for the same (recipient, case, action)
    are superseded, and so is each link here that a later one replaces; every link gets its
    ``link_issued`` event, in order, in one chain append. ``period_of`` (case id → period)
    spares a query when the caller has the cases at hand."""
    if not mints:
        return
    purposes = {(m.recipient_id, m.case_id, m.action) for m in mints}
    # Unused links of these recipients on these cases, narrowed to the purposes here: far
    # fewer parameters than a tuple IN of three a link, which psycopg parses slowly.
    older = [link_id for link_id, *purpose in session.execute(
        sa.select(ActionLink.id, ActionLink.recipient_person_id, ActionLink.case_id,
                  ActionLink.action).where(
            ActionLink.case_id.in_(sorted({m.case_id for m in mints})),
            ActionLink.recipient_person_id.in_(sorted({m.recipient_id for m in mints})),
            ActionLink.used_at.is_(None), ActionLink.superseded_at.is_(None)))
        if tuple(purpose) in purposes]
    if older:
        session.execute(sa.update(ActionLink).where(ActionLink.id.in_(older))
                        .values(superseded_at=now).execution_options(synchronize_session=False))
    if period_of is None:
        period_of = dict(session.execute(sa.select(Case.id, Case.period_id).where(
            Case.id.in_(sorted({m.case_id for m in mints})))).all())
    latest = {(m.recipient_id, m.case_id, m.action): i for i, m in enumerate(mints)}
    link_ids = session.scalars(
        sa.insert(ActionLink).returning(ActionLink.id, sort_by_parameter_order=True)
        # pages short enough for psycopg to cache the statement's parsing: one page of 300
        # rows spends more CPU splitting its 2,700 placeholders than PostgreSQL does
        .execution_options(insertmanyvalues_page_size=4),
        [{"token_hash": token_hash(m.token), "recipient_person_id": m.recipient_id,
          "case_id": m.case_id, "action": m.action, "case_version": m.case_version,
          "notification_id": m.notification_id, "created_at": now,
          "expires_at": now + expiry.get(m.action, DEFAULT_EXPIRY),
          "superseded_at": None if latest[(m.recipient_id, m.case_id, m.action)] == i else now}
         for i, m in enumerate(mints)]).all()
    actor = Actor(flow="notifications")
    history.append_many(session, [history.EventDraft(
        action="link_issued", actor=actor, occurred_at=now, case_id=m.case_id,
        period_id=period_of.get(m.case_id),
        payload={"link_id": link_id, "link_action": m.action, "recipient_id": m.recipient_id})
        for m, link_id in zip(mints, link_ids, strict=True)])


@dataclass(frozen=True)
class LinkState:
    """What a link is and whether it can still be used — for the confirmation page."""

    link: ActionLink | None
    case: Case | None
    recipient: Person | None
    problem: str | None  # None, or: unknown | used | expired | superseded | stale
    since: datetime | None = None

    @property
    def usable(self) -> bool:
        return self.problem is None


def resolve(session: Session, token: str, now: datetime, *, lock: bool = False) -> LinkState:
    """Find a link by its token and say whether it can be used now (and if not, why, since)."""
    query = sa.select(ActionLink).where(ActionLink.token_hash == token_hash(token))
    link = session.scalars(query.with_for_update() if lock else query).first()
    if link is None:
        return LinkState(None, None, None, "unknown")
    case = session.get(Case, link.case_id)
    recipient = session.get(Person, link.recipient_person_id)
    if link.used_at is not None:
        return LinkState(link, case, recipient, "used", link.used_at)
    if link.superseded_at is not None:
        return LinkState(link, case, recipient, "superseded", link.superseded_at)
    if now >= link.expires_at:
        return LinkState(link, case, recipient, "expired", link.expires_at)
    if case is not None and link.case_version is not None and case.version != link.case_version \
            and link.action != "cast_ballot":
        return LinkState(link, case, recipient, "stale", case.updated_at)
    return LinkState(link, case, recipient, None)
