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
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from models import ActionLink, Case, Person
from service import history
from service.workflow.roles import Actor

__all__ = ["issue", "resolve", "LinkState", "EXPIRY", "LINK_LABELS", "token_hash", "link_url"]

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


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def link_url(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}/a/{token}"


def issue(session: Session, *, recipient_id: int, case_id: int, action: str,
          case_version: int | None, now: datetime, notification_id: int | None = None,
          ttl: timedelta | None = None) -> str:
    """Mint a link (superseding older unused ones for the same purpose); returns the token."""
    session.execute(sa.update(ActionLink).where(
        ActionLink.recipient_person_id == recipient_id, ActionLink.case_id == case_id,
        ActionLink.action == action, ActionLink.used_at.is_(None),
        ActionLink.superseded_at.is_(None)).values(superseded_at=now))
    token = secrets.token_urlsafe(32)
    link = ActionLink(token_hash=token_hash(token), recipient_person_id=recipient_id,
                      case_id=case_id, action=action, case_version=case_version,
                      notification_id=notification_id, created_at=now,
                      expires_at=now + (ttl or EXPIRY.get(action, DEFAULT_EXPIRY)))
    session.add(link)
    session.flush()
    case = session.get(Case, case_id)
    history.append(session, history.EventDraft(
        action="link_issued", actor=Actor(flow="notifications"), occurred_at=now,
        case_id=case_id, period_id=case.period_id if case else None,
        payload={"link_id": link.id, "link_action": action, "recipient_id": recipient_id}))
    return token


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
