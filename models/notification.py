"""The notification outbox and single-use action links.

Rows are written in the same transaction as the transition that causes them; a dispatcher
delivers them after commit (``notifications/``). An action link's token is never stored,
only its SHA-256.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, IntPK, utcnow

__all__ = ["Notification", "ActionLink", "NOTIFICATION_STATUSES"]

NOTIFICATION_STATUSES = ("pending", "sending", "sent", "dead", "dropped")


class Notification(IntPK, Base):
    """One email to send: recipient, template, its context, and delivery attempts."""

    __tablename__ = "notification"
    __table_args__ = (
        sa.CheckConstraint(f"status IN {NOTIFICATION_STATUSES!r}", name="status"),
        sa.Index("ix_notification_due", "status", "next_attempt_at"),
        # Reminders are batched per recipient per day: at most one row per batch key.
        sa.UniqueConstraint("batch_key"),
    )

    recipient_person_id: Mapped[int | None] = mapped_column(sa.ForeignKey("person.id"))
    recipient_email: Mapped[str] = mapped_column(sa.String(254))
    lang: Mapped[str] = mapped_column(sa.String(8), default="zh")
    template: Mapped[str] = mapped_column(sa.String(64))
    context: Mapped[dict[str, Any]] = mapped_column(default=dict)
    case_id: Mapped[int | None] = mapped_column(sa.ForeignKey("case.id"), index=True)
    case_version: Mapped[int | None]
    batch_key: Mapped[str | None] = mapped_column(sa.String(200))
    status: Mapped[str] = mapped_column(sa.String(16), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    message_id: Mapped[str] = mapped_column(sa.String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]


class ActionLink(IntPK, Base):
    """A single-use capability to perform one action on one case from an email."""

    __tablename__ = "action_link"

    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    recipient_person_id: Mapped[int] = mapped_column(sa.ForeignKey("person.id"), index=True)
    case_id: Mapped[int] = mapped_column(sa.ForeignKey("case.id"), index=True)
    action: Mapped[str] = mapped_column(sa.String(40))
    case_version: Mapped[int | None]
    notification_id: Mapped[int | None] = mapped_column(sa.ForeignKey("notification.id"))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    opened_at: Mapped[datetime | None]
    used_at: Mapped[datetime | None]
    superseded_at: Mapped[datetime | None]
