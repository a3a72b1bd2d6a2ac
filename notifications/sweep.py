"""Re-drive the outbox: rows stuck in ``sending`` past their lease, and — on request — dead ones.

A dispatcher that died mid-pass leaves its claimed rows in ``sending`` with a lease
(``next_attempt_at``) in the past; the dispatcher would take them again on its own, and the
sweep makes that explicit and countable. Dead rows (out of attempts, or refused by the mail
server) are only re-driven when asked (``dead=True``), with a fresh attempt budget; their last
error is kept. Each row keeps its Message-ID, so a re-sent email is recognisable as the same one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from models import Notification

__all__ = ["SweepReport", "sweep"]


@dataclass(frozen=True)
class SweepReport:
    """Rows put back in the queue, and how many are now due."""

    stuck_requeued: int
    dead_requeued: int
    pending_due: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def sweep(session: Session, *, now: datetime, dead: bool = False) -> SweepReport:
    """Put stuck (and, with ``dead``, dead) rows back to ``pending``, due now."""
    stuck = session.execute(
        sa.update(Notification)
        .where(Notification.status == "sending", Notification.next_attempt_at <= now)
        .values(status="pending", next_attempt_at=now)).rowcount or 0
    revived = 0
    if dead:
        revived = session.execute(
            sa.update(Notification).where(Notification.status == "dead")
            .values(status="pending", attempts=0, next_attempt_at=now)).rowcount or 0
    due = session.scalar(sa.select(sa.func.count()).select_from(Notification).where(
        Notification.status == "pending", Notification.next_attempt_at <= now)) or 0
    return SweepReport(stuck, revived, due)
